"""Transfer ("zero-shot" for an adapter): a finished run's saved adapter scored on another task.

``python -m bench.transfer RUN_DIR task=cb [task.data_dir=...] [split=...] [device=cpu]`` loads
``RUN_DIR/adapter`` (what ``save_adapter=true`` wrote: safetensors + JSON, never a pickle) into the run's
model and method, folds the target task's gold labels into the source's label space with the pair's
declaration in ``conf/transfer.yaml`` (:data:`MAPPING_FILE`, the one place a mapping is declared) and
scores the adapter's predictions with the target task's metrics.  Nothing is trained.

The scores go to a sibling record, ``RUN_DIR/transfer/<target>.json`` (:func:`transfer_path`), never into
``result.json``: the run record is the finished computation its identity (``config_hash``) names, and
rewriting it would risk the one copy of a run that cannot be redone cheaply; a transfer is a separate,
repeatable evaluation with its own inputs (target task, mapping).  The report reads both
(:func:`read_transfers`, :mod:`bench.report.claims`).

This module's top level imports no torch (the report reads :func:`read_transfers`); the evaluation
imports the runner's machinery when it runs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

MAPPING_FILE = Path(__file__).resolve().parents[1] / "conf" / "transfer.yaml"
"""Every (source task, target task) label mapping (see the file's header)."""
TRANSFER_DIR = "transfer"
"""The folder beside ``result.json`` that holds one transfer record per target task."""
TRANSFER_KINDS = ("classification", "token_classification")
"""Task kinds with a fixed label space a mapping can fold; generation and multiple choice have none."""
SCORED_SPLITS = ("test", "validation")
"""The target split scored by default: the first the target task has labels for (the adapter never
trained or selected anything on the target, so its validation split is as unseen as its test split)."""


class TransferError(ValueError):
    """A transfer cannot be run as asked; the message is one line naming the file, field or choice."""


@dataclass(frozen=True)
class LabelMap:
    """One pair's declaration: target label → source label, and source predictions folded before scoring."""

    source: str
    target: str
    labels: dict[str, str]
    predictions: dict[str, str] = field(default_factory=dict)
    why: str = ""
    file: str = str(MAPPING_FILE)

    def check(self, source_names: Sequence[str], target_names: Sequence[str]) -> None:
        """Refuse a target label without a mapping, and a mapping onto a label the source does not have."""
        where = f"{self.file}: pair {self.source} -> {self.target}"
        for label in target_names:
            if label not in self.labels:
                raise TransferError(
                    f"{where}: target label {label!r} is not mapped (map it to one of {list(source_names)})"
                )
        for name, value in [*self.labels.items(), *self.predictions.items()]:
            if value not in source_names:
                raise TransferError(
                    f"{where}: {name!r} maps to {value!r}, not a {self.source} label {list(source_names)}"
                )
        for name in self.predictions:
            if name not in source_names:
                raise TransferError(f"{where}: predictions: {name!r} is not a {self.source} label {list(source_names)}")

    def target_ids(self, source_names: Sequence[str], target_names: Sequence[str]) -> list[int]:
        """Per target label id, the source label id it is scored as."""
        self.check(source_names, target_names)
        return [list(source_names).index(self.labels[label]) for label in target_names]

    def prediction_ids(self, source_names: Sequence[str]) -> list[int]:
        """Per source label id, the source label id a prediction of it is scored as."""
        names = list(source_names)
        return [names.index(self.predictions.get(label, label)) for label in names]


def _pair(entry: Any, index: int, file: str) -> LabelMap:
    where = f"{file}: pairs[{index}]"
    if not isinstance(entry, Mapping):
        raise TransferError(f"{where}: expected a mapping with source, target, labels")
    unknown = sorted(set(entry) - {"source", "target", "labels", "predictions", "why"})
    if unknown:
        raise TransferError(f"{where}: unknown field(s) {unknown} (have source, target, labels, predictions, why)")
    for key in ("source", "target"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise TransferError(f"{where}: field {key!r} must name a task")
    for key in ("labels", "predictions"):
        value = entry.get(key) or {}
        if not isinstance(value, Mapping):
            raise TransferError(f"{where}: field {key!r} must map label names to label names")
        for name, label in value.items():
            if not isinstance(name, str) or not isinstance(label, str):
                raise TransferError(
                    f"{where}: {key}: {name!r}: {label!r} is not a pair of label names "
                    "(quote them: YAML reads yes/no/true/false and numbers as other types)"
                )
    if not entry.get("labels"):
        raise TransferError(f"{where}: field 'labels' is empty")
    return LabelMap(
        entry["source"],
        entry["target"],
        dict(entry["labels"]),
        dict(entry.get("predictions") or {}),
        " ".join(str(entry.get("why") or "").split()),
        file,
    )


def load_mappings(path: str | Path = MAPPING_FILE) -> dict[tuple[str, str], LabelMap]:
    """Every declared pair of ``path``, keyed by (source task, target task); one-line errors on bad input."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise TransferError(f"{path}: cannot read the transfer mappings ({str(error).splitlines()[0]})") from None
    pairs = data.get("pairs") if isinstance(data, Mapping) else None
    if not isinstance(pairs, list):
        raise TransferError(f"{path}: expected a top-level 'pairs' list")
    mappings: dict[tuple[str, str], LabelMap] = {}
    for index, entry in enumerate(pairs):
        pair = _pair(entry, index, str(path))
        if (pair.source, pair.target) in mappings:
            raise TransferError(f"{path}: pairs[{index}]: {pair.source} -> {pair.target} is declared twice")
        mappings[(pair.source, pair.target)] = pair
    return mappings


def find_mapping(source: str, target: str, path: str | Path = MAPPING_FILE) -> LabelMap:
    """The declared mapping of (source, target), or a one-line error listing what is declared."""
    mappings = load_mappings(path)
    if (source, target) not in mappings:
        declared = ", ".join(f"{s} -> {t}" for s, t in mappings) or "none"
        raise TransferError(f"{path}: no label mapping for {source} -> {target} (declared: {declared})")
    return mappings[(source, target)]


def fold_examples(examples: list[dict], kind: str, ids: Sequence[int]) -> list[dict]:
    """Copies of ``examples`` with their gold label (classification) or tags (NER) mapped by ``ids``
    (target id → source id); the inputs are untouched."""
    if kind not in TRANSFER_KINDS:
        raise TransferError(f"task kind {kind!r} has no label space to map (transfer covers {list(TRANSFER_KINDS)})")
    out = []
    for example in examples:
        folded = copy.copy(example)
        if kind == "classification":
            folded["label"] = ids[int(example["label"])]
        else:
            folded["tags"] = [ids[int(tag)] for tag in example["tags"]]
        out.append(folded)
    return out


def fold_predictions(predictions: list, kind: str, ids: Sequence[int]) -> list:
    """The adapter's predictions (source ids) after the pair's ``predictions`` fold; an id past the
    labels (a text-to-text generation naming no label) stays as it is, and is scored wrong."""

    def one(p: Any) -> Any:
        return ids[int(p)] if 0 <= int(p) < len(ids) else p

    if kind == "classification":
        return [one(p) for p in predictions]
    return [[one(t) for t in tags] for tags in predictions]


def transfer_path(run_dir: str | Path, target: str) -> Path:
    """Where the transfer record of ``run_dir``'s adapter on task ``target`` lives."""
    return Path(run_dir) / TRANSFER_DIR / f"{target}.json"


def read_transfers(run_dir: str | Path) -> dict[str, dict] | None:
    """Target task → transfer record of the run in ``run_dir`` (None without any); an unreadable file
    becomes ``{"error": ...}`` so one bad file never hides a run."""
    folder = Path(run_dir) / TRANSFER_DIR
    if not folder.is_dir():
        return None
    records: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            record = {"error": f"{path}: malformed JSON ({str(error).splitlines()[0]})"}
        records[path.stem] = record if isinstance(record, dict) else {"error": f"{path}: not a JSON object"}
    return records or None


def transfer_score(record: Any) -> float | None:
    """The primary metric of a transfer record (None when it has none)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("metrics"), Mapping):
        return None
    value = record["metrics"].get(record.get("primary"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- the evaluation (imports torch and the runner's machinery when it runs) -------------------------

OPTIONS = ("split", "device", "dtype", "mapping", "trainer.eval_batch_size", "trainer.max_eval_samples")
"""Command-line settings besides ``task=NAME`` and ``task.<field>=VALUE`` (the target task's config)."""


@dataclass
class Request:
    """One transfer: the source run, the target task (name + field overrides) and how to evaluate."""

    run_dir: Path
    task: str
    task_overrides: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, argv: Sequence[str]) -> Request:
        """``RUN_DIR task=NAME [task.a.b=V ...] [split=... device=... ...]`` (values read as YAML)."""
        if not argv or _is_setting(argv[0]):  # a run folder's own name holds "=" (seed=0, lr=...)
            raise TransferError("usage: python -m bench.transfer RUN_DIR task=NAME [task.FIELD=VALUE ...] " + _usage())
        request = cls(Path(argv[0]), "")
        for arg in argv[1:]:
            key, eq, text = arg.partition("=")
            if not eq:
                raise TransferError(f"argument {arg!r}: expected KEY=VALUE ({_usage()})")
            value = yaml.safe_load(text) if text else None
            if key == "task":
                request.task = str(value)
            elif key.startswith("task."):
                request.task_overrides[key[len("task.") :]] = value
            elif key in OPTIONS:
                request.options[key] = value
            else:
                raise TransferError(f"argument {arg!r}: unknown setting {key!r} ({_usage()})")
        if not request.task:
            raise TransferError("missing task=NAME: the target task to score the adapter on")
        return request


def _is_setting(arg: str) -> bool:
    key = arg.partition("=")[0]
    return "=" in arg and (key == "task" or key.startswith("task.") or key in OPTIONS)


def _usage() -> str:
    return "settings: task=NAME, task.FIELD=VALUE, " + ", ".join(f"{o}=..." for o in OPTIONS)


def _set_dotted(config: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[leaf] = value


def source_run(run_dir: Path) -> dict[str, Any]:
    """The finished run's record, checked to have an adapter this command can load."""
    path = run_dir / "result.json"
    if not path.is_file():
        raise TransferError(f"{path}: no run record (give the folder of a finished run)")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("status") != "ok":
        raise TransferError(
            f"{path}: status {record.get('status')!r}: only a finished (ok) run has an adapter to transfer"
        )
    adapter = run_dir / str((record.get("adapter") or {}).get("path") or "adapter")
    if not (adapter / "adapter.safetensors").is_file() or not (adapter / "adapter.json").is_file():
        raise TransferError(f"{adapter}: no adapter.safetensors + adapter.json (train the run with save_adapter=true)")
    return record


def source_labels(config: Mapping[str, Any]) -> list[str]:
    """The label names the adapter predicts: the source task's config, else the task as its loader builds it."""
    names = (config.get("task") or {}).get("label_names")
    if names:
        return list(names)
    from bench.tasks import load_task

    built = load_task(config["task"]).label_names
    if not built:
        raise TransferError(f"source task {config['task'].get('name')!r} has no label names to map onto")
    return list(built)


def target_task(request: Request, kind: str):
    """The target task, loaded with the request's overrides; it must be of the source's kind."""
    from bench.tasks import cap_eval_splits, load_task, task_config

    config = task_config(request.task)
    for key, value in request.task_overrides.items():
        _set_dotted(config, key, value)
    task = load_task(config)
    if task.kind != kind:
        raise TransferError(f"task {task.name} is {task.kind}, the adapter was trained for {kind}")
    cap_eval_splits(task, request.options.get("trainer.max_eval_samples"))
    return task


def _same_reading(source: Mapping[str, Any], target: Mapping[str, Any]) -> None:
    """The adapter must read the target's inputs as it read its own (e.g. T5's one-text format)."""
    mine, theirs = source.get("input_format") or "plain", target.get("input_format") or "plain"
    if mine != theirs:
        raise TransferError(
            f"the run read its inputs as input_format={mine}, task {target.get('name')} as {theirs}: "
            f"add task.input_format={mine}"
        )


def _run_config(record: Mapping[str, Any], request: Request) -> dict[str, Any]:
    """The source run's config, evaluated here in one process on the requested device and dtype."""
    config = copy.deepcopy(record["provenance"]["config"])
    config["distributed"] = {}
    for key in ("device", "dtype"):
        if request.options.get(key):
            config[key] = request.options[key]
    if request.options.get("trainer.eval_batch_size"):
        config["trainer"]["eval_batch_size"] = int(request.options["trainer.eval_batch_size"])
    return config


def load_adapted(config: dict[str, Any], adapter_dir: Path, kind: str, label_names: list[str]):
    """The run's model and method rebuilt from its config, with the saved adapter loaded (safetensors)."""
    from bench.models import load_model
    from bench.runner import _place, seed_everything  # the run's own placement: frozen in dtype, trained fp32
    from bench.settings import check_run_settings
    from methods import get_method
    from methods.model import AdaptedModel

    checked = check_run_settings(config)
    meta = json.loads((adapter_dir / "adapter.json").read_text(encoding="utf-8"))
    if meta.get("method") != config["method"]["name"] or meta.get("num_labels") != len(label_names):
        raise TransferError(
            f"{adapter_dir / 'adapter.json'}: method {meta.get('method')!r} with {meta.get('num_labels')} labels "
            f"does not match the run ({config['method']['name']!r}, {len(label_names)} labels {label_names})"
        )
    method = get_method(config["method"]["name"]).from_dict({k: v for k, v in config["method"].items() if k != "name"})
    loaded = load_model(checked.model, kind)
    seed_everything(int(config["seed"]))
    model = AdaptedModel(
        loaded.backbone,
        method,
        kind,
        num_labels=len(label_names),
        tokenizer=loaded.tokenizer,
        seed=int(config["seed"]),
        label_names=label_names,
        pooling=checked.model.pooling,
        target_bos=checked.model.target_bos,
    )
    _place(model, checked.device, checked.dtype)
    model.load_adapter(adapter_dir)
    return model, loaded, checked, method


def score(adapted: tuple, view, split: str, prediction_ids: list[int], seed: int) -> dict[str, float]:
    """The target split's metrics (``adapted``: what :func:`load_adapted` returns), the adapter's
    predictions folded by the pair, in the source's labels."""
    from bench.data import encode_split
    from bench.train import Runtime, Splits, TrainResult, predict

    model, loaded, checked, method = adapted
    runtime = Runtime(checked.trainer.with_method_lr(method.lr), checked.device, checked.dtype, seed)
    max_length = int(view.config.get("max_length") or 256)
    encoded = encode_split(view, loaded.tokenizer, split, max_length, loaded.decoder, loaded.seq2seq)
    splits = Splits({split: encoded}, loaded.tokenizer.pad_token_id, loaded.tokenizer.padding_side == "left")
    predictions, loss = predict(model, view, encoded, splits, runtime, loaded.tokenizer, TrainResult())
    words = getattr(model, "label_words", None)
    folded = fold_predictions(predictions, view.kind, prediction_ids)
    metrics = view.compute_metrics(folded, split, len(words) if words is not None else None)
    # the run's own eval loss, here of the source logits against the folded gold labels
    return {**metrics, **({"eval_loss": loss} if loss is not None else {})}


def run_transfer(request: Request) -> tuple[dict[str, Any], Path]:
    """Score ``request.run_dir``'s adapter on the target task; write and return its transfer record."""
    from bench.record import write_record

    started = _now()
    record = source_run(request.run_dir)
    config = _run_config(record, request)
    kind = config["task"]["kind"]
    if kind not in TRANSFER_KINDS:
        raise TransferError(f"the run's task is {kind}: transfer needs a label space to map ({list(TRANSFER_KINDS)})")
    names = source_labels(config)
    task = target_task(request, kind)
    _same_reading(config["task"], task.config)
    mapping_file = Path(request.options.get("mapping") or MAPPING_FILE)
    pair = find_mapping(config["task"]["name"], task.name, mapping_file)
    target_ids = pair.target_ids(names, task.label_names or [])
    split = _split(task, request.options.get("split"))
    folded = fold_examples(task.splits[split], kind, target_ids)
    view = dataclasses.replace(task, label_names=names, splits={split: folded})
    adapter_dir = request.run_dir / str(record["adapter"].get("path") or "adapter")
    adapted = load_adapted(config, adapter_dir, kind, names)
    metrics = score(adapted, view, split, pair.prediction_ids(names), int(config["seed"]))
    out = {
        "schema": 1,
        "kind": "transfer",
        "source": {
            **{k: record.get(k) for k in ("method", "model", "task", "seed")},
            "config_hash": record["provenance"].get("config_hash"),
            "adapter_sha256": _sha256(adapter_dir / "adapter.safetensors"),
        },
        "target": {"task": task.name, "split": split, "examples": len(folded), "config": task.config},
        "mapping": {**dataclasses.asdict(pair), "file": _shown(mapping_file), "source_labels": names},
        "primary": task.primary_metric,
        "metrics": metrics,
        "provenance": _provenance(adapted[2], config, started),
    }
    return out, write_record(out, transfer_path(request.run_dir, task.name))


def _provenance(checked, config: Mapping[str, Any], started: str) -> dict[str, Any]:
    from bench.record import git_state

    sha, dirty = git_state()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "device": str(checked.device),
        "dtype": config.get("dtype"),
        "started_at": started,
        "finished_at": _now(),
    }


def _split(task, wanted: str | None) -> str:
    if wanted:
        if wanted not in task.splits:
            raise TransferError(
                f"split={wanted}: task {task.name} has no labelled {wanted!r} (have {sorted(task.splits)})"
            )
        return wanted
    for split in SCORED_SPLITS:
        if task.splits.get(split):
            return split
    raise TransferError(f"task {task.name} has no labelled split among {list(SCORED_SPLITS)}")


def _shown(path: Path) -> str:
    """A path as a record shows it: repository-relative when inside the repository."""
    root = MAPPING_FILE.parents[1]
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def main(argv: Sequence[str] | None = None) -> int:
    """The command: one line per transfer written, one line of error otherwise (exit 2)."""
    from bench.record import error_line

    try:
        record, path = run_transfer(Request.parse(list(sys.argv[1:] if argv is None else argv)))
    except Exception as error:  # noqa: BLE001 — bad input ends as one line, never a traceback
        print(f"error: {error if isinstance(error, TransferError) else error_line(error)}", file=sys.stderr)
        return 2
    primary = record["primary"]
    source = record["source"]
    print(
        f"transfer {source['method']}/{source['model']}/{source['task']}/seed={source['seed']} -> "
        f"{record['target']['task']} [{record['target']['split']}, {record['target']['examples']} examples]: "
        f"{primary}={record['metrics'].get(primary):.4f} -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
