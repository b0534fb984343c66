"""Reading run records (``result.json``) into one flat DataFrame.

A record is the only thing the report reads.  Every ``**/result.json`` under the runs
directory becomes one row; a file that cannot be read becomes a row with status
``"unreadable"`` so one bad file never hides the others.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.record import SCHEMA_VERSION
from bench.transfer import read_transfers

REQUIRED_KEYS = ("status", "method", "model", "task", "seed", "metrics")
"""Top-level keys without which a record cannot be placed in any table."""

VALIDATION_SPLITS = frozenset({"validation", "val", "dev", "eval"})
"""History ``split`` values that count as validation (an entry without ``split`` counts too)."""

TIME_TO_BEST_FRACTION = 0.95
"""Cost table: time until validation first reaches this fraction of the run's best score."""

# Nested values kept whole: lists and free-form configs would explode into hundreds of columns.
_KEEP_WHOLE = frozenset(
    {"metrics.history", "metrics.by_length", "metrics.wording", "provenance.config", "provenance.overrides", "hparams"}
)
# <method>/<model>/<task>/[<hparams slug, which always holds "=">/]seed=<n>/result.json
_PATH_LAYOUT = re.compile(
    r"(?P<method>[^/=]+)/(?P<model>[^/=]+)/(?P<task>[^/=]+)/(?:[^/]*=[^/]*/)?"
    r"seed=(?P<seed>-?\d+)/result\.json$"
)


class ReportError(Exception):
    """The report cannot be built at all (missing or empty runs directory)."""


