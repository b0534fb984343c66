"""Shared test set-up: offline, a private cache, and Hydra composition helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def group_choices(group: str) -> list[str]:
    """Config names in a conf/ group folder."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose(overrides: list[str], hydra_node: bool = True):
    """Compose the top config with overrides, as ``python -m bench`` would."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import bench  # noqa: F401  (registers the ${registry:...} resolver, as `python -m bench` does)

    if GlobalHydra.instance().is_initialized():  # inside composer(): reuse the loaded config repository
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)


@pytest.fixture
def composer():
    """Keep Hydra initialised for a test that composes many configs."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield compose


def run_bench(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def one_thread():
    """Small models run fastest on one thread; two threads on shared cores spin-wait (~100x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
