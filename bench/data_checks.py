"""Degenerate data, warned and recorded (``metrics.data.warnings``): a run on such data still trains,
but nobody should read its score without knowing.

Two cases: a training set with a single class (nothing to tell apart: any score is the majority rate),
and a split most of whose examples ``task.max_length`` cut (the model saw a different task).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRUNCATED_SHARE_WARN = 0.5
"""Warn when more than this share of a split's examples were truncated."""

_LABEL_FIELD = {"classification": "label", "multiple_choice": "label", "token_classification": "tags"}
"""Where an example of each task kind keeps its label(s); generation has no classes."""


def train_classes(kind: str, train: list[dict]) -> set[Any] | None:
    """The distinct labels of the training examples (every tag, for token classification); None when
    the kind has no classes or the split is empty."""
    field = _LABEL_FIELD.get(kind)
    if field is None or not train:
        return None
    values = (ex.get(field) for ex in train)
    if kind == "token_classification":
        return {tag for tags in values for tag in (tags or [])}
    return {value for value in values if value is not None}


def degenerate_data(task: Any, truncated: Mapping[str, tuple[int, int]]) -> list[str]:
    """One line per degenerate property of ``task``'s data; ``truncated`` maps a split to
    (examples truncated, examples)."""
    lines = []
    classes = train_classes(task.kind, task.splits.get("train") or [])
    if classes is not None and len(classes) < 2:
        lines.append(
            f"task {task.name}: every training example has the same label {sorted(classes, key=str)}: "
            "one class, so any score is the majority rate"
        )
    max_length = task.config.get("max_length")
    for split, (cut, total) in truncated.items():
        if total and cut / total > TRUNCATED_SHARE_WARN:
            lines.append(
                f"task {task.name}: {cut}/{total} {split} examples ({cut / total:.0%}) truncated at "
                f"task.max_length={max_length}; raise task.max_length"
            )
    return lines
