"""Published numbers to compare against: ``bench/reference/papers.csv``, versioned with the code.

One row per paper × model × task × method × metric × split. Every value was copied from the document
named in ``source`` (``owner/repo:path@commit`` or a URL) at the place named in ``locator``; none is
written from memory. Rows we could not source are left out and listed in ``bench/reference/README.md``.

A row also carries what defines its number, so that it is set only beside a like-for-like run:
``split`` (the evaluation split), ``setting`` (the method's variant: prefix size, prompt length, …),
``budget`` (the training budget, or ``released checkpoint``) and ``measured_by`` (``primary``: the
source's authors ran it; ``secondary: <who ran it>``: the source quotes another paper's number).

    load_reference()          # validated DataFrame; ReferenceError names file:line and field
    validate_rows(rows)       # the same checks on rows already read (tests use it)
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

REFERENCE_CSV = Path(__file__).resolve().parent / "papers.csv"
COLUMNS = (
    "paper",
    "model",
    "hub_id",
    "task",
    "method",
    "metric",
    "value",
    "split",
    "setting",
    "budget",
    "measured_by",
    "source",
    "locator",
    "note",
)
REQUIRED = tuple(c for c in COLUMNS if c != "note")
SPLITS = ("validation", "test", "unstated")
"""``unstated``: the source does not say which split the number is on (it is shown as such)."""
PRIMARY, SECONDARY = "primary", "secondary"
"""``measured_by``: ``primary``, or ``secondary: <who ran it>`` when ``source`` quotes another paper."""

# owner/repo:path@<40-hex commit> (a repository file at a fixed commit) or an http(s) URL
_SOURCE = re.compile(r"^([\w.-]+/[\w.-]+:[^@\s]+@[0-9a-f]{40}|https?://\S+)$")
KEY = ("paper", "hub_id", "task", "method", "metric", "split")
"""One number per key: a paper's dev and test numbers of the same cell are two rows."""


class ReferenceError(ValueError):
    """The reference table is malformed; the message names file:line and the field."""


def _registered_methods() -> set[str]:
    import methods

    return set(methods.METHODS)


def _task_metric_keys() -> dict[str, set[str]]:
    """task name -> metric keys its records carry (the task config's metrics, expanded)."""
    from bench.tasks.metrics import METRICS

    return {
        task: {key for name in metrics for key in (METRICS[name].keys if name in METRICS else (name,))}
        for task, (metrics, _) in _task_metric_declarations().items()
    }


def task_primary_metrics() -> dict[str, str]:
    """task name -> its primary metric key (``primary_metric`` in ``conf/task/<task>.yaml``)."""
    return {task: primary for task, (_, primary) in _task_metric_declarations().items()}


def _task_metric_declarations() -> dict[str, tuple[tuple[str, ...], str]]:
    """task name -> (its ``metric`` list, its ``primary_metric``), from ``conf/task/*.yaml``.

    A report reads these a dozen times; reading the task YAMLs each time cost ~0.27 s a call. The cache is
    keyed on the files' names and mtimes, so an added or edited task config is read again."""
    from bench.tasks import CONF_DIR

    return dict(_read_metric_declarations(tuple((p, p.stat().st_mtime_ns) for p in sorted(CONF_DIR.glob("*.yaml")))))


@functools.lru_cache(maxsize=4)
def _read_metric_declarations(files: tuple[tuple[Path, int], ...]) -> tuple[tuple[str, tuple], ...]:
    from omegaconf import OmegaConf

    declared = []
    for path, _ in files:
        config = OmegaConf.load(path)
        declared.append((path.stem, (tuple(config.get("metric") or ()), str(config.get("primary_metric")))))
    return tuple(declared)


def _check_row(row: dict[str, Any], where: str, methods: set[str], tasks: dict[str, set[str]]) -> float:
    """The row's value as a float, or ReferenceError naming the first bad field."""
    for column in REQUIRED:
        if not str(row.get(column) or "").strip():
            raise ReferenceError(f"{where}: field '{column}' is empty")
    if row["method"] not in methods:
        raise ReferenceError(
            f"{where}: field 'method' = {row['method']!r} is not a registered method ({sorted(methods)})"
        )
    if row["task"] not in tasks:
        raise ReferenceError(f"{where}: field 'task' = {row['task']!r} is not a task in conf/task/")
    if row["metric"] not in tasks[row["task"]]:
        raise ReferenceError(
            f"{where}: field 'metric' = {row['metric']!r} is not a metric of task "
            f"{row['task']} ({sorted(tasks[row['task']])})"
        )
    if row["split"] not in SPLITS:
        raise ReferenceError(f"{where}: field 'split' = {row['split']!r}; choices: {list(SPLITS)}")
    kind, _, who = row["measured_by"].partition(":")
    if not (row["measured_by"] == PRIMARY or (kind == SECONDARY and who.strip())):
        raise ReferenceError(
            f"{where}: field 'measured_by' = {row['measured_by']!r}; choices: '{PRIMARY}' or "
            f"'{SECONDARY}: <who ran it>' (source is then the quoting document)"
        )
    if not _SOURCE.match(row["source"]):
        raise ReferenceError(
            f"{where}: field 'source' = {row['source']!r} is neither owner/repo:path@<commit> nor an http(s) URL"
        )
    try:
        value = float(row["value"])
    except ValueError:
        raise ReferenceError(f"{where}: field 'value' = {row['value']!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ReferenceError(f"{where}: field 'value' = {value} is outside 0..100 (scores are in percent)")
    return value


def validate_rows(rows: Iterable[dict[str, Any]], path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """Check every row (line numbers count the header as line 1) and return them as a DataFrame;
    ``value`` is the number, ``value_text`` the digits as published (so 77.0 is not shown as 77)."""
    methods, tasks = _registered_methods(), _task_metric_keys()
    seen: dict[tuple, int] = {}
    clean = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        value = _check_row(row, where, methods, tasks)
        key = tuple(row[k] for k in KEY)
        if key in seen:
            raise ReferenceError(f"{where}: duplicate of line {seen[key]} ({', '.join(KEY)} = {key})")
        seen[key] = line
        text = {c: str(row.get(c) or "").strip() for c in COLUMNS}
        clean.append({**text, "value": value, "value_text": text["value"]})
    return pd.DataFrame(clean, columns=[*COLUMNS, "value_text"])


def load_reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """The reference table, validated: one row per paper × model × task × method × metric × split."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            if header != list(COLUMNS):
                raise ReferenceError(f"{path}:1: header {header} != expected {list(COLUMNS)}")
            rows = list(reader)
    except OSError as exc:
        raise ReferenceError(f"{path}: cannot read ({exc.strerror})") from None
    return validate_rows(rows, path)
