"""Scores by input length (bench.tasks.buckets, ``metrics.by_length``): quantile buckets, each scored
with the task's metrics on the predictions already made, outside the run's identity."""

from __future__ import annotations

import random

import pytest
from omegaconf import OmegaConf

from bench.runner import config_hash, execute
from bench.tasks.base import TaskData
from bench.tasks.buckets import assign_buckets, bucket_edges, input_length, score_by_length
from tests.conftest import compose


def test_edges_cut_at_quantiles_and_keep_equal_lengths_together():
    lengths = list(range(1, 13))  # 12 distinct lengths, 3 buckets of 4
    assert bucket_edges(lengths, 3) == [4, 8]
    assert assign_buckets(lengths, [4, 8]) == [0] * 4 + [1] * 4 + [2] * 4
    tied = [5] * 6 + [9, 10]
    edges = bucket_edges(tied, 2)
    buckets = assign_buckets(tied, edges)
    assert len({b for length, b in zip(tied, buckets) if length == 5}) == 1  # all the 5s in one bucket
    assert bucket_edges([7], 3) == [7, 7] and assign_buckets([7], [7, 7]) == [0]
    with pytest.raises(ValueError, match="count must be >= 1"):
        bucket_edges(lengths, 0)


def test_score_by_length_partitions_the_split_shortest_first():
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(50)]
    seen: list[list[int]] = []
    result = score_by_length(lengths, 4, lambda kept: seen.append(kept) or {"n_scored": len(kept)})
    assert sorted(i for kept in seen for i in kept) == list(range(50))  # every example once
    buckets = result["buckets"]
    assert [b["metrics"]["n_scored"] for b in buckets] == [b["n"] for b in buckets]
    for low, high in zip(buckets, buckets[1:]):
        assert low["max_length"] < high["min_length"]  # ranges never overlap
    assert buckets[0]["min_length"] == min(lengths) and buckets[-1]["max_length"] == max(lengths)
    assert result["count"] == 4 and len(result["edges"]) == 3


def test_input_length_counts_tokens_and_the_longest_choice():
    assert input_length({"input_ids": [1, 2, 3]}) == 3
    assert input_length({"input_ids": [[1, 2], [1, 2, 3, 4], [5]]}) == 4


def test_metrics_on_a_subset_equal_metrics_of_that_subset():
    examples = [{"text": "x", "label": label} for label in (0, 1, 1, 0, 1)]
    config = {"metric": ["accuracy", "f1_macro"], "primary_metric": "accuracy"}
    task = TaskData("t", "classification", ["a", "b"], {"test": examples}, {}, [], "accuracy", config)
    predictions = [0, 0, 1, 1, 1]
    kept = [1, 2, 4]
    alone = TaskData(
        "t", "classification", ["a", "b"], {"test": [examples[i] for i in kept]}, {}, [], "accuracy", config
    )
    assert task.compute_metrics(predictions, "test", indices=kept) == alone.compute_metrics([0, 1, 1], "test")
    assert task.compute_metrics(predictions, "test", indices=kept)["accuracy"] == pytest.approx(2 / 3)


def _config(*overrides: str) -> dict:
    base = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke", *overrides]
    return OmegaConf.to_container(compose(base, hydra_node=False), resolve=True)


def test_length_buckets_leave_the_run_identity_alone():
    assert config_hash(_config()) == config_hash(_config("trainer.length_buckets=0"))
    assert config_hash(_config()) == config_hash(_config("trainer.length_buckets=5"))


def test_a_run_records_test_scores_by_length_that_add_up_to_the_test_score(tmp_path):
    record = execute(_config("trainer.length_buckets=3"), tmp_path)
    assert record["status"] == "ok", record["error"]
    by_length = record["metrics"]["by_length"]["test"]
    buckets = by_length["buckets"]
    assert 1 <= len(buckets) <= 3 and sum(b["n"] for b in buckets) == record["metrics"]["data"]["test"]
    weighted = sum(b["n"] * b["metrics"]["accuracy"] for b in buckets) / sum(b["n"] for b in buckets)
    assert weighted == pytest.approx(record["metrics"]["test"]["accuracy"])  # accuracy is a mean over examples
    off = execute(_config("trainer.length_buckets=0"), tmp_path / "off")
    assert off["metrics"]["by_length"] is None
    assert off["metrics"]["test"] == record["metrics"]["test"]  # bucketing changes no score
