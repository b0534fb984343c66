"""Experiment tracking (issue #15): a tiny smoke run with each logger writes what the library's own
reader opens — TensorBoard's event accumulator, ``mlflow.search_runs``, a W&B offline run folder
that ``wandb sync`` recognises — and a tracker that fails never costs the run or its record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.record import read_record
from bench.runner import execute
from bench.tracking import TRACKERS, TrackingError, eval_values, make_tracker, summary_values
from tests.conftest import CONF, group_choices
from tests.test_runner import run_config

SMOKE = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "method.num_virtual_tokens=4"]
pytestmark = pytest.mark.usefixtures("one_thread")


def smoke_run(tmp_path: Path, *overrides: str) -> dict:
    record = execute(run_config([*SMOKE, *overrides]), tmp_path / "run")
    assert record["status"] == "ok", record["error"]
    assert read_record(tmp_path / "run" / "result.json")["tracking"] == record["tracking"]
    return record


def test_logger_group_is_the_registry() -> None:
    assert group_choices("logger") == sorted(TRACKERS)
    assert "logger: none" in (CONF / "config.yaml").read_text()  # the default


def test_missing_library_is_one_line_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(TrackingError) as caught:
        make_tracker({"logger": {"name": "mlflow"}})
    message = str(caught.value)
    assert "\n" not in message and "pip install 'softprompt-bench[mlflow]'" in message


def test_missing_library_fails_the_run_before_training_with_a_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    record = execute(run_config([*SMOKE, "logger=wandb"]), tmp_path)
    assert record["status"] == "failed" and "softprompt-bench[wandb]" in record["error"]
    assert record["metrics"]["history"] == [] and (tmp_path / "result.json").exists()


def test_unknown_logger_names_the_choices() -> None:
    with pytest.raises(TrackingError, match=r"choices: \['mlflow', 'none', 'tensorboard', 'wandb'\]"):
        make_tracker({"logger": {"name": "comet"}})


def test_summary_and_eval_values_take_finite_numbers_only() -> None:
    record = {
        "metrics": {"final": {"accuracy": 0.5}, "best": {"accuracy": 0.75}, "best_step": 4, "test": None},
        "params": {"trainable": 10, "trainable_percent": 0.1},
        "throughput": {"train_tokens_per_s": 99.0, "generation_tokens_per_s": None},
    }
    assert summary_values(record) == {
        "final/accuracy": 0.5,
        "best/accuracy": 0.75,
        "best/step": 4.0,
        "params/trainable": 10.0,
        "params/trainable_percent": 0.1,
        "throughput/train_tokens_per_s": 99.0,
    }
    entry = {"step": 2, "epoch": 0.5, "split": "validation", "accuracy": 0.5, "train_loss": None}
    assert eval_values(entry) == {"validation/epoch": 0.5, "validation/accuracy": 0.5}


def test_tensorboard_smoke_run(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the 'tensorboard' extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = smoke_run(tmp_path, "logger=tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    steps = record["throughput"]["train_steps"]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    assert len(events.Scalars("train/lr")) == steps
    history = record["metrics"]["history"]
    assert [e.value for e in events.Scalars("validation/accuracy")] == pytest.approx([h["accuracy"] for h in history])
    assert events.Scalars("final/accuracy")[0].value == pytest.approx(record["metrics"]["final"]["accuracy"])
    assert {"params/trainable", "throughput/train_tokens_per_s"} <= set(scalars)
    assert "config" in " ".join(events.Tags()["tensors"]) and record["tracking"]["logger"] == "tensorboard"


def test_mlflow_smoke_run(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="logger=mlflow needs the 'mlflow' extra")
    record = smoke_run(tmp_path, "logger=mlflow", f"logger.dir={tmp_path / 'mlruns'}", "sweep_name=smoke")
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["smoke"])
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"
    row = runs.loc[0]
    assert row["run_id"] == record["tracking"]["run_id"]
    assert row["metrics.final/accuracy"] == pytest.approx(record["metrics"]["final"]["accuracy"])
    assert row["metrics.params/trainable"] == record["params"]["trainable"]
    assert row["params.method.name"] == "prompt_tuning" and row["params.trainer.name"] == "smoke"
    assert row["tags.record_dir"] == str((tmp_path / "run").resolve())
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(row["run_id"], "train/loss")
    assert sorted(m.step for m in losses) == list(range(1, record["throughput"]["train_steps"] + 1))
    assert len(client.get_metric_history(row["run_id"], "validation/accuracy")) == len(record["metrics"]["history"])
    assert [a.path for a in client.list_artifacts(row["run_id"], "record")] == ["record/result.json"]


def test_wandb_smoke_run_is_offline_without_login(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="logger=wandb needs the 'wandb' extra")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    record = smoke_run(tmp_path, "logger=wandb")
    assert record["tracking"]["mode"] == "offline" and "error" not in record["tracking"], record["tracking"]
    import wandb

    wandb.teardown()  # what the end of the process does: W&B's service writes out everything it holds
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"train/lr", b"validation/accuracy", b"final/accuracy", b"params/trainable"):
        assert key in data
    listed = subprocess.run(
        [Path(sys.executable).parent / "wandb", "sync", "--dry-run", str(runs[0])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_SILENT": "false"},
    )
    assert "Would sync 1 run" in listed.stdout + listed.stderr


def test_a_failing_tracker_never_costs_the_run(tmp_path: Path, capsys) -> None:
    pytest.importorskip("mlflow", reason="logger=mlflow needs the 'mlflow' extra")
    record = smoke_run(tmp_path, "logger=mlflow", "logger.tracking_uri=nosuchscheme://nowhere")
    assert record["metrics"]["final"] and "logger=mlflow stopped in on_start" in record["tracking"]["error"]
    assert "warning: logger=mlflow stopped" in capsys.readouterr().err
