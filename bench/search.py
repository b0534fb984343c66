"""Hyperparameter search: the objective, its direction and the ``hydra/sweeper=optuna`` preset.

``python -m bench`` returns :func:`objective` of its record (the best validation score of the primary
metric), which is what Hydra sweepers read; the direction is the one the metric registry declares
(:func:`bench.tasks.metrics.metric_direction`, the ``${metric_direction:...}`` resolver).

The preset lives in ``bench/optuna_sweeper.yaml`` and is stored in Hydra's ConfigStore as
``hydra/sweeper/optuna``, replacing the plugin's own node: a file ``conf/hydra/sweeper/optuna.yaml``
would be matched against the plugin's schema of the same name, which Hydra 1.3 rejects because that
schema has a defaults list.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.tasks.metrics import metric_direction

OPTUNA_PRESET = Path(__file__).with_name("optuna_sweeper.yaml")

__all__ = ["OPTUNA_PRESET", "metric_direction", "objective", "register"]  # metric_direction: the registry's


def objective(record: Mapping[str, Any]) -> float | None:
    """The best validation score of the primary metric (``metrics.best[primary]``); None when the run
    has none (failed, diverged), which the Optuna sweeper counts as a failed trial.

    The best rather than the final score: it is the checkpoint the run keeps (test metrics and the
    saved adapter come from it), and it is less noisy than the last evaluation.
    """
    metrics = record.get("metrics") or {}
    value = (metrics.get("best") or {}).get(metrics.get("primary"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def register() -> None:
    """Before Hydra composes: the ``${metric_direction:...}`` resolver and, when the Optuna sweeper
    plugin is installed, ``hydra/sweeper=optuna`` as our preset."""
    if not OmegaConf.has_resolver("metric_direction"):
        OmegaConf.register_new_resolver("metric_direction", metric_direction)
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    # Hydra's one plugin scan (re)executes every plugin module, which stores the plugin's own node; after
    # it, ours replaces that node for good (the scan does not run again in this process).
    Plugins.instance()
    if ConfigStore.instance().repo.get("hydra", {}).get("sweeper", {}).get("optuna.yaml") is None:
        return  # the extra is not installed: hydra/sweeper=optuna stays an unknown choice, as Hydra says
    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=OmegaConf.load(OPTUNA_PRESET), provider="softprompt-bench"
    )


EXTRAS = {"hydra/sweeper=optuna": ("optuna", ("hydra_plugins.hydra_optuna_sweeper", "optuna"))}
"""Command-line choices that need an optional extra: choice -> (extra, modules it installs)."""


def missing_extra(args: Sequence[str]) -> str | None:
    """One line naming the extra a command-line choice needs and lacks (Hydra itself would only say
    that the choice is not found), or None."""
    for arg in args:
        choice = arg.replace(" ", "").removeprefix("+").removeprefix("override")
        extra, modules = EXTRAS.get(choice, (None, ()))
        if extra and not all(_installed(m) for m in modules):
            return (
                f"{choice} needs the '{extra}' extra, which is not installed: pip install 'softprompt-bench[{extra}]'"
            )
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
