"""One run: config → task, model, method → train → evaluate → one self-describing record.

Every exception ends as a record with status and a one-line error (the traceback goes to
``error.log`` beside it), so a sweep goes on and no result is lost.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import random
import signal
import socket
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.checkpoint import CHECKPOINT_DIR, Checkpoints, Interrupted, Signals
from bench.data import encode_split, padding_waste
from bench.data_checks import degenerate_data
from bench.diagnostics import PrefixProbe, diverged_diagnostics, run_diagnostics
from bench.distributed import current_group, launch, node_rank
from bench.eval_cache import EvalFeatureCache
from bench.identity import GROUPS_IN_PATH, LOCK_NAME, RunLock, apply_per_method, config_hash, run_label
from bench.measure import peak_memory_bytes, reset_peak_memory, weights_sha256
from bench.record import (
    cpu_description,
    empty_record,
    error_line,
    git_state,
    package_versions,
    read_record,
    write_record,
)
from bench.settings import (  # noqa: F401 — resolve_device/resolve_dtype re-exported for bench.speed
    DistributedConfig,
    ModelConfig,
    RunConfigError,
    SettingsError,
    check_run_settings,
    resolve_device,
    resolve_dtype,
)
from bench.tasks.base import REPORT_SPLITS, warn
from bench.tasks.buckets import input_length, score_by_length
from bench.tasks.wording import perturb_split, perturbations_for
from bench.tracking import SafeTracker, make_tracker
from bench.train import Diverged, Pruned, Runtime, Splits, TrainResult, predict, train
from methods.seq2seq import count_invalid

SKIPPED = "skipped"
INTERRUPTED = "interrupted"
PRUNED = "pruned"


@dataclass
class Outcome:
    """What became of one sweep point: ``ok``/``failed``/``diverged`` (a record was written) or ``skipped``."""

    status: str
    path: Path
    record: dict[str, Any] | None = None
    reason: str | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def up_to_date(record_path: Path, digest: str) -> bool:
    """True when an ok record of the same computation already exists (resume a killed sweep).

    The record's identity is recomputed from the config it stores, under today's declaration of what
    a run computes, rather than read from its ``config_hash``: records written before that declaration
    changed (e.g. when sweep-only blocks still entered the hash) are still recognised."""
    if not record_path.exists():
        return False
    try:
        record = read_record(record_path)
    except (OSError, ValueError):
        return False
    stored = record.get("provenance", {}).get("config")
    return record.get("status") == "ok" and isinstance(stored, Mapping) and config_hash(stored) == digest


def execute(
    config: dict[str, Any], run_dir: Path, overrides: list[str] | None = None, hparams: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run one experiment and write ``run_dir/result.json``; return the record.

    A point skipped because it is up to date returns the record on disk; one skipped because another
    process holds its lock returns ``{"status": "skipped", "error": <why>}`` (nothing is written).
    """
    outcome = run_point(config, run_dir, overrides, hparams)
    return outcome.record or {"status": outcome.status, "error": outcome.reason}


def run_point(
    config: dict[str, Any], run_dir: Path, overrides: list[str] | None = None, hparams: Mapping[str, Any] | None = None
) -> Outcome:
    """Skip the point when up to date or locked by another process; otherwise run it under its lock.

    ``trainer=paper``'s per-task values are applied first: they change what is computed, so they are
    part of the identity the skip compares."""
    record_path = run_dir / "result.json"
    apply_per_method(config)
    apply_paper_settings(config, set(hparams or {}))
    digest = config_hash(config)
    label = run_label(config, hparams)
    if not config.get("force") and up_to_date(record_path, digest):
        return _skip(label, record_path, _up_to_date_reason(config, record_path), read_record(record_path))
    follower = _follow(config, run_dir, list(overrides or []), dict(hparams or {}), digest)
    if follower is not None:
        return _skip(label, record_path, follower)
    lock = RunLock(run_dir / LOCK_NAME)
    held = lock.acquire()
    if held:
        return _skip(label, record_path, held)
    try:
        if not config.get("force") and up_to_date(record_path, digest):  # finished between the check and the lock
            return _skip(label, record_path, "up to date", read_record(record_path))
        record = _execute(config, run_dir, list(overrides or []), dict(hparams or {}), digest)
    finally:
        lock.release()
    return Outcome(record["status"], record_path, record, record["error"])