def is_finite(value: Any) -> bool:
    """True for a real, finite number (bools are not scores)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, keeping :data:`_KEEP_WHOLE` values intact."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in _KEEP_WHOLE:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _unreadable(path: Path, reason: str) -> dict[str, Any]:
    """A placeholder row; method/model/task/seed come from the directory layout when it matches."""
    row: dict[str, Any] = {"status": "unreadable", "error": f"{path}: {reason}"}
    match = _PATH_LAYOUT.search(path.as_posix())
    if match:
        row.update(match.groupdict())
        row["seed"] = int(row["seed"])
    return row


def read_report_row(path: Path) -> dict[str, Any]:
    """One flattened record, or an ``unreadable`` row naming the file and the reason."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _unreadable(path, f"malformed JSON ({str(exc).splitlines()[0]})")
    if not isinstance(record, dict):
        return _unreadable(path, "top level is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing or not isinstance(record.get("metrics"), dict):
        return _unreadable(path, f"missing key(s) {missing or ['metrics (object)']}")
    if record.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        # a newer writer's fields may mean something else: listed, never averaged or chosen
        return _unreadable(path, f"unknown schema {record['schema']!r} (this report reads {SCHEMA_VERSION})")
    return flatten(record)


def _is_validation(entry: dict[str, Any]) -> bool:
    return str(entry.get("split", "validation")).lower() in VALIDATION_SPLITS


def time_to_fraction(
    history: Any, metric: str, best: Any, train_time_s: Any, fraction: float = TIME_TO_BEST_FRACTION
) -> float:
    """Seconds of training until validation ``metric`` first reaches ``fraction`` × the best.

    The best is the record's ``metrics.best[metric]`` (the history's best when absent).  An
    entry's ``time_s`` is used when present; otherwise ``train_time_s × step / last_step``
    with ``last_step`` the largest step in the history.  NaN when it cannot be told.  For a
    lower-is-better metric (:func:`direction_sign`) "reaches" means falls to the best / ``fraction``.
    """
    higher = direction_sign(metric) > 0
    if not isinstance(history, list):
        return math.nan
    entries = [
        h
        for h in history
        if isinstance(h, dict) and _is_validation(h) and is_finite(h.get(metric)) and is_finite(h.get("step"))
    ]
    if not entries:
        return math.nan
    if not is_finite(best):
        best = (max if higher else min)(h[metric] for h in entries)
    last_step = max(h["step"] for h in history if isinstance(h, dict) and is_finite(h.get("step")))
    for entry in sorted(entries, key=lambda h: h["step"]):
        if entry[metric] >= fraction * best if higher else entry[metric] <= best / fraction:
            if is_finite(entry.get("time_s")):
                return float(entry["time_s"])
            if is_finite(train_time_s) and last_step > 0:
                return float(train_time_s) * entry["step"] / last_step
            return math.nan
    return math.nan


def direction_sign(metric: Any) -> float:
    """+1.0 where larger scores of ``metric`` are better, -1.0 where smaller are, as the metric registry
    declares (bench.tasks.metrics); +1.0 for a key it does not know (a record from before the key was
    registered, or none): every metric recorded before directions were declared was maximised."""
    from bench.tasks.metrics import MINIMIZE, metric_direction

    try:
        return -1.0 if metric_direction(str(metric)) == MINIMIZE else 1.0
    except ValueError:
        return 1.0


def _score(row: pd.Series, which: str) -> float:
    value = row.get(f"metrics.{which}.{row.get('metrics.primary')}")
    return float(value) if is_finite(value) else math.nan


def hparams_label(hparams: Any) -> str:
    """``"lr=0.01, num_virtual_tokens=10"`` from a record's ``hparams`` ({} or absent: ``""``, the defaults).

    Keys are dotted (``trainer.lr``); the last part names a key unless two keys share it.
    """
    if not isinstance(hparams, dict) or not hparams:
        return ""
    leaves = [str(key).rsplit(".", 1)[-1] for key in hparams]
    names = [leaf if leaves.count(leaf) == 1 else str(key) for key, leaf in zip(hparams, leaves)]
    return ", ".join(f"{name}={value}" for name, value in sorted(zip(names, hparams.values())))


def _flag(value: Any) -> bool | None:
    """A diagnostics boolean, None when the record does not say (older records, failed runs)."""
    return bool(value) if isinstance(value, (bool, np.bool_)) else None


def _problem(row: pd.Series) -> str:
    """Why a row is left out of the averages ('' when it is used)."""
    if row["status"] != "ok":
        error = row.get("error")
        return str(error) if isinstance(error, str) and error else f"status {row['status']}"
    if not isinstance(row.get("metrics.primary"), str):
        return "status ok but metrics.primary is missing"
    if math.isnan(row["score_final"]):
        return f"status ok but no finite final {row['metrics.primary']}"
    return ""


HP_PREFIX = "hp."
"""Typed hyperparameter columns: ``hp.<key>`` for each key of the records' ``hparams`` (``hp.trainer.lr``)."""


def hparam_columns(hparams: pd.Series) -> pd.DataFrame:
    """One column per hyperparameter key of any record, ``hp.<key>``, holding the value as recorded.

    pandas types each column from its values (``float64`` for ``hp.trainer.lr``, ``int64`` for an integer
    setting every run names, ``str``/object for choices such as ``hp.trainer``), so they sort, filter and
    group as numbers. A run that does not name a key ran the composed default there: NaN/None (the record
    says which default only in ``provenance.config``).
    """
    settings = [value if isinstance(value, dict) else {} for value in hparams]
    keys = sorted({str(key) for setting in settings for key in setting})
    columns = {f"{HP_PREFIX}{key}": pd.Series([s.get(key) for s in settings], index=hparams.index) for key in keys}
    return pd.DataFrame(columns, index=hparams.index)


def _add_derived(df: pd.DataFrame) -> pd.DataFrame:
    """Columns every table uses: scores of the primary metric, usability, time to 95 %; ``hp.*`` columns."""
    df["score_final"] = df.apply(_score, axis=1, which="final")
    df["score_best"] = df.apply(_score, axis=1, which="best")
    df["score_test"] = df.apply(_score, axis=1, which="test")
    df["score_heldout"] = df.apply(_score, axis=1, which="validation_heldout")
    # which way the primary metric is better: every "best" in the tables is the largest score × sign
    df["score_sign"] = [direction_sign(m) for m in df.get("metrics.primary", pd.Series(None, index=df.index))]
    settings = df.get("hparams", pd.Series(None, index=df.index))
    df = pd.concat([df, hparam_columns(settings)], axis=1)
    df["hparams"] = [hparams_label(h) for h in settings]
    df["converged"] = [_flag(v) for v in df.get("diagnostics.converged", pd.Series(None, index=df.index))]
    df["collapsed"] = [_flag(v) for v in df.get("diagnostics.collapsed", pd.Series(None, index=df.index))]
    df["problem"] = df.apply(_problem, axis=1)
    df["usable"] = df["problem"] == ""
    df["time_to_95_s"] = [
        time_to_fraction(
            row.get("metrics.history"),
            row.get("metrics.primary"),
            row["score_best"],
            row.get("throughput.train_time_s"),
        )
        if row["usable"]
        else math.nan
        for _, row in df.iterrows()
    ]
    return df


def load_records(runs_dir: str | Path) -> pd.DataFrame:
    """One row per ``**/result.json`` under ``runs_dir`` with flattened ``a.b.c`` columns; a run with
    transfer records beside it (``transfer/<target>.json``, bench.transfer) gets them whole in ``transfer``.

    Failed, diverged and unreadable records are kept (``status``, ``error``, ``problem``);
    ``usable`` marks the rows that enter averages.  Raises :class:`ReportError` when the
    directory is missing or holds no record.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ReportError(f"runs directory not found: {root}")
    files = sorted(root.glob("**/result.json"))
    if not files:
        raise ReportError(f"no result.json under {root}")
    rows = []
    for path in files:
        row = read_report_row(path)
        row["path"] = path.relative_to(root).as_posix()
        if transfers := read_transfers(path.parent):  # the sibling transfer records (bench.transfer)
            row["transfer"] = transfers
        rows.append(row)
    df = pd.DataFrame(rows)
    for column in ("error", "method", "model", "task", "seed", "metrics.primary"):
        if column not in df:
            df[column] = None
    df = _add_derived(df)
    df.attrs["runs_dir"] = str(root)
    return df


def unreadable(df: pd.DataFrame) -> list[str]:
    """The one-line errors of records that could not be read."""
    return [str(e) for e in df.loc[df["status"] == "unreadable", "error"]]


HISTORY_PLACE = frozenset({"step", "epoch", "split", "time_s"})
"""Fields of a history entry that place it in training; every other numeric field is a score."""
_HISTORY_RUN = ("method", "model", "task", "seed", "hparams", "path")
HISTORY_COLUMNS = (*_HISTORY_RUN, "step", "time_s", "metric", "value")
"""The columns of :func:`history_frame`; ``path`` joins it to :func:`load_runs` (``hp.*`` columns and all)."""


def _entry_metrics(entry: dict[str, Any], primary: Any, metrics: str | Sequence[str] | None) -> list[str]:
    """The names :func:`history_frame` reads from one entry, those with a finite value."""
    if metrics is None:
        names = [str(primary)]
    elif metrics == "all":
        names = sorted(key for key in entry if key not in HISTORY_PLACE)
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
    return [name for name in names if is_finite(entry.get(name))]


def history_frame(df: pd.DataFrame, metrics: str | Sequence[str] | None = None) -> pd.DataFrame:
    """The validation history of usable runs, long form: one row per run × evaluation pass × metric.

    ``metrics``: None, each run's primary metric (the validation-curve figure); ``"all"``, every score an
    entry records (the primary metric's companions, ``eval_loss``, ``train_loss``, ...); or names. Columns:
    :data:`HISTORY_COLUMNS` (``time_s`` NaN where a record has none).
    """
    rows = []
    for _, run in df[df["usable"]].iterrows():
        history = run.get("metrics.history")
        for entry in history if isinstance(history, list) else []:
            if not (isinstance(entry, dict) and _is_validation(entry) and is_finite(entry.get("step"))):
                continue
            time_s = float(entry["time_s"]) if is_finite(entry.get("time_s")) else math.nan
            place = {**{key: run.get(key) for key in _HISTORY_RUN}, "step": entry["step"], "time_s": time_s}
            for name in _entry_metrics(entry, run["metrics.primary"], metrics):
                rows.append({**place, "metric": name, "value": float(entry[name])})
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


IDENTITY_COLUMNS = (
    "method",
    "model",
    "task",
    "seed",
    "hparams",
    "status",
    "error",
    "usable",
    "problem",
    "converged",
    "collapsed",
    "metrics.primary",
    "score_final",
    "score_best",
    "score_test",
    "score_heldout",
    "score_sign",
)
"""The first columns of :func:`load_runs`, in this order (those a frame has)."""
SECTION_ORDER = (
    HP_PREFIX,
    "metrics.",
    "params.",
    "throughput.",
    "diagnostics.",
    "declarations.",
    "adapter.",
    "provenance.",
)
"""Then the record's sections, each block sorted by name; anything else last."""


def _tidy_order(columns: list[str]) -> list[str]:
    first = [c for c in IDENTITY_COLUMNS if c in columns]
    rest = [c for c in columns if c not in first]
    blocks = [sorted(c for c in rest if c.startswith(prefix)) for prefix in SECTION_ORDER]
    placed = {c for block in blocks for c in block}
    return first + [c for block in blocks for c in block] + [c for c in rest if c not in placed]


def load_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One tidy pandas row per run record (``**/result.json``) under ``runs_dir``.

    Columns: ``method, model, task, seed, hparams`` (a label such as ``"lr=0.01"``; ``""`` for the
    composed defaults, when the record has the field), ``status``, ``error``, ``usable`` (enters the
    averages) and ``problem`` (why not), diagnostics flags where recorded, ``score_final`` /
    ``score_best`` (the task's primary metric), then every record field flattened as ``a.b.c``:
    ``metrics.final.<name>``, ``metrics.best.<name>``, ``params.*``, ``throughput.*``,
    ``diagnostics.*``, ``provenance.*`` (``metrics.history`` and ``provenance.config`` stay whole).
    Failed, diverged and unreadable records are rows too.  Every table builder of
    :mod:`bench.report` takes this frame.  Raises :class:`ReportError` when ``runs_dir`` is missing
    or holds no record.
    """
    df = load_records(runs_dir)
    tidy = df[_tidy_order(list(df.columns))]
    tidy.attrs.update(df.attrs)
    return tidy
