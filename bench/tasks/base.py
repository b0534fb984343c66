"""Shared pieces of the task layer: TaskData, errors, readers, subsampling and the eval cap.

Every loader hook returns a ``Built`` (label names plus, per split, the converted examples or
``None`` when the split is absent); ``finalize`` turns it into a ``TaskData`` after applying the
``k_shot`` / ``max_train_samples`` options, so those options behave the same for every task.
The evaluation cap is a trainer setting (``trainer.max_eval_samples``) applied by
``cap_eval_splits``, which never cuts a group (a MultiRC question) in half.
"""

from __future__ import annotations

import contextlib
import json
import random
import string
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tasks.holdout import apply_holdout, split_validation
from bench.tasks.metrics import ScoringInput, score_split

SPLITS = ("train", "validation", "test")
HELDOUT = "validation_heldout"
"""The part of the validation file that ``task.split_validation`` keeps out of selection (reported once)."""
REPORT_SPLITS = ("test", HELDOUT)
"""Splits scored once, at the best validation checkpoint: never used to choose anything."""
# Hub repos name their splits inconsistently; everything else (GEM challenge sets...) is ignored.
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}

DEFAULTS: dict[str, Any] = {
    "data_dir": None,
    "hub": None,
    "max_train_samples": None,
    "k_shot": None,
    "max_length": 256,
    "seed": 0,
    "label_names": None,
    "holdout": None,
    "split_validation": None,
    "input_format": "plain",
}
INPUT_FORMATS = {"plain": None, "t5": ("superglue",)}
"""``task.input_format`` -> the loaders that write it (None: every loader). ``plain``: text / text_pair as
the tokenizer joins them; ``t5``: T5's SuperGLUE input, ``rte hypothesis: … premise: …``, one text
(bench.tasks.superglue)."""

RawRow = tuple[str, dict]  # (where: "file:line" or "hub row", a row as read from the source)
Item = tuple[str, dict, bool]  # (where, example, labeled)


class TaskDataError(ValueError):
    """Bad task data or configuration; the message is one line naming file, line and field."""


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (data kept going, but the user should know)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass
class FileRows:
    """Rows a reader got from one split's file(s), plus counts of what it left out and why."""

    rows: list[RawRow]
    notes: dict[str, int] = field(default_factory=dict)  # e.g. {"skipped": 2}


@dataclass
class Built:
    """What a loader hook hands back to ``finalize``."""

    label_names: list[str] | None
    splits: dict[str, list[dict] | None]  # None: split absent (missing or unlabeled)
    rows_read: dict[str, int] = field(default_factory=dict)  # raw rows read per split
    extra_counts: dict[str, int] = field(default_factory=dict)  # e.g. skipped_<split>


TASK_LOADERS: dict[str, Callable[[dict], Built]] = {}
"""Task config ``loader`` -> the hook that builds its splits; each loader module registers its own."""


def register_loader(name: str) -> Callable[[Callable[[dict], Built]], Callable[[dict], Built]]:
    """Decorator: the hook for task configs with ``loader: <name>`` (as ``@register`` adds a method)."""

    def add(hook: Callable[[dict], Built]) -> Callable[[dict], Built]:
        if name in TASK_LOADERS:
            raise TaskDataError(f"task loader {name!r} registered twice")
        TASK_LOADERS[name] = hook
        return hook

    return add


@dataclass
class TaskData:
    """A loaded task: examples per split plus the task's official metrics.

    ``splits`` holds "train", "validation" and "test" (only when labeled); ``counts`` holds the
    examples kept per split, ``source_<split>`` (before subsampling) and ``rows_<split>``
    (raw rows read: jsonl lines, sentences, csv rows, XML entries...).
    """

    name: str
    kind: str
    label_names: list[str] | None
    splits: dict[str, list[dict]]
    counts: dict[str, int]
    absent_splits: list[str]
    primary_metric: str
    config: dict

    @property
    def num_labels(self) -> int | None:
        """Classes; for multiple choice the most choices an example offers (text-to-text label words)."""
        if self.kind == "multiple_choice":
            return max((len(ex["pairs"]) for examples in self.splits.values() for ex in examples), default=None)
        return len(self.label_names or []) or None

    def compute_metrics(
        self, predictions: list, split: str, invalid: int | None = None, indices: Sequence[int] | None = None
    ) -> dict[str, float]:
        """Score ``predictions`` (one per example of ``split``, in order) with the task's metrics.

        ``invalid``: the prediction that stands for a text-to-text generation naming no label (wrong).
        ``indices``: score only these examples of the split (e.g. one length bucket).
        """
        if split not in self.splits:
            raise ValueError(f"task {self.name}: no labeled split {split!r} (have {sorted(self.splits)})")
        examples = self.splits[split]
        if indices is not None:
            predictions, examples = [predictions[i] for i in indices], [examples[i] for i in indices]
        given = ScoringInput(list(predictions), examples, self.label_names, self.name, invalid)
        return score_split(self.config["metric"], given)


