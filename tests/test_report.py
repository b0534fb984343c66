"""Tests of bench.report on synthetic run records written into tmp_path.

Expected numbers are computed here with pandas straight from the JSON files, independently of
the report's own loading and aggregation code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bench.report as report
from bench.report import comparison as cmp
from bench.report.tables import fmt_count

REPO = Path(__file__).resolve().parents[1]
BACKBONE = 1_000_000
SEED_OFFSETS = (-0.01, 0.0, 0.01)  # symmetric, so the seed mean equals the base score
HISTORY_FRACTIONS = (0.5, 0.8, 0.97, 1.02, 1.0)  # last = final score; 4th = best
HISTORY_STEPS = (10, 20, 30, 40, 50)

# --- record factory ------------------------------------------------------------------------


def make_record(
    method: str,
    model: str,
    task: str,
    seed: int,
    score: float,
    *,
    status: str = "ok",
    primary: str = "accuracy",
    trainable: int = 1000,
    stored: int | None = None,
    head: int = 100,
    tokens_per_s: float = 1000.0,
    step_time_s: float = 0.01,
    train_time_s: float = 10.0,
    peak_memory_bytes: int = 2**28,
    history_time_s: bool = False,
    error: str | None = None,
    final: dict | None = None,
    test: float | None | str = "final",
    converged: bool | None = True,
    collapsed: bool = False,
    hparams: dict | None = None,
) -> dict:
    """A schema-1 record (DESIGN.md) whose validation history ends at ``score``; its test score is
    ``score`` by default (``test=None``: no test split); ``converged=None``: no diagnostics."""
    history = []
    for step, fraction in zip(HISTORY_STEPS, HISTORY_FRACTIONS):
        entry = {"step": step, "epoch": step / 50, "split": "validation", primary: score * fraction}
        if history_time_s:
            entry["time_s"] = step * 0.3
        history.append(entry)
    history.insert(1, {"step": 15, "epoch": 0.3, "split": "train", "loss": 0.5})  # must be ignored
    best = max(h[primary] for h in history if h["split"] == "validation")
    diagnostics = (
        {}
        if converged is None
        else {
            "diagnostics": {
                "converged": converged,
                "converged_reason": "plateau" if converged else "still rising",
                "collapsed": collapsed,
                "exploded": False,
            }
        }
    )
    return {
        **diagnostics,
        **({"hparams": hparams} if hparams is not None else {}),
        "schema": 1,
        "status": status,
        "error": error,
        "method": method,
        "model": model,
        "task": task,
        "seed": seed,
        "metrics": {
            "primary": primary,
            "final": {primary: score} if final is None else final,
            "best": {primary: best},
            "best_step": 40,
            "history": history,
            "test": None if test is None else {primary: score if test == "final" else test},
            "data": {"train": 100, "validation": 50, "test": 0, "truncated": 0},
        },
        "params": {
            "trainable": trainable,
            "stored": trainable if stored is None else stored,
            "head": head,
            "backbone": BACKBONE,
            "trainable_percent": 100 * trainable / BACKBONE,
        },
        "throughput": {
            "train_tokens_per_s": tokens_per_s,
            "train_samples_per_s": tokens_per_s / 50,
            "step_time_s_median": step_time_s,
            "eval_tokens_per_s": 2 * tokens_per_s,
            "generation_tokens_per_s": None,
            "train_time_s": train_time_s,
            "eval_time_s": 1.0,
            "peak_memory_bytes": peak_memory_bytes,
        },
        "provenance": {
            "git_sha": "0" * 40,
            "git_dirty": False,
            "versions": {"torch": "x"},
            "device": "cpu",
            "dtype": "float32",
            "config": {"trainer": {"max_steps": 50}},
            "overrides": [],
            "config_hash": "abc",
            "base_weights_sha256": {"before": "a", "after": "a"},
        },
    }


def write_record(runs: Path, record: dict) -> Path:
    point = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted((record.get("hparams") or {}).items()))
    path = runs / record["method"] / record["model"] / record["task"] / point / f"seed={record['seed']}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


# Base scores chosen away from every label threshold (see the comparison assertions).
SCORES = {  # (model, task) -> method -> base score
    ("tiny_bert", "rte"): {
        "prompt_tuning": 0.66,
        "prefix_tuning": 0.72,
        "p_tuning_v2": 0.795,
        "lora": 0.76,
        "head_only": 0.60,
        "full_finetune": 0.80,
    },
    ("tiny_bert", "cb"): {
        "prompt_tuning": 0.68,
        "prefix_tuning": 0.66,
        "p_tuning_v2": 0.795,  # prefix < prompt
        "lora": 0.76,
        "head_only": 0.60,
        "full_finetune": 0.80,
    },
    ("tiny_gpt2", "rte"): {"prompt_tuning": 0.55, "head_only": 0.50},  # no full_finetune runs
}
PARAMS = {
    "prompt_tuning": (600, None),
    "prefix_tuning": (5000, 2000),
    "p_tuning_v2": (50_000, 20_000),
    "lora": (9000, None),
    "head_only": (100, None),
    "full_finetune": (BACKBONE + 100, None),
}
SPEED = {
    "prompt_tuning": 900.0,
    "prefix_tuning": 800.0,
    "p_tuning_v2": 700.0,
    "lora": 850.0,
    "head_only": 1200.0,
    "full_finetune": 400.0,
}


def build_runs(runs: Path) -> None:
    """3 seeds per cell plus one failed, one diverged and one ok-without-score record."""
    for (model, task), methods in SCORES.items():
        for method, base in methods.items():
            trainable, stored = PARAMS[method]
            for seed, offset in enumerate(SEED_OFFSETS):
                write_record(
                    runs,
                    make_record(
                        method,
                        model,
                        task,
                        seed,
                        base + offset,
                        primary="f1" if task == "cb" else "accuracy",
                        trainable=trainable,
                        stored=stored,
                        tokens_per_s=SPEED[method] + 10 * seed,
                        step_time_s=0.01 + 0.001 * seed,
                        train_time_s=10.0 + seed,
                        history_time_s=method == "lora",
                        peak_memory_bytes=2**28 + seed * 2**20,
                    ),
                )
    write_record(
        runs,
        make_record(
            "prefix_tuning",
            "tiny_bert",
            "rte",
            3,
            0.99,
            status="failed",
            error="RuntimeError: CUDA out of memory",
            trainable=5000,
        ),
    )
    write_record(
        runs,
        make_record(
            "p_tuning_v2",
            "tiny_bert",
            "cb",
            3,
            0.01,
            status="diverged",
            primary="f1",
            error="loss is NaN at step 12",
            trainable=50_000,
        ),
    )
    write_record(runs, make_record("lora", "tiny_bert", "rte", 3, 0.7, final={}, trainable=9000))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "sweep"
    build_runs(path)
    return path


@pytest.fixture(scope="module")
def df(runs) -> pd.DataFrame:
    return report.load_records(runs)


@pytest.fixture(scope="module")
def raw(runs) -> pd.DataFrame:
    """The records read here with json + pandas only: the independent reference."""
    rows = []
    for path in sorted(runs.glob("**/result.json")):
        rec = json.loads(path.read_text())
        primary = rec["metrics"]["primary"]
        rows.append(
            {
                "method": rec["method"],
                "model": rec["model"],
                "task": rec["task"],
                "seed": rec["seed"],
                "status": rec["status"],
                "final": rec["metrics"]["final"].get(primary, np.nan),
                "best": rec["metrics"]["best"].get(primary, np.nan),
                "rec": rec,
                **{f"p_{k}": v for k, v in rec["params"].items()},
                **rec["throughput"],
            }
        )
    frame = pd.DataFrame(rows)
    frame["ok"] = (frame["status"] == "ok") & frame["final"].notna()
    return frame


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory) -> report.ReportPaths:
    return report.write_report(runs, tmp_path_factory.mktemp("out") / "report")


def test_factory_records_follow_the_schema(runs):
    record = pytest.importorskip("bench.record")  # the lead's validator, when present
    for path in runs.glob("**/result.json"):
        assert record.validate_record(json.loads(path.read_text())) == [], path


# --- loading ---------------------------------------------------------------------------------


def test_load_records_keeps_every_record_flat(df, raw):
    assert len(df) == len(raw) == 3 * 14 + 3
    assert {
        "metrics.final.accuracy",
        "params.trainable",
        "throughput.train_tokens_per_s",
        "provenance.versions.torch",
    } <= set(df.columns)
    assert df["status"].value_counts().to_dict() == {"ok": 43, "failed": 1, "diverged": 1}
    assert int(df["usable"].sum()) == int(raw["ok"].sum()) == 42
    invalid = df[(df["status"] == "ok") & ~df["usable"]]
    assert list(invalid["problem"]) == ["status ok but no finite final accuracy"]


def expected_time_to_95(rec: dict) -> float:
    m = rec["metrics"]
    primary = m["primary"]
    val = [h for h in m["history"] if h.get("split") == "validation"]
    target = 0.95 * m["best"][primary]
    first = next(h for h in sorted(val, key=lambda h: h["step"]) if h[primary] >= target)
    if "time_s" in first:
        return first["time_s"]
    return rec["throughput"]["train_time_s"] * first["step"] / max(h["step"] for h in m["history"])


def test_time_to_95_from_history_and_time_s(df, raw):
    ok = raw[raw["ok"]]
    expected = {(r.method, r.model, r.task, r.seed): expected_time_to_95(r.rec) for r in ok.itertuples()}
    got = df[df["usable"]].set_index(["method", "model", "task", "seed"])["time_to_95_s"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)
    assert got[("lora", "tiny_bert", "rte", 0)] == pytest.approx(30 * 0.3)  # time_s field wins
    assert got[("prompt_tuning", "tiny_bert", "rte", 1)] == pytest.approx(11.0 * 30 / 50)


# --- main table --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["final", "best"])
def test_main_table_numbers_match_pandas(df, raw, variant):
    ok = raw[raw["ok"]]
    expected = ok.groupby(["method", "model", "task"])[variant].agg(["mean", "std", "count"])
    stats = report.main_stats(df, variant).set_index(["method", "model", "task"])
    assert set(stats.index) == set(expected.index)
    for key, row in expected.iterrows():
        assert stats.loc[key, "mean"] == pytest.approx(row["mean"])
        assert stats.loc[key, "std"] == pytest.approx(row["std"])
        assert stats.loc[key, "n"] == row["count"] == 3
    table = report.main_table(df, variant).set_index(["Method", "Model"])
    for (method, model, task), row in expected.iterrows():
        column = f"{task} ({'f1' if task == 'cb' else 'accuracy'})"
        text = (
            f"{row['mean'] * 100:.1f}** ± {row['std'] * 100:.1f}"
            if "**" in table.loc[(method, model), column]
            else f"{row['mean'] * 100:.1f} ± {row['std'] * 100:.1f}"
        )
        assert text in table.loc[(method, model), column]


def test_main_table_marks_best_counts_failures_and_averages(df, raw):
    table = report.main_table(df).set_index(["Method", "Model"])
    assert list(table.columns) == ["cb (f1)", "rte (accuracy)", "Average"]
    bold = {(m, c) for (m, _), row in table.iterrows() for c, v in row.items() if "**" in v}
    best = raw[raw["ok"]].groupby(["model", "task", "method"])["final"].mean()
    for (_model, task), group in best.groupby(level=[0, 1]):
        winner = group.idxmax()[2]
        column = f"{task} ({'f1' if task == 'cb' else 'accuracy'})"
        assert (winner, column) in bold
    assert table.loc[("prefix_tuning", "tiny_bert"), "rte (accuracy)"].endswith("(n=3; 1 failed)")
    assert table.loc[("p_tuning_v2", "tiny_bert"), "cb (f1)"].endswith("(n=3; 1 diverged)")  # not averaged in
    assert table.loc[("lora", "tiny_bert"), "rte (accuracy)"].endswith("(n=3; 1 invalid)")  # ok without score
    avg = (
        raw[raw["ok"] & (raw["model"] == "tiny_bert")]
        .groupby(["method", "task"])["final"]
        .mean()
        .groupby("method")
        .mean()
    )
    for method, value in avg.items():
        assert table.loc[(method, "tiny_bert"), "Average"].replace("*", "").startswith(f"{value * 100:.1f} (2 tasks)")
    assert table.loc[("prompt_tuning", "tiny_gpt2"), "cb (f1)"] == ""


# --- cost table ----------------------------------------------------------------------------------


def test_cost_table_numbers_match_pandas(df, raw):
    ok = raw[raw["ok"]].copy()
    ok["t95"] = [expected_time_to_95(r) for r in ok["rec"]]
    ok["pct"] = 100 * ok["p_trainable"] / ok["p_backbone"]
    groups = ok.groupby(["method", "model"])
    data = report.cost_data(df).set_index(["method", "model"])
    assert set(data.index) == set(groups.groups)
    checks = {
        "trainable": groups["p_trainable"].median(),
        "stored": groups["p_stored"].median(),
        "head": groups["p_head"].median(),
        "trainable_pct": groups["pct"].median(),
        "tokens_per_s_mean": groups["train_tokens_per_s"].mean(),
        "tokens_per_s_std": groups["train_tokens_per_s"].std(),
        "step_time_s_mean": groups["step_time_s_median"].mean(),
        "peak_memory_bytes": groups["peak_memory_bytes"].max(),
        "time_to_95_s_mean": groups["t95"].mean(),
        "time_to_95_s_std": groups["t95"].std(),
        "train_time_s_mean": groups["train_time_s"].mean(),
        "runs": groups.size(),
    }
    for column, expected in checks.items():
        for key, value in expected.items():
            assert data.loc[key, column] == pytest.approx(value), (column, key)
    table = report.cost_table(df).set_index(["Method", "Model"])
    row = table.loc[("prefix_tuning", "tiny_bert")]
    assert row["Trainable params"] == "5.0K (0.50 %)" and row["Stored params"] == "2.0K (0.20 %)"
    tps = groups["train_tokens_per_s"]
    assert (
        row["Train tokens/s"] == f"{tps.mean()[('prefix_tuning', 'tiny_bert')]:,.0f} ± "
        f"{tps.std()[('prefix_tuning', 'tiny_bert')]:,.0f}"
    )
    assert row["Peak memory (MiB)"] == "258"
    t95 = groups["t95"]
    assert (
        row["Time to 95% of best (s)"] == f"{t95.mean()[('prefix_tuning', 'tiny_bert')]:.1f} ± "
        f"{t95.std()[('prefix_tuning', 'tiny_bert')]:.1f}"
    )


# --- comparison table ----------------------------------------------------------------------------


def expected_quality(score: float, full: float, head: float) -> str:
    """The documented thresholds, restated independently of the implementation."""
    if (full - score) * 100 <= cmp.QUALITY_NEAR_FULL_POINTS:
        return "≈ full FT"
    r = (score - head) / (full - head)
    for bound, label in (
        (cmp.QUALITY_NEAR_FULL_R, "≈ full FT"),
        (cmp.QUALITY_HIGH_R, "high"),
        (cmp.QUALITY_MEDIUM_R, "medium"),
        (0.0, "low"),
    ):
        if r >= bound:
            return label
    return "below head-only"


def expected_volume(pct: float) -> str:
    for bound, label in (
        (cmp.VOLUME_TINY_PCT, "tiny"),
        (cmp.VOLUME_SMALL_PCT, "small"),
        (cmp.VOLUME_MEDIUM_PCT, "medium"),
    ):
        if pct < bound:
            return label
    return "full"


def test_comparison_labels_follow_thresholds(df, raw):
    import methods

    declared = methods.declarations()
    table = report.comparison_table(df).set_index(["Method", "Model"])
    assert list(table.columns) == [
        "Input influence",
        "Attention influence",
        "Uses MLP",
        "Quality",
        "Parameter volume",
        "Claim check",
    ]
    means = raw[raw["ok"] & (raw["model"] == "tiny_bert")].groupby(["method", "task"])["final"].mean().unstack()
    avg = means.mean(axis=1)
    labels = {}
    for method, score in avg.items():
        label = expected_quality(score, avg["full_finetune"], avg["head_only"])
        labels[method] = label
        assert table.loc[(method, "tiny_bert"), "Quality"].startswith(label + ":"), method
        trainable, stored = PARAMS[method]
        pct = 100 * (trainable if stored is None else stored) / BACKBONE  # the label reads the stored axis
        volume = table.loc[(method, "tiny_bert"), "Parameter volume"]
        assert volume.startswith(expected_volume(pct) + " by stored: "), volume
        assert f"{fmt_count(trainable)} trainable, MLP included" in volume  # both counts, the axis named
        assert f"{fmt_count(trainable if stored is None else stored)} stored, MLP folded" in volume
        flags = declared[method]
        assert table.loc[(method, "tiny_bert"), "Uses MLP"].startswith("yes" if flags["reparameterized"] else "no")
        assert table.loc[(method, "tiny_bert"), "Input influence"].startswith(
            "yes" if flags["input_tokens"] or flags["trains_backbone"] else "no"
        )
        assert table.loc[(method, "tiny_bert"), "Attention influence"].startswith(
            "yes"
            if flags["attention_prefix"] or flags["trains_backbone"] or flags.get("attention_weights")
            else "indirect"
            if flags["input_tokens"]
            else "no"
        )
    # the fixture was built so every label appears
    assert {labels[m] for m in ("p_tuning_v2", "lora", "prefix_tuning", "prompt_tuning")} == {
        "≈ full FT",
        "high",
        "medium",
        "low",
    }
    r = (avg["lora"] - avg["head_only"]) / (avg["full_finetune"] - avg["head_only"])
    assert f"r = {r:.2f}" in table.loc[("lora", "tiny_bert"), "Quality"]
    assert table.loc[("prompt_tuning", "tiny_gpt2"), "Quality"].startswith("n/a (no full_finetune runs)")


@pytest.mark.parametrize(
    "score, full, head, label",
    [
        (0.70, 0.80, 0.72, "below head-only"),  # r = -0.25
        (0.795, 0.80, 0.72, "≈ full FT"),  # within 1 point of full FT
        (0.92, 0.95, 0.30, "≈ full FT"),  # 3 points below, but r = 0.954
        (0.86, 0.90, 0.70, "high"),  # r = 0.8
        (0.62, 0.90, 0.40, "medium"),  # r = 0.44
        (0.75, 0.90, 0.72, "low"),  # r = 0.17
    ],
)
def test_quality_label_edges(score, full, head, label):
    assert cmp.quality_label(score, full, head) == expected_quality(score, full, head) == label
    assert cmp.quality_label(0.6, math.nan, 0.5) == "n/a (no full_finetune runs)"
    assert cmp.quality_label(0.6, 0.8, math.nan) == "n/a (no head_only runs)"
    assert cmp.volume_label(0.09) == "tiny" and cmp.volume_label(0.1) == "small" and cmp.volume_label(10) == "full"


def test_claim_check_shows_violations(df, raw):
    claims = report.claim_check_table(df).set_index(["Model", "Task"])
    cb = claims.loc[("tiny_bert", "cb")]
    assert cb["prompt_tuning < prefix_tuning"].startswith("violated (Δ -2.0")
    assert cb["prefix_tuning < p_tuning_v2"].startswith("holds")
    assert cb["p_tuning_v2 ≈ full_finetune"].startswith("holds (gap 0.5 ± ")
    assert cb["Claim"] == "violated: prompt_tuning < prefix_tuning"
    assert claims.loc[("tiny_bert", "rte"), "Claim"] == "holds"
    assert claims.loc[("tiny_gpt2", "rte"), "prefix_tuning < p_tuning_v2"].startswith("n/a (no prefix_tuning")
    row = report.comparison_table(df).set_index(["Method", "Model"]).loc[("prefix_tuning", "tiny_bert")]
    assert "prompt_tuning < prefix_tuning: holds on 1/2 tasks (violated: cb)" in row["Claim check"]


# --- failures -------------------------------------------------------------------------------------


def test_failures_listed_and_counted(df):
    failures = report.failures_table(df)
    assert sorted(failures["Status"]) == ["diverged", "failed", "invalid"]
    assert "CUDA out of memory" in failures.set_index("Status").loc["failed", "Reason"]
    counts = report.run_counts(df).set_index(["Method", "Model"])
    assert counts.loc[("prefix_tuning", "tiny_bert"), ["used", "failed", "total"]].tolist() == [6, 1, 7]
    assert counts.loc[("p_tuning_v2", "tiny_bert"), "diverged"] == 1
    assert counts.loc[("lora", "tiny_bert"), "invalid"] == 1


# --- files, figures, CLI, notebook ---------------------------------------------------------------


def test_write_report_writes_every_table_and_figure(written):
    for name, files in written.tables.items():
        for kind in ("csv", "md", "tex"):
            assert files[kind].stat().st_size > 0, (name, kind)
    assert "\\textbf{" in written.tables["main_final"]["tex"].read_text()
    names = {p.name for p in written.figures}
    assert names == {f"{n}.{ext}" for n in report.FIGURE_NAMES for ext in ("png", "pdf")}
    for path in written.figures:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path
        assert path.stat().st_size > 1000
        assert b"/CreationDate" not in path.read_bytes()  # else every regeneration rewrites committed PDFs
    data = pd.read_csv(written.tables["main_final"]["data"])
    assert len(data) == 14 and written.report.read_text().count("![") == len(report.FIGURE_NAMES)


def test_score_vs_params_offers_the_stored_axis(df):
    from bench.report.figures import score_vs_params

    def xs(fig) -> set[float]:
        return {float(x) for ax in fig.axes for line in ax.get_lines() for x in line.get_xdata()}

    trained, stored = score_vs_params(df), score_vs_params(df, "stored")
    assert {5000.0, 50_000.0} <= xs(trained) and not {2000.0, 20_000.0} & xs(trained)  # the MLP counted
    assert {2000.0, 20_000.0} <= xs(stored) and not {5000.0, 50_000.0} & xs(stored)  # the MLP folded
    assert stored.axes[0].get_xlabel() == "parameters: stored, MLP folded (count, log scale)"
    assert "score_vs_stored_params" in report.FIGURE_NAMES


def test_pareto_front():
    points = pd.DataFrame({"x": [1, 2, 3, 4, 4], "y": [0.5, 0.4, 0.7, 0.6, 0.9]})
    assert report.pareto_front(points, "x", "y").index.tolist() == [0, 2, 4]


def test_cli_errors_and_malformed_record(runs, tmp_path, capsys):
    from bench.report.__main__ import main

    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no result.json under" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(runs, copy)
    bad = copy / "lora" / "tiny_bert" / "cb" / "seed=7" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": 1, "status": ')
    assert main([str(copy), "--out", str(tmp_path / "out"), "--no-figures"]) == 2  # tables are what is checked
    captured = capsys.readouterr()
    assert str(bad) in captured.err and captured.err.count("\n") == 1
    assert "| prompt_tuning | tiny_bert |" in captured.out  # the others are still reported
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert "unreadable" in set(failures["Status"]) and "seed=7" in failures["Record"].str.cat()


def test_cli_module_prints_comparison_and_writes_to_the_named_folder(runs, tmp_path):
    """The module as a user runs it; figures are left to test_write_report_writes_every_table_and_figure and
    the notebook test (drawing them a third time here took most of this test's 20 s)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.report", str(runs), "--name", "demo", "--no-figures"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("== Comparison") < out.index("Figures:")
    assert out.rstrip().endswith("Figures: none drawn (--no-figures)")
    assert "Report: results/reports/demo/report.md" in out
    assert (tmp_path / "results/reports/demo/report.md").stat().st_size > 0
    rows = [
        line for line in (tmp_path / "results/reports/demo/comparison.md").read_text().splitlines() if line[:1] == "|"
    ]
    assert rows and all(row in out for row in rows)  # the printed table is the file's


def test_notebook_executes(runs, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SOFTPROMPT_RUNS_DIR", str(runs))
    monkeypatch.setenv("SOFTPROMPT_REPORT_OUT", str(tmp_path / "nb"))
    notebook = nbformat.read(REPO / "notebooks" / "report.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(REPO)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "Input influence" in outputs and "prompt_tuning < prefix_tuning" in outputs
    assert all((tmp_path / "nb" / "figures" / f"{n}.png").stat().st_size > 0 for n in report.FIGURE_NAMES)


def test_comparison_uses_the_declarations_a_run_recorded(tmp_path):
    """A flat-prefix run records reparameterized=False; the table shows that, not the class default."""
    import json

    import bench.report as report

    for seed in (0, 1):
        for method, score in (("prefix_tuning", 0.7), ("full_finetune", 0.9), ("head_only", 0.5)):
            path = tmp_path / method / f"seed={seed}" / "result.json"
            path.parent.mkdir(parents=True)
            record = make_record(method, "minilm", "synth_cls", seed, score)
            if method == "prefix_tuning":
                record["declarations"] = {
                    "input_tokens": False,
                    "attention_prefix": True,
                    "reparameterized": False,
                    "trains_backbone": False,
                }
            path.write_text(json.dumps(record))
    table = report.comparison_table(report.load_records(tmp_path)).set_index("Method")
    assert table.loc["prefix_tuning", "Uses MLP"] == "no"
    assert table.loc["prefix_tuning", "Attention influence"].startswith("yes")


# --- tuned selection, diagnostics marks, inconclusive claims --------------------------------------


def test_tuned_table_selects_on_validation_and_reports_test(tmp_path):
    runs = tmp_path / "grid"
    # lr=0.1 wins on validation, lr=0.01 on test: the table must pick lr=0.1 and report ITS test score
    for seed in (0, 1):
        write_record(
            runs,
            make_record(
                "prompt_tuning",
                "minilm",
                "synth_cls",
                seed,
                0.80 + seed / 100,
                test=0.60 + seed / 100,
                hparams={"trainer.lr": 0.1},
            ),
        )
        write_record(
            runs,
            make_record("prompt_tuning", "minilm", "synth_cls", seed, 0.70, test=0.90, hparams={"trainer.lr": 0.01}),
        )
    df = report.load_records(runs)
    data = report.tuned_data(df).iloc[0]
    assert (data["hparams"], data["split"], data["n"], data["candidates"]) == ("lr=0.1", "test", 2, 2)
    assert data["mean"] == pytest.approx(0.605) and data["std"] == pytest.approx(0.01 / math.sqrt(2))
    assert data["selection"] == pytest.approx(1.02 * 0.805)  # best-checkpoint validation, mean over seeds
    cell = report.main_table(df, "tuned").iloc[0]["synth_cls (accuracy; on test)"]
    assert cell == "**60.5** ± 0.7 (n=2)^ [lr=0.1; lr: highest of 2]"  # chosen at the grid edge
    every_point = report.main_table(df, "final").set_index("Hparams")
    assert every_point.loc["lr=0.01", "synth_cls (accuracy)"] == "70.0 ± 0.0 (n=2)"


def test_selection_never_reads_the_test_split(tmp_path):
    runs = tmp_path / "grid"
    for seed in (0, 1, 2):
        for lr, val in ((0.3, 0.72), (0.03, 0.75), (0.003, 0.74)):
            write_record(
                runs, make_record("prompt_tuning", "minilm", "rte", seed, val, test=0.5, hparams={"trainer.lr": lr})
            )
    df = report.load_records(runs)
    chosen = report.select_points(df)
    rng = np.random.default_rng(0)
    for _ in range(5):  # any test scores at all: the choice stays the same
        shuffled = df.assign(score_test=rng.uniform(0, 1, len(df)))
        pd.testing.assert_frame_equal(report.select_points(shuffled), chosen)
        assert report.tuned_data(shuffled).iloc[0]["hparams"] == "lr=0.03"
    assert chosen.iloc[0]["hparams"] == "lr=0.03"


def test_without_a_test_split_the_tuned_cell_says_it_was_selected_on_validation(tmp_path):
    runs = tmp_path / "grid"
    for seed in (0, 1):
        write_record(runs, make_record("lora", "minilm", "boolq", seed, 0.7, test=None))
        write_record(runs, make_record("lora", "minilm", "rte", seed, 0.7))
    df = report.load_records(runs)
    data = report.tuned_data(df).set_index("task")
    assert data.loc["boolq", "split"] == "validation" and data.loc["rte", "split"] == "test"
    assert data.loc["boolq", "mean"] == pytest.approx(0.7 * 1.02)  # the selection score itself
    table = report.main_table(df, "tuned").iloc[0]
    assert "§" in table["boolq (accuracy; on validation)"] and "§" not in table["rte (accuracy; on test)"]
    assert table["rte (accuracy; on test)"].endswith("[defaults]")


def test_cells_mark_and_list_runs_that_did_not_converge_or_collapsed(tmp_path):
    runs = tmp_path / "grid"
    write_record(runs, make_record("prefix_tuning", "minilm", "rte", 0, 0.5, converged=False, collapsed=True))
    write_record(runs, make_record("prefix_tuning", "minilm", "rte", 1, 0.6))
    write_record(runs, make_record("prompt_tuning", "minilm", "rte", 0, 0.6, converged=None))
    write_record(runs, make_record("lora", "minilm", "rte", 0, 0.6))
    df = report.load_records(runs)
    table = report.main_table(df, "tuned").set_index("Method")["rte (accuracy; on test)"]
    assert "†‡" in table["prefix_tuning"] and "?" in table["prompt_tuning"]
    assert not any(mark in table["lora"] for mark in "†‡?§")
    flagged = report.flagged_table(df).set_index(["Method", "Seed"])
    assert sorted(flagged.index) == [("prefix_tuning", "0"), ("prompt_tuning", "0")]
    assert (
        flagged.loc[("prefix_tuning", "0"), "Flags"]
        == "† not converged (still rising); ‡ collapsed: every validation prediction is the same"
    )
    assert flagged.loc[("prompt_tuning", "0"), "Flags"].startswith("? no diagnostics")


def _claim_runs(runs: Path, model: str, scores: dict[str, list[float]], converged: bool = True) -> None:
    for method, values in scores.items():
        for seed, value in enumerate(values):
            write_record(
                runs, make_record(method, model, "rte", seed, value, converged=converged or method != "prefix_tuning")
            )


def test_claim_check_is_inconclusive_when_runs_cannot_decide(tmp_path):
    runs = tmp_path / "claims"
    base = {"head_only": [0.5, 0.51], "full_finetune": [0.90, 0.91], "p_tuning_v2": [0.895, 0.90]}
    _claim_runs(runs, "clear", {**base, "prompt_tuning": [0.60, 0.61], "prefix_tuning": [0.80, 0.81]})
    _claim_runs(runs, "one_seed", {**base, "prompt_tuning": [0.60], "prefix_tuning": [0.80, 0.81]})
    _claim_runs(
        runs, "unconverged", {**base, "prompt_tuning": [0.60, 0.61], "prefix_tuning": [0.80, 0.81]}, converged=False
    )
    _claim_runs(runs, "noisy", {**base, "prompt_tuning": [0.60, 0.70], "prefix_tuning": [0.66, 0.68]})
    _claim_runs(
        runs, "far", {**base, "prompt_tuning": [0.60, 0.61], "prefix_tuning": [0.80, 0.81], "p_tuning_v2": [0.70, 0.71]}
    )
    at_chance = {"head_only": [0.50, 0.53], "full_finetune": [0.52, 0.50], "p_tuning_v2": [0.51, 0.52]}
    _claim_runs(runs, "chance", {**at_chance, "prompt_tuning": [0.50, 0.51], "prefix_tuning": [0.50, 0.52]})
    data = report.claim_check_data(report.load_records(runs)).set_index(["model", "relation"])
    first, second, third = "prompt_tuning < prefix_tuning", "prefix_tuning < p_tuning_v2", "p_tuning_v2 ≈ full_finetune"
    assert data.loc[("clear", first), "verdict"] == data.loc[("clear", third), "verdict"] == "holds"
    assert data.loc[("one_seed", first), "verdict"] == "inconclusive"
    assert data.loc[("one_seed", first), "reason"] == "prompt_tuning has 1 seed"
    assert data.loc[("one_seed", second), "verdict"] == "holds"  # the other relations are unaffected
    assert data.loc[("unconverged", first), "reason"] == "prefix_tuning: 2/2 run(s) not converged"
    noisy = data.loc[("noisy", first)]  # Δ = +1.5 points, standard error 3.6 points
    assert noisy["verdict"] == "inconclusive"
    assert noisy["reason"] == "|Δ| within 2 standard errors at fewer than 3 seeds: run more seeds"
    assert noisy["se"] == pytest.approx(math.sqrt(np.var([0.60, 0.70], ddof=1) / 2 + np.var([0.66, 0.68], ddof=1) / 2))
    assert data.loc[("far", third), "verdict"] == "violated"
    chance = data.loc[("chance", third)]  # within 1 point of full FT, but full FT learned nothing either
    assert chance["verdict"] == "inconclusive"
    assert chance["reason"] == "full_finetune does not beat head_only beyond noise (Δ -0.5 ± 1.8): nothing to be ≈ to"
    table = report.claim_check_table(report.load_records(runs)).set_index("Model")
    assert table.loc["one_seed", "Claim"] == "inconclusive: prompt_tuning < prefix_tuning"
    assert table.loc["one_seed", first].startswith("inconclusive (Δ +20.") and "1 seed" in table.loc["one_seed", first]


def test_a_tie_between_converged_runs_at_three_seeds_is_within_noise(tmp_path):
    runs = tmp_path / "claims"
    base = {"head_only": [0.5, 0.51, 0.5], "full_finetune": [0.90, 0.91, 0.9], "p_tuning_v2": [0.895, 0.90, 0.9]}
    _claim_runs(runs, "tie", {**base, "prompt_tuning": [0.60, 0.70, 0.65], "prefix_tuning": [0.66, 0.68, 0.64]})
    data = report.claim_check_data(report.load_records(runs)).set_index("relation")
    tie = data.loc["prompt_tuning < prefix_tuning"]
    assert tie["verdict"] == "within noise" and tie["reason"] == "|Δ| within 2 standard errors"
    assert data.loc["prefix_tuning < p_tuning_v2", "verdict"] == "holds"
    claim = report.claim_check_table(report.load_records(runs))["Claim"].item()
    assert claim == "not separated: prompt_tuning < prefix_tuning within noise, the rest holds"


def test_an_unreadable_record_in_a_point_folder_is_placed_by_its_path(tmp_path):
    bad = tmp_path / "runs" / "lora" / "minilm" / "rte" / "lr=0.01,r=4" / "seed=2" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{")
    row = report.load_records(tmp_path / "runs").iloc[0]
    assert (row["status"], row["method"], row["model"], row["task"], row["seed"]) == (
        "unreadable",
        "lora",
        "minilm",
        "rte",
        2,
    )


def test_a_record_of_an_unknown_schema_is_listed_and_never_averaged_or_chosen(tmp_path):
    """A newer writer's record may mean other things by the same fields: it is listed as unreadable
    (schema named), and the tuned table is built from the records this report understands."""
    runs = tmp_path / "runs"
    for lr, score, schema in ((0.01, 0.6, 1), (0.1, 0.99, 99)):
        record = make_record("lora", "minilm", "rte", 0, score) | {"hparams": {"trainer.lr": lr}, "schema": schema}
        write_record(runs, record)
    df = report.load_records(runs)
    future = df[df["status"] == "unreadable"]
    assert len(future) == 1 and "unknown schema 99" in future["error"].item() and "lr=0.1" in future["error"].item()
    tuned = report.main_table(df, variant="tuned")
    assert "60.0" in tuned.to_string() and "99.0" not in tuned.to_string()


def test_selection_compares_points_on_their_shared_seeds():
    """A 1-seed lucky point must not beat a point whose shared-seed score is higher but whose 3-seed
    mean is lower: the protocol's grid seed decides, as `bench.protocol` chose."""
    from bench.report.tables import seed_matched_means, select_points

    rows = [("a", 0, 0.64), ("a", 1, 0.60), ("a", 2, 0.58), ("b", 0, 0.63)]  # a: mean 0.607 but seed 0 best
    df = pd.DataFrame(
        [
            {
                "method": "m",
                "model": "x",
                "task": "t",
                "hparams": f"lr={h}",
                "seed": seed,
                "score_best": v,
                "usable": True,
                "status": "ok",
            }
            for h, seed, v in rows
        ]
    )
    means = seed_matched_means(df, ["hparams"], "score_best").set_index("hparams")
    assert means.loc["lr=a", "selection"] == pytest.approx(0.64) and means.loc["lr=a", "selection_n"] == 1
    assert bool(means["seeds_matched"].all())
    chosen = select_points(df)
    assert chosen["hparams"].tolist() == ["lr=a"]
    disjoint = df.assign(seed=[1, 2, 3, 0])  # no seed in common: each point's own mean decides
    assert select_points(disjoint)["hparams"].tolist() == ["lr=b"]


def test_shared_choices_computes_each_tuned_cell_once_and_hands_out_copies(runs, monkeypatch):
    from bench.report import tables

    df = report.load_runs(runs)
    plain = tables.cell_stats(df, "tuned")
    calls = []
    original = tables._cell_stats
    monkeypatch.setattr(tables, "_cell_stats", lambda *a: calls.append(a[1:]) or original(*a))
    with tables.shared_choices():
        first = tables.cell_stats(df, "tuned")
        first["mean"] = -1.0  # a caller changing its copy must not change what the next caller gets
        second = tables.cell_stats(df, "tuned")
        tables.cell_stats(df, "final")
        tables.cell_stats(df.copy(), "tuned")  # another frame is another entry
    tables.cell_stats(df, "tuned")  # outside the block nothing is shared
    assert calls == [("tuned",), ("final",), ("tuned",), ("tuned",)]
    pd.testing.assert_frame_equal(second, plain)


def test_cost_times_come_from_the_main_device_only():
    """A grid point checked on a CPU beside a GPU protocol counts as a run, but its step time is not averaged in."""
    from bench.report.tables import cost_data

    frame = pd.DataFrame(
        {
            "usable": [True, True, True],
            "method": ["prompt_tuning"] * 3,
            "model": ["minilm"] * 3,
            "params.backbone": [100.0] * 3,
            "params.trainable": [10.0] * 3,
            "throughput.step_time_s_median": [0.02, 0.03, 0.40],
            "throughput.peak_memory_bytes": [1.0, 2.0, 9.0],
            "provenance.device": ["cuda:NVIDIA H200", "cuda:NVIDIA H200", "cpu"],
        }
    )
    (row,) = cost_data(frame).to_dict("records")
    assert row["runs"] == 3 and row["step_time_s_mean"] == pytest.approx(0.025)
    assert row["peak_memory_bytes"] == 2.0
    assert cost_data(frame.drop(columns="provenance.device")).iloc[0]["step_time_s_mean"] == pytest.approx(0.15)
