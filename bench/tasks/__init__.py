"""The task layer: data loading and official metrics for every benchmark task.

``load_task(cfg)`` takes the Hydra ``task`` node (``conf/task/<name>.yaml``), builds the
examples with the hook named by ``cfg.loader`` (from the Hub, or from the original files in
``cfg.data_dir``) and returns a :class:`TaskData` whose ``compute_metrics`` scores predictions.
"""

from __future__ import annotations

from collections.abc import Mapping

# importing the loader modules registers their hooks (TASK_LOADERS, as importing methods registers methods)
import bench
from bench.tasks import generation, ner, superglue, synthetic  # noqa: F401
from bench.tasks.base import TASK_LOADERS, TaskData, TaskDataError, cap_eval_splits, finalize
from bench.tasks.config import TaskConfig, TaskConfigError, plain_config
from vocab import IGNORE_INDEX, TASK_KINDS

__all__ = [
    "CONF_DIR",
    "IGNORE_INDEX",
    "TASK_KINDS",
    "TASK_LOADERS",
    "TaskConfig",
    "TaskConfigError",
    "TaskData",
    "TaskDataError",
    "available_tasks",
    "cap_eval_splits",
    "load_task",
    "task_config",
]

CONF_DIR = bench.CONF_DIR / "task"


def load_task(cfg: Mapping) -> TaskData:
    """Load the task described by ``cfg`` (DictConfig or dict); see docs/TASKS.md.

    Raises TaskDataError (a ValueError) with a one-line message on bad data or config (a bad field of
    the task block: TaskConfigError, one of them).
    """
    config = plain_config(cfg)  # checked: the loader is a registered one
    return finalize(config, TASK_LOADERS[config["loader"]](config))


def available_tasks() -> list[str]:
    """Names of the task configs under conf/task/."""
    return sorted(path.stem for path in CONF_DIR.glob("*.yaml"))


def task_config(name: str, **overrides) -> dict:
    """The plain-dict config of ``conf/task/<name>.yaml`` with ``overrides`` applied."""
    from omegaconf import OmegaConf

    path = CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TaskDataError(f"unknown task {name!r} (no {path}); have {available_tasks()}")
    return {**OmegaConf.to_container(OmegaConf.load(path), resolve=True), **overrides}
