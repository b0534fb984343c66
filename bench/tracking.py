"""Experiment tracking: ``logger=none|tensorboard|mlflow|wandb`` (conf/logger/).

A tracker is a small callback object the runner and the training loop call:
``on_start(config, run_dir)``, ``on_train_step(step, loss, lr)`` every optimizer step,
``on_eval(step, metrics)`` every validation pass, ``on_end(record)`` once the record is written.
Each backend writes through its library's own API: TensorBoard's ``SummaryWriter`` (event files in
``<run>/tensorboard/``), MLflow's fluent API (a local file store by default, ``logger.tracking_uri``
when given) and W&B's ``wandb.init`` (offline unless the user is logged in; ``<run>/wandb/``).

The record is the source of truth: a tracker that fails prints one warning line and stops, and the
run and its record go on.
"""

from __future__ import annotations

import importlib
import json
import math
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.record import error_line

EXTRA = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""logger name -> the optional extra that installs its library."""


class TrackingError(RuntimeError):
    """A logger setting is invalid or its library is not installed."""


def require(module: str, logger: str) -> Any:
    """Import a tracker's library, or fail with one line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRA[logger]
        raise TrackingError(
            f"logger={logger} needs the '{extra}' extra: pip install 'softprompt-bench[{extra}]' ({error_line(error)})"
        ) from error


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The resolved config as ``{"trainer.lr": 0.01, ...}``; lists and None become strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)
    return flat


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summary_values(record: Mapping[str, Any]) -> dict[str, float]:
    """A record's final numbers: ``final/<metric>``, ``best/<metric>``, ``test/<metric>``,
    ``params/<name>``, ``throughput/<name>`` (finite numbers only)."""
    metrics = record.get("metrics") or {}
    sections = {
        "final": metrics.get("final"),
        "best": metrics.get("best"),
        "test": metrics.get("test"),
        "params": record.get("params"),
        "throughput": record.get("throughput"),
    }
    values = {
        f"{name}/{key}": float(value)
        for name, section in sections.items()
        for key, value in (section or {}).items()
        if _finite(value)
    }
    if _finite(metrics.get("best_step")):
        values["best/step"] = float(metrics["best_step"])
    return values


