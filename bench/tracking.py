"""Experiment tracking: ``logger=none|tensorboard|mlflow|wandb`` (conf/logger/).

A tracker is a small callback object the runner and the training loop call:
``on_start(config, run_dir, hparams)``, ``on_train_step(step, loss, lr)`` every optimizer step,
``on_eval(step, metrics)`` every validation pass, ``on_end(record)`` once the record is written.
Each backend writes through its library's own API: TensorBoard's ``SummaryWriter`` (event files in
``<run>/tensorboard/``), MLflow's fluent API (a local file store by default, ``logger.tracking_uri``
when given) and W&B's ``wandb.init`` (offline unless the user is logged in; ``<run>/wandb/``).

Every tracker groups runs as the report does (:func:`run_names`): a run's *setting* is its folder less
the seed level (``method/model/task[/hparams]``, bench.identity.setting_label), so the seeds of one setting
form one group (TensorBoard's HParams session group, W&B's ``group``, MLflow's ``setting`` tag), and the
sweep is the level above (one HParams experiment, W&B tag, MLflow parent run). Parameters are the resolved
config: ``trainer.lr: null`` is logged as the method's LR the run trains with (:func:`resolved_config`).

The record is the source of truth: a tracker that fails prints one warning line and stops, and the
run and its record go on.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import math
import netrc
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.identity import REPEAT, flatten, identity_view, run_label, setting_hash, setting_label
from bench.record import error_line

EXTRA = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""logger name -> the optional extra that installs its library."""
SUMMARY_SECTIONS = ("final", "best", "test")
"""The record's metric sections every tracker declares as a run's result (``final/<metric>``, ...)."""


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
            flat[name] = _scalar(value)
    return flat


def _scalar(value: Any) -> bool | int | float | str:
    """A value every tracker takes: numbers, booleans and strings as they are, anything else as JSON."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the trainer's LRs as the run trains with them: ``trainer.lr``/``head_lr`` null → the
    method's LR (bench.settings.TrainerConfig.with_method_lr). Unchanged when the method or trainer block is
    invalid: the run then fails before training and its record says why."""
    from bench.settings import TrainerConfig
    from methods import get_method

    try:
        fields = {key: value for key, value in config["method"].items() if key != "name"}
        method = get_method(str(config["method"]["name"])).from_dict(fields)
        trainer = TrainerConfig.from_dict(config.get("trainer") or {}).with_method_lr(method.lr)
    except (KeyError, TypeError, ValueError):
        return dict(config)
    return {**config, "trainer": {**config["trainer"], "lr": trainer.lr, "head_lr": trainer.head_lr}}


def run_names(config: Mapping[str, Any], hparams: Mapping[str, Any] | None) -> dict[str, str]:
    """How every tracker names and groups a run: ``sweep``, ``setting`` (the report's point: the run's folder
    less the seed level), ``setting_hash`` (its seed-free identity), ``run`` (the setting plus ``seed=<n>``),
    and the ``method``, ``model`` and ``task`` names."""
    return {
        "sweep": str(config.get("sweep_name") or "default"),
        "setting": setting_label(config, hparams),
        "setting_hash": setting_hash(config),
        "run": run_label(config, hparams),
        **{group: str((config.get(group) or {}).get("name")) for group in ("method", "model", "task")},
    }