def _up_to_date_reason(config: Mapping[str, Any], record_path: Path) -> str:
    """Why a finished point is skipped, and how to get an artefact its record lacks."""
    if config.get("save_adapter") and not read_record(record_path).get("adapter"):
        return (
            "up to date, but it was trained without save_adapter and runs keep no weights: "
            "add force=true to train it again and write the adapter"
        )
    return "up to date"


def _skip(label: str, path: Path, reason: str, record: dict[str, Any] | None = None) -> Outcome:
    print(f"skip {label}: {reason}", flush=True)
    return Outcome(SKIPPED, path, record, reason)


def _execute(
    config: dict[str, Any], run_dir: Path, overrides: list[str], hparams: dict[str, Any], digest: str
) -> dict[str, Any]:
    """Run and record; every exception ends as a record with a one-line error, and so does SIGTERM/SIGINT
    (status ``interrupted``, after a checkpoint when training had begun: bench.checkpoint)."""
    record_path = run_dir / "result.json"
    record = _new_record(config, overrides, hparams, digest)
    error_log = run_dir / "error.log"
    tracker = None
    checkpoints = Checkpoints(run_dir / CHECKPOINT_DIR, digest, config=config)
    with Signals() as checkpoints.signals:
        try:
            tracker = make_tracker(config)  # an unknown logger or a missing library fails here, before training
            tracker.on_start(config, run_dir, hparams)
            tokens = _TRACKER.set(tracker), _CHECKPOINTS.set(checkpoints)  # read by the training loop
            try:
                _run(config, run_dir, record)  # keeps its 3-argument seam
            finally:
                _TRACKER.reset(tokens[0])
                _CHECKPOINTS.reset(tokens[1])
            record["status"] = "ok"
            error_log.unlink(missing_ok=True)  # a stale log from an earlier failed try would contradict "ok"
        except Exception as error:  # noqa: BLE001 — any failure must still leave a record
            _record_error(record, error, run_dir)
    _record_checkpoint(record, checkpoints)
    record["provenance"]["finished_at"] = _now()
    if tracker is not None and tracker.tracker.name != "none":
        record["tracking"] = tracker.describe()
    write_record(record, record_path)
    _end_tracking(tracker, record, record_path)
    _summary(record, record_path)
    return record


def _new_record(config: dict[str, Any], overrides: list[str], hparams: dict[str, Any], digest: str) -> dict[str, Any]:
    names = {k: config.get(k, {}).get("name") for k in GROUPS_IN_PATH}
    record = empty_record(names["method"], names["model"], names["task"], config.get("seed"))  # checked in _run
    record["hparams"] = hparams
    sha, dirty = git_state()
    record["provenance"].update(
        git_sha=sha,
        git_dirty=dirty,
        versions=package_versions(),
        config=config,
        overrides=overrides,
        config_hash=digest,
        dtype=config.get("dtype"),
        host=socket.gethostname(),
        cpu=cpu_description(),
        pid=os.getpid(),
        started_at=_now(),
    )
    return record


def _record_error(record: dict[str, Any], error: Exception, run_dir: Path) -> None:
    """Status and one-line error of a run that raised; the traceback to ``error.log``."""
    kinds = ((Diverged, "diverged"), (Interrupted, INTERRUPTED), (Pruned, PRUNED))
    record["status"] = next((status for kind, status in kinds if isinstance(error, kind)), "failed")
    record["error"] = error_line(error)
    if isinstance(error, Diverged):
        record["diagnostics"] = diverged_diagnostics(str(error))
    if isinstance(error, Pruned):  # the passes the pruner judged: why it stopped, in the record
        record["metrics"]["history"] = error.history
    if isinstance(error, Interrupted):
        record["interrupted"] = {"signal": signal.Signals(error.signum).name, "step": error.step}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.log").write_text(traceback.format_exc())


