"""``python -m bench [overrides]``: one run; ``python -m bench -m ...``: a Hydra multirun."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench import CONF_DIR
from bench.search import objective, register

register()  # before Hydra composes: the ${metric_direction:...} resolver


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train one adapter, write one record; in a multirun a failed run never stops the sweep.

    The run folder is computed here, in the job, from the config and its hyperparameters (see
    :mod:`bench.identity`), so every launcher puts each grid point in its own folder.

    Returns :func:`bench.search.objective` of the record (what a Hydra sweeper would optimise).
    """
    from bench.identity import PerMethodError, job_point, run_dir
    from bench.multirun import write_outcome
    from bench.runner import INTERRUPTED, interrupted_exit_code, run_point

    hydra_cfg = HydraConfig.get()
    config = OmegaConf.to_container(cfg, resolve=True)
    choices = dict(hydra_cfg.runtime.choices)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    mode, overrides = hydra_cfg.mode, list(hydra_cfg.overrides.task)
    try:
        point = job_point(config, choices)
    except PerMethodError as error:  # a preset's mistake: one line, before anything runs
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    outcome = run_point(config, run_dir(config, point), overrides, point)
    if mode == RunMode.MULTIRUN:
        write_outcome(output_dir, outcome.status, outcome.path, outcome.reason)
    if outcome.status == INTERRUPTED:  # the job's time is up: a multirun stops too, a rerun resumes
        sys.exit(interrupted_exit_code(outcome.record))
    if mode != RunMode.MULTIRUN and outcome.status in ("failed", "diverged"):
        sys.exit(1)
    record = outcome.record or {"metrics": {}}
    return objective(record)  # what a sweeper optimises: the best validation score of the primary metric


def cli() -> None:
    """The ``softprompt-bench`` console script, the same as ``python -m bench``. Installed as a script, Hydra
    sees a program name (not ``-m``), so its shell completion works: ``eval "$(softprompt-bench -sc install=bash)"``.
    """
    from bench.search import missing_extra

    if missing := missing_extra(sys.argv[1:]):  # before Hydra, which would only call a removed choice unknown
        print(f"error: {missing}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