def setting_params(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The settings that decide what a run computes (bench.identity.identity_view, seed left out), flat:
    what a setting's HParams trial shows. ``config`` should be resolved (:func:`resolved_config`)."""
    flat = flatten({part: value for part, value in identity_view(config).items() if part != REPEAT})
    return {key: _scalar(value) for key, value in sorted(flat.items())}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summary_values(record: Mapping[str, Any]) -> dict[str, float]:
    """A record's final numbers: ``final/<metric>``, ``best/<metric>``, ``test/<metric>``,
    ``params/<name>``, ``throughput/<name>`` (finite numbers only)."""
    metrics = record.get("metrics") or {}
    sections = {name: metrics.get(name) for name in SUMMARY_SECTIONS}
    sections.update(params=record.get("params"), throughput=record.get("throughput"))
    values = {
        f"{name}/{key}": float(value)
        for name, section in sections.items()
        for key, value in (section or {}).items()
        if _finite(value)
    }
    if _finite(metrics.get("best_step")):
        values["best/step"] = float(metrics["best_step"])
    return values


def result_names(summary: Mapping[str, float]) -> list[str]:
    """The summary values that are a run's result (``final/``, ``best/``, ``test/``): HParams' metric columns."""
    return sorted(key for key in summary if key.split("/", 1)[0] in SUMMARY_SECTIONS)


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
        self.names: dict[str, str] = {}

    def on_start(self, config: Mapping[str, Any], run_dir: Path, hparams: Mapping[str, Any] | None = None) -> None:
        """Open the tracker's run; log the resolved config as parameters; name and group it (:func:`run_names`)."""

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        """Log one optimizer step's training loss and learning rate."""

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log one validation pass (the record's history entry)."""

    def on_end(self, record: Mapping[str, Any]) -> None:
        """Log the record's metrics, params and throughput as summary values; close the run."""

    def describe(self) -> dict[str, Any]:
        """What the record keeps about tracking (``record["tracking"]``)."""
        return {"logger": self.name, "location": self.location, "group": self.names.get("setting")}


def tensorboard_dirs(settings: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path) -> tuple[Path, Path]:
    """(this run's TensorBoard folder, its sweep's HParams experiment folder).

    The log root is ``logger.dir``, or the sweep folder (``<runs_root>/<sweep_name>``): a run logs in
    ``<root>/<its folder below the sweep>/tensorboard``, the sweep's experiment lives in ``<root>/tensorboard``,
    so ``tensorboard --logdir <root>`` sees both. A run outside its sweep's folder is a sweep of its own."""
    sweep = Path(str(config.get("runs_root") or ".")) / str(config.get("sweep_name") or "default")
    try:
        below = Path(run_dir).resolve().relative_to(sweep.resolve())
    except ValueError:
        below, sweep = Path(), Path(run_dir)
    root = Path(settings.get("dir") or sweep)
    return root / below / "tensorboard", root / "tensorboard"


def _hparams_summary(tag: str, **data: Any) -> Any:
    """A TensorBoard summary carrying one HParams plugin message (``experiment``, ``session_start_info``...)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(**data)
    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content), tensor=metadata.NULL_TENSOR)
    return Summary(value=[value])


def _hparam_value(value: bool | int | float | str) -> Any:
    from google.protobuf import struct_pb2

    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=str(value))


def _hparam_info(name: str, values: list[Any]) -> Any:
    """A hyperparameter's column: its type, and its domain over the values the sweep's runs took."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2

    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    info = api_pb2.HParamInfo(name=name, display_name=name, differs=len(values) > 1)
    if kinds == {float}:
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value, info.domain_interval.max_value = min(values), max(values)
    elif len(kinds) == 1:  # strings or booleans: the values seen are the domain
        info.type = api_pb2.DATA_TYPE_STRING if kinds == {str} else api_pb2.DATA_TYPE_BOOL
        info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[_hparam_value(v) for v in values]))
    return info  # mixed kinds (null in one run, a number in another): no type, no domain


def update_experiment(folder: Path, params: Mapping[str, Any], metrics: list[str]) -> dict[str, Any]:
    """Merge a run's hyperparameters and result metrics into its sweep's HParams experiment; return the union.

    TensorBoard takes one experiment definition per log root (the first it meets) and reads a tag's definition
    once, so a sweep keeps exactly one, and each update replaces its folder: the union so far sits in
    ``experiment.json``; under an exclusive lock (runs of one sweep may end at once, in several processes)
    an update writes ``hparams-<n+1>/`` and removes ``hparams-<n>/``, which a running TensorBoard drops."""
    from tensorboard.plugins.hparams import api_pb2, metadata
    from torch.utils.tensorboard.writer import FileWriter

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "experiment.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        path = folder / "experiment.json"
        union = json.loads(path.read_text()) if path.exists() else {"version": 0, "hparams": {}, "metrics": []}
        for key, value in params.items():
            seen = union["hparams"].setdefault(key, [])
            seen.extend([] if value in seen else [value])
        union["metrics"] = sorted(set(union["metrics"]) | set(metrics))
        union["version"] += 1
        experiment = api_pb2.Experiment(
            hparam_infos=[_hparam_info(key, values) for key, values in sorted(union["hparams"].items())],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m), display_name=m) for m in union["metrics"]],
        )
        writer = FileWriter(str(folder / f"hparams-{union['version']}"))
        writer.add_summary(_hparams_summary(metadata.EXPERIMENT_TAG, experiment=experiment))
        writer.close()
        path.with_suffix(".tmp").write_text(json.dumps(union, indent=1))
        path.with_suffix(".tmp").replace(path)
        for old in folder.glob("hparams-*"):
            if old.name != f"hparams-{union['version']}":
                shutil.rmtree(old, ignore_errors=True)
    return union


class TensorBoardTracker(Tracker):
    """Scalars, the config as text, an HParams session per run grouped by setting, one experiment per sweep."""

    name = "tensorboard"

    def on_start(self, config: Mapping[str, Any], run_dir: Path, hparams: Mapping[str, Any] | None = None) -> None:
        require("tensorboard", self.name)
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2
        from torch.utils.tensorboard import SummaryWriter

        resolved = resolved_config(config)
        folder, self.experiment_dir = tensorboard_dirs(self.settings, config, run_dir)
        self.location, self.names = str(folder), run_names(config, hparams)
        self.params = setting_params(resolved)
        self.writer = SummaryWriter(log_dir=str(folder))
        self.writer.add_text("config", "```\n" + json.dumps(resolved, indent=2, default=str) + "\n```")
        self.writer.add_text("record_dir", str(Path(run_dir).resolve()))
        start = plugin_data_pb2.SessionStartInfo(group_name=self.names["setting"], start_time_secs=time.time())
        for key, value in self.params.items():
            start.hparams[key].CopyFrom(_hparam_value(value))
        self.writer.file_writer.add_summary(_hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start))
        update_experiment(self.experiment_dir, self.params, [])

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in eval_values(metrics).items():
            self.writer.add_scalar(key, value, step)

    def on_end(self, record: Mapping[str, Any]) -> None:
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        summary = summary_values(record)
        step = int(summary.get("best/step", 0))
        for key, value in summary.items():
            self.writer.add_scalar(key, value, step)
        status = api_pb2.STATUS_SUCCESS if record.get("status") == "ok" else api_pb2.STATUS_FAILURE
        end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
        self.writer.file_writer.add_summary(_hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))
        self.writer.close()
        update_experiment(self.experiment_dir, self.params, result_names(summary))


