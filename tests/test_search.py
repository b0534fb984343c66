"""Hyperparameter search (issue #15): the objective is the record's best validation score, in the task
metric's direction (the study itself: tests/test_optuna_search.py)."""

from __future__ import annotations

from bench.search import metric_direction, objective


def test_objective_is_the_best_validation_score_of_the_primary_metric() -> None:
    record = {"metrics": {"primary": "f1", "final": {"f1": 0.5}, "best": {"f1": 0.7, "accuracy": 0.9}}}
    assert objective(record) == 0.7
    assert objective({"metrics": {"primary": "f1", "final": {}, "best": {}}}) is None  # failed: a failed trial
    assert metric_direction("accuracy") == metric_direction("bleu") == "maximize"
    assert metric_direction("error_rate") == "minimize"  # declared in the metric registry