def get_field(row: Mapping, key: str, where: str, types: type | tuple = object) -> Any:
    """``row[key]``, raising a one-line TaskDataError when absent, null or of the wrong type."""
    if not isinstance(row, Mapping) or key not in row or row[key] is None:
        raise TaskDataError(f"{where}: missing field {key!r}")
    value = row[key]
    if not isinstance(value, types):
        raise TaskDataError(
            f"{where}: field {key!r} has type {type(value).__name__}, expected {getattr(types, '__name__', types)}"
        )
    return value


def label_id(value: Any, label_names: list[str], where: str, field_name: str = "label") -> int | None:
    """Map a label from jsonl (string / boolean) or Hub parquet (class id) onto ``label_names``.

    Returns None for "no label" (field absent, null, or the Hub's -1 for unlabeled test rows).
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == -1):
        return None
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        lowered = [n.lower() for n in label_names]
        if value.lower() in lowered:
            return lowered.index(value.lower())
    elif isinstance(value, int) and 0 <= value < len(label_names):
        return value
    raise TaskDataError(f"{where}: field {field_name!r} has unknown label {value!r} (expected one of {label_names})")


def parse_json(text: str, path: Path, first_line: int = 1) -> Any:
    """``json.loads``; a syntax error becomes ``file:line:column: malformed JSON: reason``."""
    try:
        # trailing whitespace cut first: a truncated line's error is at its end, not on the line after it
        return json.loads(text.rstrip())
    except json.JSONDecodeError as exc:
        raise TaskDataError(f"{path}:{first_line + exc.lineno - 1}:{exc.colno}: malformed JSON: {exc.msg}") from None


def undecodable(path: Path) -> TaskDataError:
    """``file:line:column: not UTF-8`` for a file with bytes UTF-8 cannot decode (the codec's own error
    names only an offset in the chunk it was given, not the file or the line)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return TaskDataError(
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[exc.start]:02x}: {exc.reason}); "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    return TaskDataError(f"{path}: not UTF-8 text")


@contextlib.contextmanager
def utf8(path: Path) -> Iterator[None]:
    """Around a reader of ``path``: a UnicodeDecodeError becomes :func:`undecodable`'s one line."""
    try:
        yield
    except UnicodeDecodeError:
        raise undecodable(path) from None


def read_jsonl(path: Path) -> list[RawRow]:
    """Read a jsonl file into (where, row) pairs; malformed lines raise TaskDataError."""
    rows = []
    with utf8(path), open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = parse_json(line, path, number)
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            rows.append((f"{path}:{number}", row))
    return rows


def data_dir(cfg: Mapping) -> Path:
    """The configured ``data_dir``; a TaskDataError when it does not exist."""
    path = Path(str(cfg["data_dir"])).expanduser()
    if not path.is_dir():
        raise TaskDataError(f"task {cfg['name']}: data_dir {path} does not exist")
    return path


def find_split_files(cfg: Mapping, base: Path) -> dict[str, Path | None]:
    """Resolve ``cfg['files'][split]``: the first existing candidate (relative to ``base``, or absolute).

    A folder without a train file is an evaluation-only layout (train absent), accepted when a
    validation or test file is there; a folder with none of them is an error.
    """
    found: dict[str, Path | None] = {}
    for split in SPLITS:
        candidates = (cfg.get("files") or {}).get(split) or []
        if isinstance(candidates, str):
            candidates = [candidates]
        found[split] = next((base / c for c in candidates if (base / c).exists()), None)
    if not any(found.values()):
        files = cfg.get("files") or {}
        raise TaskDataError(
            f"task {cfg['name']}: missing file: none of {files.get('train')} (train) "
            f"nor of {files.get('validation')} / {files.get('test')} in {base}"
        )
    return found


