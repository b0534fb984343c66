"""``python -m bench [overrides]``: one run; ``python -m bench -m ...``: a Hydra multirun."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train one adapter, write one record; in a multirun a failed run never stops the sweep."""
    from bench.runner import execute

    hydra_cfg = HydraConfig.get()
    config = OmegaConf.to_container(cfg, resolve=True)
    record = execute(config, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))
    if record["status"] != "ok" and hydra_cfg.mode == RunMode.RUN:
        sys.exit(1)
    return (record["metrics"].get("final") or {}).get(record["metrics"].get("primary"))


if __name__ == "__main__":
    main()
