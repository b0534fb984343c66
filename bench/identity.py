"""Run identity: which folder a run's record lives in, and a lock so one point trains once.

The rule (README, "Where runs land"): the composed defaults of the run's group choices (``method``,
``model``, ``task``, ``trainer``, ``sweep`` and any ``+group=``) are composed again without any
value override; every leaf of the run's config that differs from them, or that only the run has
(``+key=value``), is a hyperparameter. A sweep preset's fixed values and ``trainer=paper``'s per-task
table are therefore defaults, and each grid value is a hyperparameter. Keys that do not change what
is computed (:data:`NOT_HPARAMS`) are left out; the seed is its own folder level.

    <runs_root>/<sweep_name>/<method>/<model>/<task>/[<slug>/]seed=<n>/result.json

The slug is ``leaf=value`` pairs sorted by key (``lr=0.01,num_virtual_tokens=10``), using the dotted
key where two leaves share a name; when it is long or needs characters a folder name should not
hold, it is shortened and ends with a hash of the full set (``__<8 hex>``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# where or whether a run happens, how it is timed or stored — not what it computes
NOT_HPARAMS = (
    "force",
    "runs_root",
    "sweep_name",
    "save_adapter",
    "seed",
    "device",
    "gradient_checkpointing",
    "task.data_dir",
    "trainer.timing_warmup_steps",
    "trainer.eval_feature_cache_mb",
)
GROUPS_IN_PATH = ("method", "model", "task")
SLUG_MAX = 64
SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
LOCK_NAME = "run.lock"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` → ``{"trainer.lr": 1}`` (lists stay leaves)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _excluded(key: str) -> bool:
    group, _, leaf = key.partition(".")
    return key in NOT_HPARAMS or (leaf == "name" and group in ("method", "model", "task", "trainer"))


def hparams(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of ``config`` that differs from ``defaults`` (dotted key → value); removed keys → None."""
    ours, base = flatten(config), flatten(defaults)
    changed = {key: value for key, value in ours.items() if key not in base or base[key] != value}
    changed.update({key: None for key in base if key not in ours})
    return {key: changed[key] for key in sorted(changed) if not _excluded(key)}


def composed_defaults(choices: Mapping[str, str | None]) -> dict[str, Any]:
    """The config Hydra composes from these group choices alone (no value overrides), resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [
        f"{group}={choice}"
        for group, choice in sorted(choices.items())
        if choice is not None and not group.startswith("hydra")
    ]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra job (any launcher restores it)
        from hydra.core.hydra_config import HydraConfig

        # extra config folders (a plugin method's YAML, README "Adding a method") must stay searchable
        searchpath = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
        extra = [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []
        cfg = compose(config_name="config", overrides=overrides + extra)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _format(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def slug(params: Mapping[str, Any]) -> str | None:
    """A short readable folder name for a set of hyperparameters (None when there are none)."""
    if not params:
        return None
    leaves = [key.rsplit(".", 1)[-1] for key in params]
    names = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(params, leaves)]
    pairs = sorted(zip(names, params.values()), key=lambda pair: pair[0])
    text = ",".join(f"{name}={_format(value)}" for name, value in pairs)
    safe = SAFE.sub("_", text)
    if safe == text and len(text) <= SLUG_MAX:
        return text
    digest = hashlib.sha256(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{safe[: SLUG_MAX - 10]}__{digest}"


def run_dir(config: Mapping[str, Any], params: Mapping[str, Any]) -> Path:
    """``<runs_root>/<sweep_name>/<method>/<model>/<task>/[<slug>/]seed=<n>``."""
    parts = [str(config["runs_root"]), str(config["sweep_name"])]
    parts += [str(config[group]["name"]) for group in GROUPS_IN_PATH]
    point = slug(params)
    return Path(*parts, *([point] if point else []), f"seed={config['seed']}")


@dataclass
class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/run.lock``; the file names the holder (pid, host).

    The kernel drops the lock when its process ends, however it ends, so a lock file left behind by
    a killed run is stale and the next run takes it over.
    """

    path: Path
    handle: Any = None

    def acquire(self) -> str | None:
        """Take the lock; None on success, else a line naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return f"locked by {holder} ({self.path})"
        except OSError as error:  # a filesystem without flock: run unlocked rather than not at all
            print(f"warning: cannot lock {self.path} ({error}); running without a lock", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self.handle = handle
        return None

    def release(self) -> None:
        """Remove the file, then drop the lock (a waiter that opened the old file re-checks the record)."""
        if self.handle is not None:
            self.path.unlink(missing_ok=True)
            self.handle.close()
            self.handle = None