def read_split_files(
    cfg: Mapping, reader: Callable[[Path], list[RawRow] | FileRows]
) -> tuple[dict[str, tuple[list[RawRow], Path] | None], dict[str, int], dict[str, int]]:
    """Read each split's file in ``data_dir`` with ``reader``.

    Returns per split (rows, the file) or None when absent, the raw row count per split, and the
    reader's notes as ``<note>_<split>`` counts (e.g. ``skipped_validation``).
    """
    found: dict[str, tuple[list[RawRow], Path] | None] = {}
    counts: dict[str, int] = {}
    notes: dict[str, int] = {}
    for split, path in find_split_files(cfg, data_dir(cfg)).items():
        if path is None:
            found[split] = None
            continue
        read = reader(path)
        rows = read.rows if isinstance(read, FileRows) else read
        if isinstance(read, FileRows):
            notes.update({f"{name}_{split}": value for name, value in read.notes.items()})
        counts[split] = len(rows)
        found[split] = (rows, path)
    return found, counts, notes


def load_hub_dataset(cfg: Mapping) -> dict[str, tuple[list[RawRow], Any]]:
    """Load ``cfg['hub']`` with ``datasets.load_dataset``: {split: (rows, features)}."""
    import datasets  # imported here so tests can monkeypatch datasets.load_dataset

    hub = {k: v for k, v in dict(cfg.get("hub") or {}).items() if v is not None}
    if "path" not in hub:
        raise TaskDataError(f"task {cfg['name']}: no data_dir and no hub.path configured")
    path = hub.pop("path")
    label = f"{path}/{hub['name']}" if hub.get("name") else path
    try:
        loaded = datasets.load_dataset(path, **hub)
    except Exception as exc:  # any Hub/network failure becomes one actionable line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TaskDataError(
            f"hub {label}: load_dataset failed ({type(exc).__name__}: {first}); "
            f"set task.data_dir=PATH to use local files"
        ) from exc
    out = {}
    for split, rows in loaded.items():
        canonical = SPLIT_ALIASES.get(split)
        if canonical is None:
            continue
        located = [(f"hub {label}[{split}] row {i}", dict(row)) for i, row in enumerate(rows)]
        out[canonical] = (located, getattr(rows, "features", None))
    if "train" not in out:
        raise TaskDataError(f"hub {label}: no train split (got {sorted(loaded.keys())})")
    return out


def feature_names(features: Any, key: str) -> list[str] | None:
    """Class names of a Hub ClassLabel column (also inside Sequence/List), else None."""
    if features is None or key not in features:
        return None
    feature = features[key]
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) / List(ClassLabel)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def remap_ids(
    ids: list[int], hub_names: list[str] | None, label_names: list[str], where: str, field_name: str
) -> list[int]:
    """Translate Hub class ids to indices of ``label_names`` (through the Hub's names if known)."""
    out = []
    for i in ids:
        name = hub_names[i] if hub_names and isinstance(i, int) and 0 <= i < len(hub_names) else i
        mapped = label_id(name, label_names, where, field_name)
        if mapped is None:  # a sequence cannot be partly unlabeled
            raise TaskDataError(f"{where}: field {field_name!r} has unknown label {i!r}")
        out.append(mapped)
    return out


def collect(
    rows: Iterable[RawRow], convert: Callable[[dict, str], Iterable[Item]], source: str, label_field: str = "label"
) -> list[dict] | None:
    """Convert rows to examples; all unlabeled -> None (absent split); mixed -> error."""
    items = [item for where, row in rows for item in convert(row, where)]
    if not items:
        raise TaskDataError(f"{source}: empty split (no examples)")
    labeled = [item for item in items if item[2]]
    if not labeled:
        return None
    if len(labeled) != len(items):
        where = next(item[0] for item in items if not item[2])
        raise TaskDataError(f"{where}: missing field {label_field!r} (other examples of {source} are labeled)")
    return [item[1] for item in items]


def normalize_word(word: str) -> str:
    """Lower-case a word and strip surrounding punctuation (for span checks)."""
    return word.strip(string.punctuation + "“”‘’").lower()


