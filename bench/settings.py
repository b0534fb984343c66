"""Run settings, checked before any task or model loads.

Trainer settings are one validated dataclass, :class:`TrainerConfig`, built from ``conf/trainer/*.yaml``
the way method configs are built from ``conf/method/*.yaml``: unknown keys and out-of-range values fail
with one line that names the key and the allowed range. The top-level ``device`` and ``dtype`` are
checked here too, so a bad setting never costs a model load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


class SettingsError(ValueError):
    """A setting holds a value the harness cannot use; the message names the key and what is allowed."""


class RunConfigError(SettingsError):
    """A top-level run setting (device, dtype, ...) is invalid."""


class TrainerConfigError(SettingsError):
    """A trainer setting is out of range (or there is nothing to train)."""


OPTIMIZERS = ("adamw", "adafactor")
LR_SCHEDULES = ("linear", "constant")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _setting(
    default: Any,
    kind: type,
    allowed: str,
    check: Callable[[Any], bool] = lambda v: True,
    nullable: bool = False,
    computes: bool = True,
) -> Any:
    """A dataclass field carrying its own type, range check and the range's wording for errors.

    ``computes=False`` declares a setting that changes how fast or how a run is observed, never the
    numbers it computes; it stays out of the run's identity (bench.identity)."""
    metadata = {"kind": kind, "allowed": allowed, "check": check, "nullable": nullable, "computes": computes}
    return field(default=default, metadata=metadata)


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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise TrainerConfigError(f"trainer: unknown key(s) {unknown}; known: {sorted(fields)}")
        return cls(**{key: _checked(f"trainer.{key}", value, fields[key].metadata) for key, value in values.items()})

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


def _checked(key: str, value: Any, spec: Mapping[str, Any]) -> Any:
    """``value`` converted to the field's type, or a one-line error naming ``key`` and the range."""
    if value is None and spec["nullable"]:
        return None
    problem = TrainerConfigError(f"{key}={value!r} is not allowed; allowed: {spec['allowed']}")
    converted = _convert(value, spec["kind"])
    if converted is None or not spec["check"](converted):
        raise problem
    return converted


def _convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` or None; booleans are never numbers, numbers never booleans."""
    if isinstance(value, bool) or value is None:
        return value if kind is bool else None
    if kind is int:
        return value if isinstance(value, int) else None
    if kind is float:
        try:
            number = float(value)  # Hydra hands over `1e-3` as a float, a YAML `1` as an int
        except (TypeError, ValueError):
            return None
        return number if number == number else None  # NaN is never in range
    return value if isinstance(value, kind) else None


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
    """Everything about a run that is checked before loading: trainer, device and dtype."""

    trainer: TrainerConfig
    device: torch.device
    dtype: torch.dtype


SEED_MAX = 2**32 - 1  # numpy's seeds are unsigned 32-bit; torch's and Python's take these too


def check_seed(value: Any) -> int:
    """The run seed, an integer in [0, 2**32 - 1], or a one-line :class:`RunConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise RunConfigError(f"seed={value!r} is not allowed; allowed: an integer in [0, {SEED_MAX}]")
    return value


def check_run_settings(config: Mapping[str, Any]) -> RunSettings:
    """Validate the seed, the trainer block, ``device`` and ``dtype`` of a resolved config (no loading)."""
    check_seed(config.get("seed"))
    trainer = TrainerConfig.from_dict(config.get("trainer") or {})
    device = resolve_device(str(config.get("device", "auto")))
    return RunSettings(trainer, device, resolve_dtype(str(config.get("dtype", "fp32")), device))
