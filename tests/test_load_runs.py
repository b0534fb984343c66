"""``from bench.report import load_runs``: one tidy row per run, on ok, failed and multi-seed folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.report import ReportError, cost_table, failures_table, load_runs, main_stats, main_table
from tests.test_report import make_record, write_record


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """prompt_tuning on rte with seeds 0-2 (ok), seed 3 failed; lora seed 0 diverged; one broken file."""
    root = tmp_path / "runs"
    for seed, score in enumerate((0.60, 0.70, 0.80)):
        write_record(root, make_record("prompt_tuning", "tiny_bert", "rte", seed, score))
    write_record(
        root,
        make_record(
            "prompt_tuning", "tiny_bert", "rte", 3, 0.0, status="failed", error="RuntimeError: out of memory", final={}
        ),
    )
    write_record(
        root,
        make_record(
            "lora", "tiny_bert", "rte", 0, 0.5, status="diverged", error="Diverged: training loss became nan at step 3"
        ),
    )
    broken = root / "lora" / "tiny_bert" / "rte" / "seed=1" / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    return root


def test_one_tidy_row_per_run(runs: Path) -> None:
    df = load_runs(runs)
    assert len(df) == 6 and isinstance(df, pd.DataFrame)
    assert list(df.columns[:4]) == ["method", "model", "task", "seed"]
    by_key = df.set_index(["method", "seed"])
    ok = by_key.loc[("prompt_tuning", 1)]
    assert ok["status"] == "ok" and bool(ok["usable"]) and ok["problem"] == ""
    assert ok["score_final"] == pytest.approx(0.70) and ok["metrics.final.accuracy"] == pytest.approx(0.70)
    assert ok["params.trainable"] == 1000 and ok["throughput.train_tokens_per_s"] == 1000.0
    assert isinstance(ok["metrics.history"], list)  # kept whole, not exploded into columns
    failed = by_key.loc[("prompt_tuning", 3)]
    assert failed["status"] == "failed" and not failed["usable"] and "out of memory" in failed["error"]
    assert by_key.loc[("lora", 0), "status"] == "diverged"
    unreadable = by_key.loc[("lora", 1)]  # method and seed still come from the folder layout
    assert unreadable["status"] == "unreadable" and "malformed JSON" in unreadable["error"]


def test_sections_follow_the_identity_columns(runs: Path) -> None:
    columns = list(load_runs(runs).columns)
    first_metric = min(i for i, c in enumerate(columns) if c.startswith("metrics.") and c != "metrics.primary")
    first_params = min(i for i, c in enumerate(columns) if c.startswith("params."))
    first_throughput = min(i for i, c in enumerate(columns) if c.startswith("throughput."))
    assert columns.index("status") < first_metric < first_params < first_throughput


def test_table_builders_take_the_frame(runs: Path) -> None:
    """Multi-seed: three ok seeds averaged, the failed one counted beside them, never averaged in."""
    df = load_runs(runs)
    stats = main_stats(df, "final").set_index("method")
    seeds = [0.60, 0.70, 0.80]
    assert stats.loc["prompt_tuning", "n"] == 3
    assert stats.loc["prompt_tuning", "mean"] == pytest.approx(sum(seeds) / 3)
    assert stats.loc["prompt_tuning", "std"] == pytest.approx(pd.Series(seeds).std())
    assert stats.loc["prompt_tuning", "not_ok"] == 1
    assert "n=3" in main_table(df, "final").iloc[0].to_string()
    assert len(failures_table(df)) == 3 and len(cost_table(df)) == 1


def test_missing_or_empty_folder_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not found"):
        load_runs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no result.json"):
        load_runs(tmp_path / "empty")