def _k_shot(examples: list[dict], k: int, rng: random.Random, kind: str, where: str) -> list[dict]:
    """k examples per class (classification, fixed-size multiple choice); k in total otherwise."""
    sizes = {len(ex["pairs"]) for ex in examples} if kind == "multiple_choice" else set()
    per_class = kind == "classification" or (kind == "multiple_choice" and len(sizes) == 1)
    if not per_class:
        if k > len(examples):
            raise TaskDataError(f"{where}: k_shot={k} but the train split has {len(examples)} examples")
        return [examples[i] for i in sorted(rng.sample(range(len(examples)), k))]
    by_class: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(ex["label"], []).append(i)
    if len(by_class) == 1:  # e.g. FewGLUE's WSC train32: all True; the sample cannot be balanced
        warn(
            f"{where}: k_shot={k}: the train split holds one class only (label {next(iter(by_class))}), "
            f"so the sample has one class"
        )
    chosen = []
    for label in sorted(by_class):
        if len(by_class[label]) < k:
            raise TaskDataError(f"{where}: k_shot={k} but class {label} has {len(by_class[label])} train examples")
        chosen += rng.sample(by_class[label], k)
    return [examples[i] for i in sorted(chosen)]


def head_keeping_groups(examples: list[dict], n: int) -> list[dict]:
    """First n examples, never cutting a "group" (a MultiRC question's answer-options) in half.

    When the n-th example falls inside a group, that partial group is dropped; if it is the
    first group, the whole first group is kept instead (so the result is never empty).
    ReCoRD and generation examples are one per query / input, so they are whole by construction.
    """
    if n >= len(examples) or "group" not in examples[0]:
        return examples[:n]
    keep = examples[:n]
    last = keep[-1]["group"]
    if examples[n]["group"] == last:  # the cut falls inside a group: drop that partial group
        trimmed = [ex for ex in keep if ex["group"] != last]
        keep = trimmed or [ex for ex in examples if ex["group"] == last]
    return keep


def cap_eval_splits(task: TaskData, limit: int | None) -> None:
    """Keep the first ``limit`` examples of every evaluated split (``trainer.max_eval_samples``), groups whole."""
    if not limit:
        return
    for split in ("validation", *REPORT_SPLITS):
        if split in task.splits:
            task.splits[split] = head_keeping_groups(task.splits[split], int(limit))
            task.counts[split] = len(task.splits[split])


def _subsample_train(cfg: dict, examples: list[dict], rng: random.Random) -> list[dict]:
    """Apply ``k_shot`` then ``max_train_samples`` (seeded, original order kept)."""
    if cfg["k_shot"]:
        examples = _k_shot(examples, int(cfg["k_shot"]), rng, cfg["kind"], f"task {cfg['name']}")
    if cfg["max_train_samples"] and cfg["max_train_samples"] < len(examples):
        keep = sorted(rng.sample(range(len(examples)), int(cfg["max_train_samples"])))
        examples = [examples[i] for i in keep]
    return examples


def finalize(cfg: dict, built: Built) -> TaskData:
    """Apply k_shot / max_train_samples, count, and package the TaskData."""
    counts: dict[str, int] = dict(built.extra_counts)
    if held_out := apply_holdout(cfg, built.splits, TaskDataError):  # before any subsampling
        counts["held_out"] = held_out
    if kept_out := split_validation(cfg, built.splits, TaskDataError):
        counts[HELDOUT] = kept_out
    splits: dict[str, list[dict]] = {}
    for split in (*SPLITS, HELDOUT):
        examples = built.splits.get(split)
        if split in built.rows_read:
            counts[f"rows_{split}"] = built.rows_read[split]
        if examples is None:
            continue
        counts[f"source_{split}"] = len(examples)
        if split == "train":
            examples = _subsample_train(cfg, examples, random.Random(cfg["seed"]))
        splits[split] = examples
        counts[split] = len(examples)
    if not splits:
        raise TaskDataError(f"task {cfg['name']}: no split has labeled examples")
    return TaskData(
        name=cfg["name"],
        kind=cfg["kind"],
        label_names=built.label_names,
        splits=splits,
        counts=counts,
        absent_splits=[s for s in SPLITS if s not in splits],
        primary_metric=cfg["primary_metric"],
        config=cfg,
    )
