"""The claims table (bench.report.claims) on hand-made records: one verdict per statement of the
comparison, under the claim check's rules (seeds, convergence, |Δ| against 2 standard errors)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bench.report as report
from bench.report import claims
from tests.test_report import BACKBONE, make_record, write_record

THREE = (-0.005, 0.0, 0.005)  # seed offsets: a small, known spread around each base score


def _run(runs: Path, method: str, task: str, seed: int, score: float, model: str = "m", **extra) -> None:
    """One record; ``extra``: kind, train, declarations, by_length (bucket scores), stored, share, converged."""
    record = make_record(
        method,
        model,
        task,
        seed,
        score,
        stored=extra.get("stored"),
        trainable=extra.get("trainable", 1000),
        converged=extra.get("converged", True),
    )
    record["provenance"]["config"]["task"] = {"kind": extra.get("kind", "classification")}
    record["metrics"]["data"]["train"] = extra.get("train", 100)
    if "declarations" in extra:
        record["declarations"] = extra["declarations"]
    if "share" in extra:
        record["diagnostics"]["prefix_attention_share"] = extra["share"]
    if "by_length" in extra:
        buckets = [{"n": 10, "metrics": {"accuracy": s}} for s in extra["by_length"]]
        record["metrics"]["by_length"] = {"test": {"count": len(buckets), "buckets": buckets}}
    if "wording" in extra:  # drops under two rewrites
        clean = record["metrics"]["test"]["accuracy"]
        rewrites = {
            name: {"accuracy": clean - drop} for name, drop in zip(("lowercase", "uppercase"), extra["wording"])
        }
        record["metrics"]["wording"] = {"test": {"clean": {"accuracy": clean}, **rewrites}}
    write_record(runs, record)


def _cell(runs: Path, method: str, task: str, score: float, offsets=THREE, **extra) -> None:
    for seed, offset in enumerate(offsets):
        per_seed = {
            k: (v[seed] if isinstance(v, list) and k not in ("by_length", "wording") else v) for k, v in extra.items()
        }
        _run(runs, method, task, seed, score + offset, **per_seed)


def _verdicts(runs: Path) -> pd.DataFrame:
    return claims.claims_data(report.load_records(runs)).set_index(["method", "statement"])


def _row(data: pd.DataFrame, method: str, check: str, index: int = 0) -> pd.Series:
    texts = [s.text for s in claims.STATEMENTS if s.method == method and s.check == check]
    return data.loc[(method, texts[index])]


ORDERED = {"head_only": 0.50, "prompt_tuning": 0.60, "prefix_tuning": 0.70, "p_tuning_v2": 0.895, "full_finetune": 0.90}


def test_every_statement_gets_one_row_per_model_and_a_verdict(tmp_path):
    for task in ("rte", "cb"):
        for method, score in ORDERED.items():
            _cell(tmp_path, method, task, score)
    data = claims.claims_data(report.load_records(tmp_path))
    assert len(data) == len(claims.STATEMENTS) and set(data["model"]) == {"m"}
    assert all(v in ("holds", "violated", "within noise", "inconclusive") for v in data["verdict"])
    assert (data.loc[data["verdict"] == "inconclusive", "reason"] != "").all()  # always says why
    table = report.claims_table(report.load_records(tmp_path))
    assert list(table.columns) == ["Model", "Method", "Statement", "Measurement", "Evidence", "Verdict"]


def test_ordering_rows_follow_the_claim_check_task_by_task(tmp_path):
    for method, score in ORDERED.items():
        _cell(tmp_path, method, "rte", score)
        _cell(tmp_path, method, "cb", score if method != "prefix_tuning" else 0.55)  # prefix < prompt on cb
    data = _verdicts(tmp_path)
    first = data.loc[("prompt_tuning", "prompt_tuning < prefix_tuning")]
    assert first["verdict"] == "violated" and first["reason"] == "on cb of 2 task(s)"
    se = math.sqrt(2 * np.var(THREE, ddof=1) / 3) * 100  # two sides of 3 seeds each
    assert f"rte: Δ +10.0 ± {se:.1f}, n 3/3 → holds" in first["evidence"]
    assert data.loc[("p_tuning_v2", "p_tuning_v2 ≈ full_finetune"), "verdict"] == "holds"
    checks = report.claim_check_data(report.load_records(tmp_path)).set_index(["task", "relation"])
    assert checks.loc[("cb", "prompt_tuning < prefix_tuning"), "verdict"] == "violated"  # the same rule


def test_over_tasks_puts_violated_before_inconclusive_before_within_noise():
    def c(verdict: str, reason: str = "") -> dict:
        return {"verdict": verdict, "reason": reason, "diff": 0.0, "se": 0.0}

    assert claims.over_tasks({"a": c("holds"), "b": c("holds")}) == ("holds", "holds on all 2 task(s)")
    assert claims.over_tasks({"a": c("holds"), "b": c("within noise", "x")})[0] == "within noise"
    assert claims.over_tasks({"a": c("inconclusive", "1 seed"), "b": c("within noise")})[0] == "inconclusive"
    verdict, reason = claims.over_tasks({"a": c("violated"), "b": c("inconclusive", "1 seed"), "c": c("holds")})
    assert verdict == "violated" and reason == "on a of 3 task(s)"
    assert claims.over_tasks({"a": c("n/a (no x runs)")}) == ("inconclusive", "no task has runs of both sides")


def test_a_ordering_side_with_one_seed_is_inconclusive(tmp_path):
    for method, score in ORDERED.items():
        _cell(tmp_path, method, "rte", score, offsets=(0.0,) if method == "prompt_tuning" else THREE)
    row = _verdicts(tmp_path).loc[("prompt_tuning", "prompt_tuning < prefix_tuning")]
    assert row["verdict"] == "inconclusive" and "prompt_tuning has 1 seed" in row["reason"]


PROMPT_FLAGS = {"input_tokens": True, "attention_prefix": False, "reparameterized": False}
PREFIX_FLAGS = {"input_tokens": False, "attention_prefix": True, "reparameterized": True, "trains_backbone": False}


def test_mechanism_rows_read_the_recorded_declarations_and_the_prefix_share(tmp_path):
    _cell(tmp_path, "prompt_tuning", "rte", 0.6, declarations=PROMPT_FLAGS)
    _cell(tmp_path, "prefix_tuning", "rte", 0.7, declarations=PREFIX_FLAGS, share=[0.1, 0.2, 0.3])
    flat = {**PREFIX_FLAGS, "reparameterized": False}  # one run trained a flat prefix
    _run(tmp_path, "prefix_tuning", "rte", 3, 0.7, declarations=flat, share=0.2)
    data = _verdicts(tmp_path)
    assert _row(data, "prompt_tuning", "mechanism", 0)["verdict"] == "holds"
    attention = _row(data, "prefix_tuning", "mechanism", 0)
    assert (
        attention["verdict"] == "holds" and "20.0 % of their attention on the prefix (4 runs)" in attention["evidence"]
    )
    mlp = _row(data, "prefix_tuning", "mechanism", 2)
    assert mlp["verdict"] == "violated" and mlp["reason"] == "1 run(s) record reparameterized=False"
    missing = _row(data, "prompt_tuning", "mechanism", 1)  # attention_weights was never recorded
    assert (
        missing["verdict"] == "inconclusive" and missing["reason"] == "no run recorded declarations.attention_weights"
    )
    assert _row(data, "p_tuning_v2", "mechanism", 0)["reason"] == "no usable p_tuning_v2 runs"


def test_an_attention_prefix_no_query_attends_to_violates_acting_on_attention(tmp_path):
    _cell(tmp_path, "prefix_tuning", "rte", 0.7, declarations=PREFIX_FLAGS, share=0.0)
    row = _row(_verdicts(tmp_path), "prefix_tuning", "mechanism", 0)
    assert row["verdict"] == "violated" and row["reason"] == "no attention reaches the prefix"


@pytest.mark.parametrize(
    ("pt2", "prefix", "verdict", "reason"),
    [
        (3000, 2500, "holds", ""),
        (2000, 2500, "violated", "prefix_tuning keeps as many or more"),
        (BACKBONE // 20, 2500, "violated", "not slight: p_tuning_v2 keeps a medium volume"),
    ],
)
def test_parameter_volume_compares_what_each_method_keeps(tmp_path, pt2, prefix, verdict, reason):
    _cell(tmp_path, "prompt_tuning", "rte", 0.6, trainable=600)
    _cell(tmp_path, "prefix_tuning", "rte", 0.7, trainable=50_000, stored=prefix)  # the MLP trains, is folded
    _cell(tmp_path, "p_tuning_v2", "rte", 0.8, trainable=50_600, stored=pt2)
    row = _row(_verdicts(tmp_path), "p_tuning_v2", "volume")
    assert (row["verdict"], row["reason"]) == (verdict, reason)


def test_generation_and_few_shot_rows_only_read_their_tasks(tmp_path):
    for method, score in {"head_only": 0.2, "prefix_tuning": 0.495, "p_tuning_v2": 0.3, "full_finetune": 0.5}.items():
        _cell(tmp_path, method, "e2e", score, kind="generation")
    for method, score in {"head_only": 0.5, "prefix_tuning": 0.6, "p_tuning_v2": 0.795, "full_finetune": 0.8}.items():
        _cell(tmp_path, method, "cb32", score, train=32)
    data = _verdicts(tmp_path)
    generation = _row(data, "prefix_tuning", "task_kind")
    assert (
        generation["verdict"] == "holds"
        and generation["evidence"].startswith("e2e:")
        and "cb32" not in generation["evidence"]
    )
    few = _row(data, "p_tuning_v2", "few_shot")
    assert few["verdict"] == "holds" and few["evidence"].startswith("cb32:") and "e2e" not in few["evidence"]
    assert claims.few_shot_tasks(report.load_records(tmp_path)) == {"cb32"}
    assert data.loc[("p_tuning_v2", "p_tuning_v2 ≈ full_finetune"), "verdict"] == "violated"  # e2e: 0.3 vs 0.5


def test_difficulty_is_full_finetunings_error_and_the_gap_must_grow_beyond_noise(tmp_path):
    scores = {"easy": {"full_finetune": 0.95, "head_only": 0.5}, "hard": {"full_finetune": 0.70, "head_only": 0.4}}
    for task, refs in scores.items():
        for method, score in refs.items():
            _cell(tmp_path, method, task, score)
    _cell(tmp_path, "prompt_tuning", "easy", 0.945)
    _cell(tmp_path, "prompt_tuning", "hard", 0.45)
    data = _verdicts(tmp_path)
    easy, hard = _row(data, "prompt_tuning", "easy_task"), _row(data, "prompt_tuning", "hard_task")
    assert "easiest easy (5.0), hardest hard (30.0)" in easy["measurement"]
    assert easy["verdict"] == "holds" and hard["verdict"] == "holds"
    se = math.sqrt(4 * np.var(THREE, ddof=1) / 3) * 100  # two gaps of two 3-seed means each
    assert f"growth Δ +24.5 ± {se:.1f}" in hard["evidence"]


def test_difficulty_needs_two_tasks_that_differ_beyond_noise(tmp_path):
    for task in ("a", "b"):
        _cell(tmp_path, "full_finetune", task, 0.80, offsets=(-0.05, 0.0, 0.05))
        _cell(tmp_path, "prompt_tuning", task, 0.60)
    row = _row(_verdicts(tmp_path), "prompt_tuning", "hard_task")
    assert row["verdict"] == "inconclusive" and "do not differ in difficulty beyond noise" in row["reason"]
    one = tmp_path / "one"
    _cell(one, "full_finetune", "a", 0.8)
    _cell(one, "prompt_tuning", "a", 0.6)
    assert _row(_verdicts(one), "prompt_tuning", "easy_task")["reason"].startswith("fewer than 2 tasks")


@pytest.mark.parametrize(
    ("pt2_long", "verdict"),
    [(0.80, "holds"), (0.40, "violated")],  # a tie with full FT's drop counts for the statement
)
def test_long_inputs_compare_the_drop_with_full_finetunings(tmp_path, pt2_long, verdict):
    _cell(tmp_path, "full_finetune", "rte", 0.80, by_length=[0.90, 0.85, 0.80])
    _cell(tmp_path, "p_tuning_v2", "rte", 0.79, by_length=[0.90, 0.85, pt2_long])
    row = _row(_verdicts(tmp_path), "p_tuning_v2", "long_inputs")
    assert row["verdict"] == verdict
    assert (
        f"rte: p_tuning_v2 {(pt2_long - 0.9) * 100:+.1f} ± 0.0 vs full_finetune -10.0 ± 0.0 (n 3/3)" in row["evidence"]
    )


def test_long_inputs_without_scores_by_length_are_inconclusive(tmp_path):
    _cell(tmp_path, "full_finetune", "rte", 0.80)
    _cell(tmp_path, "p_tuning_v2", "rte", 0.79)
    row = _row(_verdicts(tmp_path), "p_tuning_v2", "long_inputs")
    assert row["verdict"] == "inconclusive" and "metrics.by_length" in row["reason"]
    unmeasured = _row(_verdicts(tmp_path), "p_tuning_v2", "transfer")
    assert unmeasured["verdict"] == "inconclusive" and unmeasured["reason"].startswith("no transfer records")


def test_the_report_writes_the_claims_table(tmp_path):
    for method, score in ORDERED.items():
        _cell(tmp_path / "runs", method, "rte", score)
    paths = report.write_report(tmp_path / "runs", tmp_path / "out")
    assert paths.tables["claims"]["md"].read_text(encoding="utf-8").count("| m ") == len(claims.STATEMENTS)
    assert "## Claims:" in paths.report.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("prompt_drops", "verdict"),
    [((0.10, 0.20), "holds"), ((0.01, 0.03), "within noise"), ((0.0, 0.0), "violated")],
)
def test_wording_compares_the_drop_under_rewrites_with_full_finetunings(tmp_path, prompt_drops, verdict):
    _cell(tmp_path, "full_finetune", "rte", 0.80, wording=(0.01, 0.03))
    _cell(tmp_path, "prompt_tuning", "rte", 0.60, wording=prompt_drops)
    row = _row(_verdicts(tmp_path), "prompt_tuning", "wording")
    assert row["verdict"] == verdict
    drop = sum(prompt_drops) / 2 * 100
    assert f"rte: prompt_tuning {drop:+.1f} ± 0.0 vs full_finetune +2.0 ± 0.0 (n 3/3)" in row["evidence"]


def test_wording_without_perturbation_scores_is_inconclusive(tmp_path):
    _cell(tmp_path, "full_finetune", "rte", 0.80)
    _cell(tmp_path, "prompt_tuning", "rte", 0.60)
    row = _row(_verdicts(tmp_path), "prompt_tuning", "wording")
    assert row["verdict"] == "inconclusive" and "metrics.wording" in row["reason"]
