"""The ``task`` block (``conf/task/*.yaml``), typed: the one declaration of what a task config must hold.

A run checks it before anything loads (``bench.settings.check_run_settings``) and :func:`plain_config`
checks it again for whoever loads a task directly (``bench.tasks.load_task``), with the same fields and
the same one-line errors; loader-specific keys stay unchecked here, for the loaders to read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.tasks.base import DEFAULTS, INPUT_FORMATS, TASK_LOADERS, TaskDataError
from bench.tasks.metrics import METRICS
from bench.typed import REQUIRED, RunConfigError, declared_fields, one_of, setting, typed_fields
from vocab import TASK_KINDS


class TaskConfigError(RunConfigError, TaskDataError):
    """A ``task.*`` setting is invalid (checked before the task loads); a run's settings error and a
    task's data error both, so either caller's ``except`` catches it."""


@dataclass(frozen=True)
class TaskConfig:
    """A ``task`` block, typed: what is asked of the model and how it is scored.

    Loader-specific keys (files, hub, protocol, generation...) are kept, unchecked, in ``extra``; the
    loaders read them from the mapping (bench.tasks)."""

    name: str = setting(REQUIRED, str, "a task name")
    kind: str = one_of(REQUIRED, TASK_KINDS)
    loader: str = one_of(REQUIRED, lambda: sorted(TASK_LOADERS))
    metric: list[str] = setting(
        REQUIRED,
        list,
        lambda: "a metric name or a list of them, each one of " + "|".join(METRICS),
        lambda v: bool(v) and all(name in METRICS for name in v),
    )
    # which of task.metric's result keys is the primary one: checked against them in __post_init__
    primary_metric: str = setting(REQUIRED, str, "a result key task.metric reports (e.g. accuracy, f1)")
    max_length: int = setting(DEFAULTS["max_length"], int, "an integer >= 1 (tokens)", lambda v: v >= 1)
    label_names: list[str] | None = setting(None, list, "a list of names, or null (set by the loader)", nullable=True)
    # how an example's fields become the input text (trainer=paper sets t5 for Lester et al.'s T5 runs)
    input_format: str = one_of(DEFAULTS["input_format"], INPUT_FORMATS)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        produced = [key for name in self.metric if name in METRICS for key in METRICS[name].keys]
        if self.primary_metric not in produced:
            raise TaskConfigError(
                f"task.primary_metric={self.primary_metric!r} is not allowed; allowed: one of "
                f"{'|'.join(produced)} (what task.metric={self.metric} reports)"
            )
        writers = INPUT_FORMATS[self.input_format]  # the loaders that write this format; None: every loader
        if writers is not None and self.loader not in writers:
            allowed = [form for form, loaders in INPUT_FORMATS.items() if loaders is None or self.loader in loaders]
            raise TaskConfigError(
                f"task.input_format={self.input_format!r} is not allowed with task.loader={self.loader!r}; "
                f"allowed: one of {'|'.join(allowed)}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TaskConfig:
        """Build from a (Hydra) mapping; a bad value raises :class:`TaskConfigError` in one line."""
        known = declared_fields(cls)
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(**typed_fields(cls, values, "task", TaskConfigError), extra=extra)


def plain_config(cfg: Mapping) -> dict:
    """Return the task cfg (DictConfig or mapping) as a resolved plain dict with defaults filled, checked
    by :class:`TaskConfig` (a bad field is a one-line :class:`TaskConfigError` naming the task)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    out = {**DEFAULTS, **copy.deepcopy(dict(cfg))}
    if "max_eval_samples" in out:  # one eval cap only: the trainer's, which keeps groups whole
        raise TaskDataError(
            f"task config {out.get('name', '?')}: field 'max_eval_samples' was removed; use trainer.max_eval_samples=N"
        )
    try:
        typed = TaskConfig.from_dict(out)
    except TaskConfigError as error:
        raise TaskConfigError(f"task config {out.get('name', '?')}: {error}") from None
    out["metric"] = typed.metric  # one metric name given as a string reads as a list of one
    return out