SWEEP_ROLE = "sweep"
"""MLflow: the ``role`` tag of a sweep's parent run (its children carry ``role=run``)."""


def sweep_parent(client: Any, experiment_id: str, sweep: str) -> str:
    """The id of the sweep's parent run in this experiment, created when there is none.

    Runs of one sweep may start at once in several processes: each that finds none creates one, then all
    keep the oldest (start time, then id) and a creator that lost deletes its own."""
    query = f"tags.role = '{SWEEP_ROLE}' and tags.sweep = '{sweep}'"

    def oldest() -> str | None:
        runs = client.search_runs([experiment_id], query, max_results=100)
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if runs else None

    found = oldest()
    if found is not None:
        return found
    ours = client.create_run(experiment_id, run_name=sweep, tags={"role": SWEEP_ROLE, "sweep": sweep}).info.run_id
    client.set_terminated(ours, "FINISHED")  # a container: its children hold the numbers
    chosen = oldest() or ours
    if chosen != ours:
        client.delete_run(ours)
    return chosen


class MlflowTracker(Tracker):
    """MLflow's fluent API: a child of the sweep's parent run, named and tagged by setting; params, step
    metrics, summary metrics, ``result.json`` and the saved adapter as artefacts."""

    name = "mlflow"

    def on_start(self, config: Mapping[str, Any], run_dir: Path, hparams: Mapping[str, Any] | None = None) -> None:
        mlflow = require("mlflow", self.name)
        uri = self.settings.get("tracking_uri")
        if not uri:  # a local file store; MLflow 3 asks for this opt-in to keep using one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(self.settings.get("dir") or "mlruns").resolve().as_uri()
        mlflow.set_tracking_uri(uri)
        self.names = run_names(config, hparams)
        experiment = mlflow.set_experiment(self.settings.get("experiment") or self.names["sweep"])
        parent = sweep_parent(mlflow.MlflowClient(), experiment.experiment_id, self.names["sweep"])
        self.run_dir, self.mlflow, self.location = Path(run_dir), mlflow, uri
        tags = {"role": "run", "record_dir": str(self.run_dir.resolve()), **self.names}
        self.run = mlflow.start_run(run_name=self.names["run"], parent_run_id=parent, tags=tags)
        params = {key: str(value)[:6000] for key, value in flat_config(resolved_config(config)).items()}
        mlflow.log_params(params)  # 6000: MLflow's longest parameter value

    def on_train_step(self, step: int, loss: float, lr: float) -> None:
        self.mlflow.log_metrics({"train/loss": loss, "train/lr": lr}, step=step)

    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics(eval_values(metrics), step=step)

    def on_end(self, record: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics(summary_values(record))
        self.mlflow.set_tag("status", record.get("status"))
        if (self.run_dir / "result.json").exists():
            self.mlflow.log_artifact(str(self.run_dir / "result.json"), artifact_path="record")
        adapter = record.get("adapter") or {}
        for key, artifact_path in (("path", "adapter"), ("peft_path", "peft")):
            if adapter.get(key) and (self.run_dir / adapter[key]).is_dir():
                self.mlflow.log_artifacts(str(self.run_dir / adapter[key]), artifact_path=artifact_path)
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


WANDB_TAG_MAX = 64
"""W&B's longest tag."""


class WandbTracker(Tracker):
    """``wandb.init`` in ``<run>/wandb/``: offline unless logged in (``logger.mode`` overrides); ``group`` is
    the setting, ``job_type`` the method, tags the sweep, method, model and task."""

    name = "wandb"

    def on_start(self, config: Mapping[str, Any], run_dir: Path, hparams: Mapping[str, Any] | None = None) -> None:
        wandb = require("wandb", self.name)
        mode = (
            self.settings.get("mode") or os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        )
        folder = Path(self.settings.get("dir") or run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        names = self.names = run_names(config, hparams)
        self.run = wandb.init(
            project=self.settings.get("project") or "softprompt-bench",
            dir=str(folder),
            mode=mode,
            config={**resolved_config(config), "setting": names["setting"], "setting_hash": names["setting_hash"]},
            name=names["run"],
            group=names["setting"],
            job_type=names["method"],
            tags=[names[key][:WANDB_TAG_MAX] for key in ("sweep", "method", "model", "task")],
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

    def on_start(self, config: Mapping[str, Any], run_dir: Path, hparams: Mapping[str, Any] | None = None) -> None:
        """Open the tracker's run (see :meth:`Tracker.on_start`)."""
        self._call("on_start", config, run_dir, hparams)

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
