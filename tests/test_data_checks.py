"""Degenerate data is warned and recorded (bench.data_checks): one class in the training set, and a
split mostly cut by task.max_length; ordinary data gets no warning."""

from __future__ import annotations

import json
from types import SimpleNamespace

from bench.data_checks import degenerate_data, train_classes
from tests.conftest import run_bench


def _task(kind: str, train: list[dict], max_length: int = 64) -> SimpleNamespace:
    return SimpleNamespace(name="t", kind=kind, splits={"train": train}, config={"max_length": max_length})


def test_one_class_training_sets_are_named_per_kind() -> None:
    one = degenerate_data(_task("classification", [{"label": 1}] * 4), {})
    assert len(one) == 1 and "same label [1]" in one[0]
    assert degenerate_data(_task("classification", [{"label": 0}, {"label": 1}]), {}) == []
    all_o = degenerate_data(_task("token_classification", [{"tags": [0, 0]}, {"tags": [0]}]), {})
    assert len(all_o) == 1 and "same label [0]" in all_o[0]
    assert train_classes("token_classification", [{"tags": [0, 3]}]) == {0, 3}
    assert train_classes("generation", [{"target": "x"}]) is None


def test_a_split_mostly_truncated_says_the_share_and_the_setting() -> None:
    task = _task("classification", [{"label": 0}, {"label": 1}], max_length=8)
    lines = degenerate_data(task, {"train": (3, 4), "validation": (2, 4)})
    assert lines == ["task t: 3/4 train examples (75%) truncated at task.max_length=8; raise task.max_length"]


def test_a_run_on_degenerate_data_warns_and_records_it(runs_root) -> None:
    """task.max_length=4 cuts every synth_cls pair: the run still ends ok, with a warning line and field."""
    args = ["method=head_only", "model=tiny_bert", "task=synth_cls", "trainer=smoke", "task.max_length=4"]
    result = run_bench([*args, f"runs_root={runs_root}", "sweep_name=degenerate"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: task synth_cls:" in result.stderr and "raise task.max_length" in result.stderr
    (path,) = runs_root.glob("degenerate/**/result.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok"
    assert any("truncated at task.max_length=4" in line for line in record["metrics"]["data"]["warnings"])