def eval_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A validation pass as ``validation/<name>`` (step, split and non-numbers left out)."""
    return {
        f"validation/{key}": float(value)
        for key, value in metrics.items()
        if key not in ("step", "split") and _finite(value)
    }


class Tracker:
    """``logger=none``: every callback does nothing.  Backends override what they log."""

    name = "none"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = dict(settings or {})
        self.location: str | None = None  # where the tracker writes: a folder or a tracking URI

    def on_start(self, config: Mapping[str, Any], run_dir: Path) -> None:
        """Open the tracker's run; log the resolved config as parameters."""

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        """Log one optimizer step's training loss and learning rate."""

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log one validation pass (the record's history entry)."""

    def on_end(self, record: Mapping[str, Any]) -> None:
        """Log the record's metrics, params and throughput as summary values; close the run."""

    def describe(self) -> dict[str, Any]:
        """What the record keeps about tracking (``record["tracking"]``)."""
        return {"logger": self.name, "location": self.location}


class TensorBoardTracker(Tracker):
    """Scalars, the config as text and hparams, the record folder as text; ``<run>/tensorboard/``."""

    name = "tensorboard"

    def on_start(self, config: Mapping[str, Any], run_dir: Path) -> None:
        require("tensorboard", self.name)
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(self.settings.get("dir") or run_dir / "tensorboard")
        self.location = str(folder)
        self.writer = SummaryWriter(log_dir=str(folder))
        self.params = flat_config(config)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")
        self.writer.add_text("record_dir", str(Path(run_dir).resolve()))

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in eval_values(metrics).items():
            self.writer.add_scalar(key, value, step)

    def on_end(self, record: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        summary = summary_values(record)
        step = int(summary.get("best/step", 0))
        for key, value in summary.items():
            self.writer.add_scalar(key, value, step)
        for part in hparams(self.params, {key: value for key, value in summary.items() if key.startswith("final/")}):
            self.writer.file_writer.add_summary(part)
        self.writer.close()


class MlflowTracker(Tracker):
    """MLflow's fluent API: params, step metrics, summary metrics, ``result.json`` as an artefact."""

    name = "mlflow"

    def on_start(self, config: Mapping[str, Any], run_dir: Path) -> None:
        mlflow = require("mlflow", self.name)
        uri = self.settings.get("tracking_uri")
        if not uri:  # a local file store; MLflow 3 asks for this opt-in to keep using one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(self.settings.get("dir") or "mlruns").resolve().as_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(self.settings.get("experiment") or str(config.get("sweep_name") or "default"))
        self.run_dir, self.mlflow, self.location = Path(run_dir), mlflow, uri
        name = "/".join(str((config.get(k) or {}).get("name")) for k in ("method", "model", "task"))
        self.run = mlflow.start_run(run_name=f"{name}/seed={config.get('seed')}")
        params = {key: str(value)[:6000] for key, value in flat_config(config).items()}  # MLflow's value limit
        mlflow.log_params(params)
        mlflow.set_tag("record_dir", str(self.run_dir.resolve()))

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        self.mlflow.log_metrics({"train/loss": loss, "train/lr": lr}, step=step)

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics(eval_values(metrics), step=step)

    def on_end(self, record: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics(summary_values(record))
        self.mlflow.set_tag("status", record.get("status"))
        if (self.run_dir / "result.json").exists():
            self.mlflow.log_artifact(str(self.run_dir / "result.json"), artifact_path="record")
        status = "FINISHED" if record.get("status") == "ok" else "FAILED"
        self.mlflow.end_run(status=status)

    def describe(self) -> dict[str, Any]:
        run = getattr(self, "run", None)
        return {**super().describe(), "run_id": run.info.run_id if run is not None else None}


def wandb_logged_in() -> bool:
    """True when W&B has credentials here: ``WANDB_API_KEY`` or a ``.netrc`` entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    """``wandb.init`` in ``<run>/wandb/``: offline unless logged in (``logger.mode`` overrides)."""

    name = "wandb"

    def on_start(self, config: Mapping[str, Any], run_dir: Path) -> None:
        wandb = require("wandb", self.name)
        mode = (
            self.settings.get("mode") or os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        )
        folder = Path(self.settings.get("dir") or run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = "/".join(str((config.get(k) or {}).get("name")) for k in ("method", "model", "task"))
        self.run = wandb.init(
            project=self.settings.get("project") or "softprompt-bench",
            dir=str(folder),
            mode=mode,
            config=dict(config),
            name=f"{name}/seed={config.get('seed')}",
            group=str(config.get("sweep_name") or "default"),
            reinit="finish_previous",
        )
        self.run.config.update({"record_dir": str(Path(run_dir).resolve())}, allow_val_change=True)
        self.location, self.mode = str(Path(self.run.dir).parent), mode

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        self.run.log({"train/loss": loss, "train/lr": lr}, step=step)

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(eval_values(metrics), step=step)

    def on_end(self, record: Mapping[str, Any]) -> None:
        self.run.summary.update({**summary_values(record), "status": record.get("status")})
        self.run.finish(exit_code=0 if record.get("status") == "ok" else 1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": getattr(self, "mode", None)}


TRACKERS: dict[str, type[Tracker]] = {
    cls.name: cls for cls in (Tracker, TensorBoardTracker, MlflowTracker, WandbTracker)
}
"""The logger registry: conf/logger/<name>.yaml must name one of these."""


class SafeTracker:
    """Calls a tracker so that its failure never costs the run: one warning line, then silence."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker, self.error = tracker, None

    def _call(self, method: str, *args: Any) -> None:
        if self.error is not None:
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as error:  # noqa: BLE001 — tracking is best effort; the record is the result
            self.error = f"logger={self.tracker.name} stopped in {method}: {error_line(error)}"
            print(f"warning: {self.error}", file=sys.stderr, flush=True)

    def on_start(self, config: Mapping[str, Any], run_dir: Path) -> None:
        """Open the tracker's run (see :meth:`Tracker.on_start`)."""
        self._call("on_start", config, run_dir)

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        """See :meth:`Tracker.on_train_step`."""
        self._call("on_train_step", step, loss, lr)

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """See :meth:`Tracker.on_eval`."""
        self._call("on_eval", step, metrics)

    def on_end(self, record: Mapping[str, Any]) -> None:
        """See :meth:`Tracker.on_end`."""
        self._call("on_end", record)

    def describe(self) -> dict[str, Any]:
        """The tracker's description plus the warning, if it stopped."""
        return {**self.tracker.describe(), **({"error": self.error} if self.error else {})}


def make_tracker(config: Mapping[str, Any]) -> SafeTracker:
    """The tracker ``config["logger"]`` names (``none`` when absent).

    Raises :class:`TrackingError` (one line) for an unknown logger or a missing library, before
    any training starts.
    """
    settings = dict(config.get("logger") or {"name": "none"})
    name = settings.get("name", "none")
    if name not in TRACKERS:
        raise TrackingError(f"logger={name!r} is not a logger; choices: {sorted(TRACKERS)}")
    if name in EXTRA:
        require(name, name)  # each library's module is named like its logger
    return SafeTracker(TRACKERS[name](settings))
