"""Experiment tracking (issue #15): a tiny smoke run with each logger writes what the library's own
reader opens — TensorBoard's event accumulator, ``mlflow.search_runs``, a W&B offline run folder
that ``wandb sync`` recognises — and a tracker that fails never costs the run or its record.

Grouping (issue #25): a tiny sweep (two methods, two seeds) read back with each tool's own reader groups
like the report: one HParams experiment per sweep with every method's keys, a session group per setting,
resolved LRs; MLflow children of one parent run per sweep, named with their hyperparameters and tagged by
setting; W&B ``group`` = setting, ``job_type`` = method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.identity import run_dir, setting_label
from bench.record import read_record
from bench.runner import execute, run_point
from bench.tracking import TRACKERS, TrackingError, eval_values, make_tracker, summary_values, sweep_parent
from tests.conftest import CONF, ROOT, group_choices
from tests.test_identity import job
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
    runs = mlflow.search_runs(experiment_names=["smoke"], filter_string="tags.role = 'run'")
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


SWEEP = [("prompt_tuning", 0), ("prompt_tuning", 1), ("lora", 0), ("lora", 1)]
"""A tiny sweep: two methods x two seeds (prompt tuning with a hyperparameter off its default)."""
PT, LORA = (
    "prompt_tuning/tiny_bert/synth_cls/num_virtual_tokens=4,trainer=smoke",
    "lora/tiny_bert/synth_cls/trainer=smoke",
)
"""Their settings, as their folders name them (bench.identity.setting_label)."""


def tiny_sweep(tmp_path: Path, points: list[tuple[str, int]], *overrides: str) -> list[dict]:
    """Run ``points`` as ``python -m bench -m`` would (folder and hparams from bench.identity); their records."""
    records = []
    for method, seed in points:
        extra = ["method.num_virtual_tokens=4"] if method == "prompt_tuning" else []
        args = [f"method={method}", f"seed={seed}", "model=tiny_bert", "task=synth_cls", "trainer=smoke", *extra]
        point, config = job([*args, f"runs_root={tmp_path / 'runs'}", "sweep_name=grp", *overrides])
        outcome = run_point(config, run_dir(config, point), args, point)
        assert outcome.status == "ok", outcome.reason
        records.append(outcome.record)
    return records


def _hparams_plugin(folder: Path) -> dict[str, bytes]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events.PluginTagToContent("hparams")


def test_tensorboard_one_experiment_per_sweep_and_a_session_group_per_setting(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the 'tensorboard' extra")
    from tensorboard.plugins.hparams import api_pb2, metadata

    records = tiny_sweep(tmp_path, SWEEP, "logger=tensorboard")
    (root,) = (tmp_path / "runs" / "grp" / "tensorboard").glob("hparams-*")  # replaced, never a second definition
    assert root.name == f"hparams-{2 * len(SWEEP)}"  # each run updated it as it started and as it ended
    experiment = metadata.parse_experiment_plugin_data(_hparams_plugin(root)[metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert {"method.num_virtual_tokens", "method.r", "method.name", "trainer.lr"} <= set(infos)  # every method's keys
    assert "seed" not in infos and infos["method.name"].differs
    assert (infos["trainer.lr"].domain_interval.min_value, infos["trainer.lr"].domain_interval.max_value) == (
        0.003,
        0.03,
    )  # lora's and prompt tuning's own LRs (conf/method/*.yaml), resolved from trainer.lr: null
    declared = {info.name.tag for info in experiment.metric_infos}
    assert {"final/accuracy", "best/accuracy", "test/accuracy", "best/step"} <= declared
    assert not any(tag.startswith(("train/", "params/")) for tag in declared)
    sessions = {}
    for record in records:
        folder = Path(record["tracking"]["location"])
        plugin = _hparams_plugin(folder)
        start = metadata.parse_session_start_info_plugin_data(plugin[metadata.SESSION_START_INFO_TAG])
        end = metadata.parse_session_end_info_plugin_data(plugin[metadata.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_SUCCESS and "seed" not in start.hparams
        assert start.group_name == setting_label(record["provenance"]["config"], record["hparams"])
        assert start.hparams["trainer.lr"].number_value == record["provenance"]["trainer"]["lr"]
        sessions.setdefault(start.group_name, []).append(record["seed"])
    assert sessions == {PT: [0, 1], LORA: [0, 1]}


def test_mlflow_parent_run_per_sweep_children_named_and_tagged_by_setting(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="logger=mlflow needs the 'mlflow' extra")
    store = tmp_path / "mlruns"
    points = [("prompt_tuning", 0), ("prompt_tuning", 1), ("lora", 0)]
    records = tiny_sweep(tmp_path, points, "logger=mlflow", f"logger.dir={store}", "save_adapter=true")
    client = mlflow.MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name("grp")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'sweep'")
    assert parent.info.run_name == "grp" and parent.data.tags["sweep"] == "grp"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_id = {run.info.run_id: run for run in children}
    assert sorted(by_id) == sorted(r["tracking"]["run_id"] for r in records)
    names = sorted(run.info.run_name for run in children)
    assert names == [f"{LORA}/seed=0", f"{PT}/seed=0", f"{PT}/seed=1"]
    settings = [by_id[r["tracking"]["run_id"]].data.tags["setting"] for r in records]
    assert settings[0] == settings[1] != settings[2]
    hashes = [by_id[r["tracking"]["run_id"]].data.tags["setting_hash"] for r in records]
    assert hashes[0] == hashes[1] != hashes[2]
    lrs = [by_id[r["tracking"]["run_id"]].data.params["trainer.lr"] for r in records]
    assert lrs == ["0.03", "0.03", "0.003"]  # each method's LR, never "None"
    for record in records:
        listed = {a.path for a in client.list_artifacts(record["tracking"]["run_id"], "adapter")}
        assert {"adapter/adapter.safetensors", "adapter/adapter.json"} <= listed


def test_mlflow_sweep_parent_keeps_the_oldest_when_runs_raced(tmp_path: Path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="logger=mlflow needs the 'mlflow' extra")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient((tmp_path / "mlruns").as_uri())
    experiment_id = client.create_experiment("race")
    first = sweep_parent(client, experiment_id, "race")
    assert sweep_parent(client, experiment_id, "race") == first  # found, not created again
    older = client.create_run(experiment_id, start_time=1, tags={"role": "sweep", "sweep": "race"}).info.run_id
    assert sweep_parent(client, experiment_id, "race") == older
    assert sweep_parent(client, experiment_id, "other") not in (first, older)


def wandb_records(run_folder: Path) -> list:
    """The protobuf records of a W&B offline run file (``run-*.wandb``): W&B's 7-byte header, then LevelDB's
    log format (32 KiB blocks of chunks: CRC32C 4 bytes, length 2, type 1 = full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_folder.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    records, pending, offset, block = [], b"", 7, 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        length, kind = int.from_bytes(data[offset + 4 : offset + 6], "little"), data[offset + 6]
        chunk, offset = data[offset + 7 : offset + 7 + length], offset + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_group_is_the_setting_and_job_type_the_method(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="logger=wandb needs the 'wandb' extra")
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    records = tiny_sweep(tmp_path, [("prompt_tuning", 0), ("prompt_tuning", 1), ("lora", 0)], "logger=wandb")
    wandb.teardown()  # what the end of the process does: W&B's service writes out everything it holds
    runs = []
    for record in records:
        folder = Path(record["tracking"]["location"])  # <run>/wandb/offline-run-*
        (run,) = [r.run for r in wandb_records(folder) if r.HasField("run")]
        runs.append(run)
        assert record["tracking"]["group"] == run.run_group
    assert [r.run_group for r in runs] == [PT, PT, LORA]
    assert [r.job_type for r in runs] == ["prompt_tuning", "prompt_tuning", "lora"]
    assert [r.display_name for r in runs][1] == f"{PT}/seed=1"
    assert list(runs[2].tags) == ["grp", "lora", "tiny_bert", "synth_cls"]
    config = {item.key: item.value_json for item in runs[2].config.update}
    trainer = json.loads(config["trainer"])
    assert (trainer["lr"], trainer["head_lr"]) == (0.003, 0.003)  # LoRA's LR (conf/method/lora.yaml), not null


def _update(folder: str, key: str) -> None:
    from bench.tracking import update_experiment

    update_experiment(Path(folder), {key: 1, "shared": key}, [f"final/{key}"])


def test_concurrent_experiment_updates_keep_every_key_in_one_definition(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the 'tensorboard' extra")
    import multiprocessing

    from tensorboard.plugins.hparams import metadata

    keys = [f"k{i}" for i in range(6)]
    with multiprocessing.get_context("fork").Pool(3) as pool:  # runs of one sweep ending at once
        pool.starmap(_update, [(str(tmp_path), key) for key in keys])
    (folder,) = tmp_path.glob("hparams-*")
    experiment = metadata.parse_experiment_plugin_data(_hparams_plugin(folder)[metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == {*keys, "shared"}
    assert sorted(value.string_value for value in infos["shared"].domain_discrete.values) == keys
    assert {info.name.tag for info in experiment.metric_infos} == {f"final/{key}" for key in keys}


def test_the_mlflow_extra_installs_what_mlflow_ui_needs() -> None:
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [Requirement(r).name for r in extras["mlflow"]] == ["mlflow"]  # the full package, not mlflow-skinny
    pytest.importorskip("flask", reason="mlflow-skinny is installed here, not the 'mlflow' extra: no server, no UI")
    import mlflow
    import mlflow.server  # noqa: F401 — what `mlflow ui` starts

    assert (Path(mlflow.__file__).parent / "server" / "js" / "build" / "index.html").is_file()  # the web UI
