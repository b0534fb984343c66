"""``task.split_validation``: select on one seeded part of the validation file, report on the other."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench.report.tables import _tuned_scores
from bench.runner import execute
from bench.tasks import load_task
from bench.tasks.base import HELDOUT, TaskDataError
from tests.conftest import compose


def task_config(*overrides: str) -> dict:
    cfg = compose(["task=synth_ner", *overrides], hydra_node=False)
    return OmegaConf.to_container(cfg.task, resolve=True)


def test_the_validation_file_is_split_in_two_disjoint_seeded_parts() -> None:
    whole = load_task(task_config()).splits["validation"]
    task = load_task(task_config("++task.split_validation={fraction:0.5,seed:0}"))
    select, report = task.splits["validation"], task.splits[HELDOUT]
    key = lambda examples: sorted(map(repr, examples))  # noqa: E731
    assert key(select + report) == key(whole) and len(report) == round(len(whole) / 2)
    assert not set(map(repr, select)) & set(map(repr, report))
    again = load_task(task_config("++task.split_validation={fraction:0.5,seed:0}")).splits[HELDOUT]
    other = load_task(task_config("++task.split_validation={fraction:0.5,seed:1}")).splits[HELDOUT]
    assert again == report != other
    assert task.counts[HELDOUT] == len(report)


def test_a_bad_split_validation_is_one_line_naming_the_field() -> None:
    with pytest.raises(TaskDataError, match=r"split_validation.fraction must be in \(0, 1\)"):
        load_task(task_config("++task.split_validation={fraction:1.5}"))


def test_the_held_out_part_is_scored_once_at_the_best_checkpoint(tmp_path: Path) -> None:
    overrides = ["method=head_only", "model=tiny_bert", "task=synth_ner", "trainer=smoke"]
    config = OmegaConf.to_container(
        compose(overrides + ["++task.split_validation={fraction:0.5,seed:0}"], hydra_node=False), resolve=True
    )
    record = execute(config, tmp_path)
    assert record["status"] == "ok", record["error"]
    heldout = record["metrics"][HELDOUT]
    assert heldout is not None and 0.0 <= heldout["f1"] <= 1.0
    assert all(h["split"] == "validation" for h in record["metrics"]["history"])  # never a selection pass


def test_the_tuned_score_prefers_test_then_the_held_out_part_then_validation() -> None:
    rows = pd.DataFrame(
        {
            "method": ["a", "a", "b", "c"],
            "model": ["m"] * 4,
            "task": ["t"] * 4,
            "usable": [True] * 4,
            "score_best": [0.9, 0.8, 0.7, 0.6],
            "score_heldout": [0.5, 0.4, 0.3, float("nan")],
            "score_test": [0.2, float("nan"), 0.1, float("nan")],
        }
    )
    tuned = _tuned_scores(rows)
    # cell a: one run lacks a test score, so the whole cell reports its held-out part
    assert tuned["score_tuned"].tolist() == [0.5, 0.4, 0.1, 0.6]
    assert tuned["split"].tolist() == ["validation (held-out part)"] * 2 + ["test", "validation"]