def _record_checkpoint(record: dict[str, Any], checkpoints: Checkpoints) -> None:
    """Where a resumed run started; where an interrupted one can resume from. A run that ended for good
    (ok, diverged, pruned) drops its checkpoint; a failed one keeps it (an out-of-memory retry resumes)."""
    record["provenance"]["resumed_from_step"] = checkpoints.resumed_from
    if record["status"] == INTERRUPTED:
        step = checkpoints.on_disk()
        record["interrupted"]["checkpoint"] = {"path": CHECKPOINT_DIR, "step": step} if step is not None else None
    elif record["status"] in ("ok", "diverged", PRUNED):
        checkpoints.remove()


def interrupted_exit_code(record: Mapping[str, Any]) -> int:
    """128 + the signal's number (SIGTERM: 143, SIGINT: 130): how a shell and Slurm see a process a signal ended."""
    return 128 + int(signal.Signals[record["interrupted"]["signal"]])


_TRACKER: contextvars.ContextVar[SafeTracker | None] = contextvars.ContextVar("tracker", default=None)
"""The tracker of the run in progress (bench.tracking), handed to the training loop."""
_CHECKPOINTS: contextvars.ContextVar[Checkpoints | None] = contextvars.ContextVar("checkpoints", default=None)
"""The checkpoint hook of the run in progress (bench.checkpoint), handed to the training loop."""


