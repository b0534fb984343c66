"""Scores by input length: the examples of a split cut into length buckets (quantiles of the split),
each bucket scored with the task's own metrics on the predictions the evaluation already made.

Nothing here runs a model: the runner hands over one split's predictions and each example's input
length, so bucketing never changes what a run computes (``trainer.length_buckets`` is a
``computes=False`` setting).  The record keeps the result as ``metrics.by_length``; the report's
claims table reads it for "works on long inputs".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LENGTH_MEASURE = "input tokens"
"""What a length counts: the evaluated input's tokens after truncation to ``task.max_length`` (for a
multiple-choice example, its longest choice), without virtual tokens: the same for every method of a model."""


def input_length(feature: dict[str, Any]) -> int:
    """Tokens of one encoded evaluation input (the longest choice when ``input_ids`` is a list of lists)."""
    ids = feature["input_ids"]
    if ids and isinstance(ids[0], (list, tuple)):
        return max(len(choice) for choice in ids)
    return len(ids)


def bucket_edges(lengths: Sequence[int], count: int) -> list[int]:
    """The ``count - 1`` upper edges that cut ``lengths`` at its quantiles (lower value at each cut).

    A length equal to an edge goes to the lower bucket, so equal lengths never straddle two buckets
    (with many ties a bucket can hold more than its share, or none).
    """
    if count < 1:
        raise ValueError(f"length buckets: count must be >= 1, got {count}")
    ordered = sorted(lengths)
    return [ordered[max((i * len(ordered)) // count - 1, 0)] for i in range(1, count)] if ordered else []


def assign_buckets(lengths: Sequence[int], edges: Sequence[int]) -> list[int]:
    """Per length, the index of its bucket: how many edges it exceeds."""
    return [sum(length > edge for edge in edges) for length in lengths]


def score_by_length(
    lengths: Sequence[int], count: int, score: Callable[[list[int]], dict[str, float]]
) -> dict[str, Any]:
    """``metrics.by_length`` for one split: ``score(indices)`` (the task's metrics on those examples)
    per non-empty bucket, shortest first, with each bucket's length range and size."""
    edges = bucket_edges(lengths, count)
    members: dict[int, list[int]] = {}
    for index, bucket in enumerate(assign_buckets(lengths, edges)):
        members.setdefault(bucket, []).append(index)
    buckets = [
        {
            "bucket": bucket,
            "min_length": min(lengths[i] for i in indices),
            "max_length": max(lengths[i] for i in indices),
            "n": len(indices),
            "metrics": score(indices),
        }
        for bucket, indices in sorted(members.items())
    ]
    return {"count": count, "measure": LENGTH_MEASURE, "edges": edges, "buckets": buckets}