def _end_tracking(tracker: SafeTracker | None, record: dict[str, Any], record_path: Path) -> None:
    """Summary values to the tracker once the record is on disk (MLflow keeps it as an artefact);
    a tracker that stopped on the way says so in the record."""
    if tracker is None or tracker.tracker.name == "none":
        return
    tracker.on_end(record)
    if tracker.describe() != record.get("tracking"):
        record["tracking"] = tracker.describe()
        write_record(record, record_path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _summary(record: dict[str, Any], path: Path) -> None:
    metrics = record["metrics"]
    primary = metrics.get("primary")
    score = (metrics.get("final") or {}).get(primary)
    tps = record["throughput"].get("train_tokens_per_s")
    config = record["provenance"]["config"]
    line = (
        f"[{record['status']}] {run_label(config, record.get('hparams'))}"
        + (f" {primary}={score:.4f}" if score is not None else "")
        + (f" trainable={record['params']['trainable']}" if record["params"].get("trainable") else "")
        + (f" tok/s={tps:.0f}" if tps else "")
        + (f" error={record['error']}" if record["error"] else "")
        + f" -> {path}"
    )
    print(line, file=sys.stderr if record["status"] != "ok" else sys.stdout, flush=True)


def _follow(
    config: dict[str, Any], run_dir: Path, overrides: list[str], hparams: dict[str, Any], digest: str
) -> str | None:
    """On node k > 0 of a run over several nodes: run this node's ranks, without the lock or a record
    (node 0 holds the one and writes the other); what to say instead. None on node 0 and on one node."""
    try:
        plan = DistributedConfig.from_dict(config.get("distributed") or {})
        rank = node_rank(plan)
    except SettingsError:
        return None  # the run proper records the bad setting
    if rank == 0:
        return None
    checked = check_run_settings(config)
    launch(plan, checked.device, _rank_run, config, run_dir, _new_record(config, overrides, hparams, digest))
    return f"node {rank} of {plan.nnodes}: its ranks trained, node 0 writes the record"


def _run(config: dict[str, Any], run_dir: Path, record: dict[str, Any]) -> None:
    """The run in this process, or, with ``distributed.nproc_per_node``/``nnodes`` > 1, on this node's
    ranks (bench.distributed), rank 0 handing back the record this process writes."""
    checked = check_run_settings(config)
    plan = checked.distributed
    record["distributed"] = {
        "world_size": plan.world_size,
        "nnodes": plan.nnodes,
        "nproc_per_node": plan.nproc_per_node,
        "strategy": plan.strategy if plan.world_size > 1 else None,
        "backend": plan.backend_for(checked.device) if plan.world_size > 1 else None,
        "per_rank_peak_memory_bytes": None,
    }
    if plan.world_size == 1 or current_group() is not None:
        _run_here(config, run_dir, record)
        return
    ranks = launch(plan, checked.device, _rank_run, config, run_dir, record)
    if ranks[0] is not None:  # this node holds rank 0
        record.update(ranks[0])


def _rank_run(config: dict[str, Any], run_dir: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of a distributed run: the single-process run with this rank's group in context. Rank 0
    returns the filled record, with every rank's peak memory (``throughput.peak_memory_bytes``: the
    largest); the others return None."""
    _TRACKER.set(None)  # a forked rank must not talk to the launcher's tracker; the launcher logs the record
    _CHECKPOINTS.set(None)
    group = current_group()
    _run_here(config, run_dir, record)
    peaks = group.gather(record["throughput"]["peak_memory_bytes"])
    if group.rank != 0:
        return None
    record["distributed"]["per_rank_peak_memory_bytes"] = peaks
    record["throughput"]["peak_memory_bytes"] = max(peaks)
    return record


def _run_here(config: dict[str, Any], run_dir: Path, record: dict[str, Any]) -> None:
    """The run in this process (a single-process run, or one rank of a distributed one)."""
    from bench.models import load_model
    from bench.tasks import load_task  # here, not at the top: only a run needs the loaders (torch is loaded anyway)
    from methods import get_method
    from methods.model import AdaptedModel

    record["provenance"]["paper_settings"] = apply_paper_settings(config, set(record["hparams"]))
    checked = check_run_settings(config)  # every setting (trainer, model, task...), before any task or model loads
    method_fields = {k: v for k, v in config["method"].items() if k != "name"}
    method = get_method(config["method"]["name"]).from_dict(method_fields)
    settings = checked.trainer.with_method_lr(method.lr)
    record["provenance"].update(device=_device_name(checked.device), trainer=settings.as_dict())
    record["declarations"] = method.declared()
    _check_protocol(config["task"])
    seed = int(config["seed"])
    seed_everything(seed)
    task = load_task(config["task"])
    _require_splits(task)
    _cap_eval(task, settings.max_eval_samples)
    loaded = load_model(checked.model, task.kind)
    seed_everything(seed)  # the method's and head's initial values depend on the run seed only
    model = AdaptedModel(
        loaded.backbone,
        method,
        task.kind,
        num_labels=task.num_labels,
        tokenizer=loaded.tokenizer,
        seed=seed,
        label_names=task.label_names,
        pooling=checked.model.pooling,
        target_bos=checked.model.target_bos,
    )
    _place(model, checked.device, checked.dtype)
    if config.get("gradient_checkpointing"):
        model.enable_gradient_checkpointing()
    record["params"].update(model.parameter_counts())
    record["provenance"]["weights"] = loaded.weights_id
    before = base_weights_sha256(model)
    splits = _encode(task, loaded, int(task.config.get("max_length") or 256), config)
    record["metrics"]["data"] = _data_counts(task, splits)
    record["metrics"]["primary"] = task.primary_metric
    runtime = Runtime(settings, checked.device, checked.dtype, seed, current_group())
    result = _train_and_test(model, task, splits, runtime, loaded.tokenizer, _encoder(task, loaded))
    record["provenance"]["optimizer_groups"] = result.optimizer_groups
    _fill_record(record, result, task)
    record["provenance"]["base_weights_sha256"] = {"before": before, "after": base_weights_sha256(model)}
    if config.get("save_adapter") and (runtime.group is None or runtime.group.rank == 0):
        model.save_adapter(run_dir / "adapter")
        record["adapter"] = {"path": "adapter", **_export_peft(model, run_dir, record, checked.model, loaded, task)}


def _export_peft(
    model: Any, run_dir: Path, record: dict[str, Any], spec: ModelConfig, loaded: Any, task: Any
) -> dict[str, Any]:
    """``<run>/peft/``: the Hub-ready PEFT folder (its card reports this run's scores and identity); the
    record's ``adapter`` entry."""
    from bench.models import HUB_RELATION
    from methods.model_card import RunFacts
    from methods.peft_export import PEFT_DIR, export_peft

    metrics, provenance = record["metrics"], record["provenance"]
    scores = {"validation": metrics.get("best"), **{split: metrics.get(split) for split in REPORT_SPLITS}}
    facts = RunFacts(
        method=record["method"],
        model=spec.name,
        task=task.name,
        seed=record.get("seed"),
        weights=loaded.weights_id,
        base_note=HUB_RELATION[spec.source],
        scores={split: values for split, values in scores.items() if values},
        primary_metric=task.primary_metric,
        identity={
            "record": "../result.json",  # the export sits in the run's folder, beside its record
            "run": run_label(provenance["config"], record.get("hparams")),
            "config_hash": str(provenance["config_hash"]),
            "git": f"{provenance['git_sha']}{' (uncommitted changes)' if provenance.get('git_dirty') else ''}",
        },
    )
    return export_peft(model, run_dir / PEFT_DIR, spec.hub_id, loaded.tokenizer, task.label_names, facts)


def base_weights_sha256(model) -> str:
    """sha256 of the backbone's weights without the tensors the method owns in it (LoRA's matrices,
    head-only's LM head): equal before and after training unless the method trains the backbone."""
    method = model.method
    owned = () if method.trains_backbone else tuple(method.adapter_state(model.backbone))
    return weights_sha256(model.backbone, owned)


def _check_protocol(task: Mapping[str, Any]) -> None:
    """A protocol other than ``full`` names files (FewGLUE's train32/dev32), which the Hub copy lacks."""
    protocol = task.get("protocol")
    if protocol not in (None, "full") and not task.get("data_dir"):
        raise RunConfigError(
            f"task.protocol={protocol} reads the files {dict(task.get('files') or {})}: "
            f"set task.data_dir to the folder holding them (e.g. ../shared/data/superglue/RTE)"
        )


def _require_splits(task) -> None:
    """Training needs a train and a validation split; say which is missing and how to supply it."""
    missing = [split for split in ("train", "validation") if not task.splits.get(split)]
    if missing:
        raise RunConfigError(
            f"task '{task.name}' has no {' or '.join(missing)} split; "
            "point task.files.<split> at a file in task.data_dir"
        )


PAPER_TRAINER_KEYS = (
    "batch_size",
    "epochs",
    "lr",
    "max_steps",
    "warmup_ratio",
    "weight_decay",
    "optimizer",
    "lr_schedule",
)
PAPER_METHOD_KEYS = ("num_virtual_tokens", "prefix_dropout", "prefix_projection", "prefix_hidden_size", "init")
PAPER_TASK_KEYS = ("max_length", "input_format")


def apply_paper_settings(
    config: dict[str, Any], user_set: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """With ``trainer=paper``, copy the task's per-model published hyperparameters into the config.

    ``task.paper`` maps a model name (or ``default``) to e.g. {batch_size, lr, epochs,
    num_virtual_tokens}; method fields are only set where the method has them. A setting the user
    gave explicitly (a dotted key in ``user_set``, e.g. ``trainer.lr`` from a grid) wins over the table.
    """
    if config["trainer"].get("name") != "paper":
        return None
    table = config["task"].get("paper") or {}
    chosen = table.get(config["model"]["name"]) or table.get("default")
    if not chosen:
        return None
    from methods import declarations

    declared = declarations().get(config["method"]["name"], {})
    soft_prompt = declared.get("input_tokens") or declared.get("attention_prefix")
    applied = {}
    for key, value in chosen.items():
        if key == "lr" and not soft_prompt:
            continue  # the published LRs are for prefix/prompt parameters; baselines keep their own
        group = _paper_group(key, config)
        if group is not None and f"{group}.{key}" not in user_set:
            config[group][key] = applied[key] = value
    return applied


def _paper_group(key: str, config: Mapping[str, Any]) -> str | None:
    """The config group a paper-table key belongs to (None: not applicable here)."""
    if key in PAPER_TRAINER_KEYS:
        return "trainer"
    if key in PAPER_METHOD_KEYS and key in config["method"]:
        return "method"
    return "task" if key in PAPER_TASK_KEYS else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def _place(model, device: torch.device, dtype: torch.dtype) -> None:
    """Frozen weights in the run dtype, trainable ones in fp32 (autocast mixes them)."""
    model.to(device)
    for parameter in model.parameters():
        parameter.data = parameter.data.to(torch.float32 if parameter.requires_grad else dtype)


def _cap_eval(task, limit: int | None) -> None:
    from bench.tasks import cap_eval_splits

    cap_eval_splits(task, limit)  # trainer.max_eval_samples, MultiRC questions kept whole


def _encode(task, loaded, max_length: int, config: Mapping[str, Any]) -> Splits:
    from bench.cache import cached_encode

    encoded = {
        split: cached_encode(task, loaded.tokenizer, split, max_length, loaded.decoder, loaded.seq2seq)
        for split in task.splits
    }
    return Splits(encoded, loaded.tokenizer.pad_token_id, loaded.tokenizer.padding_side == "left")


def _encoder(task, loaded):
    """Tokenise a split of a task view as the run's splits were (uncached: perturbed inputs are seen once)."""
    max_length = int(task.config.get("max_length") or 256)
    return lambda view, split: encode_split(view, loaded.tokenizer, split, max_length, loaded.decoder, loaded.seq2seq)


def _data_counts(task, splits: Splits) -> dict[str, Any]:
    counts = {split: len(examples) for split, examples in task.splits.items()}
    counts["truncated"] = sum(e.truncated for e in splits.encoded.values())
    counts["truncated_by_split"] = {split: e.truncated for split, e in splits.encoded.items()}
    counts["absent_splits"] = list(getattr(task, "absent_splits", []))
    counts["loaded"] = dict(getattr(task, "counts", {}))
    cut = {split: (e.truncated, len(e.features)) for split, e in splits.encoded.items()}
    counts["warnings"] = degenerate_data(task, cut)
    for line in counts["warnings"]:
        warn(line)
    return counts


@dataclass
class _LastValidation:
    """What the last validation pass saw: the diagnostics read it after training."""

    predictions: list | None = None
    prefix: dict[str, Any] | None = None
    reported: dict[str, list] = field(default_factory=dict)  # predictions of each reported split


def _train_and_test(model, task, splits: Splits, runtime: Runtime, tokenizer, encode=None) -> TrainResult:
    """Train with validation passes, diagnose the run, then score the best checkpoint on test."""
    reset_peak_memory(runtime.device)
    result = TrainResult()
    # validation is evaluated at every pass; the test split once, so only validation features are kept
    cache = EvalFeatureCache(runtime.settings.eval_feature_cache_mb)
    prefixed = bool(model.soft_prompt is not None and model.soft_prompt.attention_prefix)
    last = _LastValidation()

    def evaluate(split: str) -> dict[str, float]:
        probe = PrefixProbe(len(model.attention_modules)) if split == "validation" and prefixed else None
        with probe or contextlib.nullcontext():
            kept = cache if split == "validation" else None
            encoded = splits.encoded[split]
            predictions, loss = predict(model, task, encoded, splits, runtime, tokenizer, result, feature_cache=kept)
        if split == "validation":  # the last validation pass describes the end of training
            last.predictions, last.prefix = predictions, probe.summary() if probe else None
        else:
            last.reported[split] = predictions
        words = getattr(model, "label_words", None)
        metrics = task.compute_metrics(predictions, split, len(words) if words is not None else None)
        if words is not None:  # text-to-text: generations that matched no label
            metrics["invalid_predictions"] = count_invalid(predictions, len(words))
        return {**metrics, **({"eval_loss": loss} if loss is not None else {})}

    trained = train(model, task, splits, runtime, evaluate, result, _TRACKER.get(), _checkpoints(runtime))
    trained.eval_feature_cache = cache.summary()
    trained.diagnostics = run_diagnostics(
        trained.history, task.primary_metric, task.kind, last.predictions, last.prefix, trained.stop
    )
    for split in REPORT_SPLITS:  # scored once, at the best validation checkpoint
        if split in splits.encoded:
            trained.reported[split] = evaluate(split)
            trained.by_length[split] = _by_length(model, task, splits, runtime, split, last.reported[split])
            if runtime.settings.wording_perturbations and encode is not None:
                scores = _wording(model, task, splits, runtime, tokenizer, encode, split)
                trained.wording[split] = {"clean": trained.reported[split], **scores}
    return trained


def _checkpoints(runtime: Runtime) -> Checkpoints | None:
    """The run's checkpoint hook, saving every ``trainer.checkpoint_every`` validation passes."""
    hook = _CHECKPOINTS.get()
    if hook is not None:
        hook.every = runtime.settings.checkpoint_every
    return hook


def _wording(model, task, splits: Splits, runtime: Runtime, tokenizer, encode, split: str) -> dict[str, dict]:
    """``metrics.wording[split]``: the trained model's metrics on each perturbation of the split's inputs
    (bench.tasks.wording), predicted into a scratch result so no throughput figure of the run changes."""
    words = getattr(model, "label_words", None)
    invalid = len(words) if words is not None else None
    scores = {}
    for name in perturbations_for(task.kind):
        view = dataclasses.replace(
            task, splits={**task.splits, split: perturb_split(task.splits[split], task.kind, name)}
        )
        predictions, _ = predict(model, view, encode(view, split), splits, runtime, tokenizer, TrainResult())
        scores[name] = view.compute_metrics(predictions, split, invalid)
    return scores


def _by_length(model, task, splits: Splits, runtime: Runtime, split: str, predictions: list) -> dict | None:
    """``metrics.by_length[split]``: the split's predictions scored per input-length bucket (None: off)."""
    count = runtime.settings.length_buckets
    if not count:
        return None
    words = getattr(model, "label_words", None)
    invalid = len(words) if words is not None else None
    lengths = [input_length(feature) for feature in splits.encoded[split].features]
    return score_by_length(lengths, count, lambda kept: task.compute_metrics(predictions, split, invalid, kept))


def _fill_record(record: dict[str, Any], result: TrainResult, task) -> None:
    timer = result.timer
    record["metrics"].update(
        final=result.final,
        best=result.best,
        best_step=result.best_step,
        history=result.history,
        **{split: result.reported.get(split) for split in REPORT_SPLITS},
        best_is_checkpoint=True,
        by_length={split: value for split, value in result.by_length.items() if value is not None} or None,
        wording=result.wording or None,
    )
    record["diagnostics"] = result.diagnostics
    record["throughput"].update(
        train_tokens_per_s=timer.tokens_per_s(),
        train_samples_per_s=timer.samples_per_s(),
        step_time_s_median=timer.median_step_s(),
        train_time_s=timer.total_s,
        train_steps=len(timer.step_times),
        virtual_tokens=timer.virtual_tokens,
        real_tokens=timer.real_tokens,
        eval_time_s=result.eval_time_s,
        eval_tokens_per_s=(result.eval_tokens / result.eval_time_s) if result.eval_time_s else None,
        eval_padding_waste=padding_waste(result.eval_padded_tokens, result.eval_tokens),
        eval_feature_cache=result.eval_feature_cache,
        generation_tokens_per_s=(
            result.generation_tokens / result.generation_time_s if result.generation_time_s else None
        ),
        peak_memory_bytes=peak_memory_bytes(timer.device, timer.peak_rss),
    )
