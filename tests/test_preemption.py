"""Preemption-safe runs: SIGTERM/SIGINT leave a record, free the lock and a checkpoint; a rerun resumes
from it and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.identity import LOCK_NAME
from bench.record import read_record, validate_record
from bench.runner import config_hash, execute
from tests.conftest import ROOT
from tests.test_runner import run_config

# LoRA's dropout draws from the torch RNG at every step and AdamW keeps moments: a resume that missed
# either (or the data position) would not reproduce the uninterrupted run's numbers
POINT = ["method=lora", "model=tiny_bert", "task=synth_cls", "trainer.max_steps=8", "trainer.eval_every=2"]


def _comparable(record: dict) -> dict:
    """What a run computes: the metrics, its history without wall times."""
    metrics = dict(record["metrics"])
    metrics["history"] = [{k: v for k, v in entry.items() if k != "time_s"} for entry in metrics["history"]]
    return {k: metrics[k] for k in ("final", "best", "best_step", "history", "test")}


def _signal_after_first_validation(monkeypatch, number: int) -> None:
    """Send ``number`` to this process right after the first validation pass, as Slurm would at any time."""
    import bench.train

    original = bench.train._evaluate_and_track
    sent = []

    def evaluate_then_signal(*args, **kwargs):
        original(*args, **kwargs)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), number)

    monkeypatch.setattr(bench.train, "_evaluate_and_track", evaluate_then_signal)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_after_the_first_validation_pass_checkpoints_and_the_rerun_matches(
    number: int, tmp_path: Path, monkeypatch, one_thread
) -> None:
    config = run_config(POINT)
    whole = execute(config, tmp_path / "whole")
    assert whole["status"] == "ok" and whole["provenance"]["resumed_from_step"] is None
    assert not (tmp_path / "whole" / "checkpoint").exists()  # a finished run keeps no weights

    run_dir = tmp_path / "cut"
    with monkeypatch.context() as patch:
        _signal_after_first_validation(patch, number)
        cut = execute(run_config(POINT), run_dir)
    assert cut["status"] == "interrupted" and validate_record(cut) == []
    assert cut["interrupted"] == {
        "signal": signal.Signals(number).name,
        "step": 2,
        "checkpoint": {"path": "checkpoint", "step": 2},
    }
    assert cut["error"].startswith(f"Interrupted: {signal.Signals(number).name} at step 2")
    assert read_record(run_dir / "result.json")["status"] == "interrupted"
    assert not (run_dir / LOCK_NAME).exists()  # the lock is free for the rerun
    # safetensors and JSON only: nothing a rerun loads can run code
    assert sorted(p.suffix for p in (run_dir / "checkpoint").iterdir()) == [".json", ".safetensors"]

    resumed = execute(run_config(POINT), run_dir)
    assert resumed["status"] == "ok" and resumed["provenance"]["resumed_from_step"] == 2
    assert [h["step"] for h in resumed["metrics"]["history"]] == [2, 4, 6, 8]
    # the same operations on the same bits in the same order on CPU: equal exactly, not within a tolerance
    assert _comparable(resumed) == _comparable(whole)
    assert not (run_dir / "checkpoint").exists()


def test_a_checkpoint_of_another_computation_is_named_and_ignored(
    tmp_path: Path, monkeypatch, one_thread, capsys
) -> None:
    with monkeypatch.context() as patch:
        _signal_after_first_validation(patch, signal.SIGTERM)
        execute(run_config(POINT), tmp_path)
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["method"]["r"] = 4  # written for another LoRA rank
    state_file.write_text(json.dumps(state))
    rerun = execute(run_config(POINT), tmp_path)
    assert rerun["status"] == "ok" and rerun["provenance"]["resumed_from_step"] is None
    assert f"warning: {state_file}: a checkpoint of another computation" in capsys.readouterr().err


def test_a_checkpoint_resumes_after_a_setting_was_added_with_the_old_behaviour_as_default(
    tmp_path: Path, monkeypatch, one_thread
) -> None:
    with monkeypatch.context() as patch:
        _signal_after_first_validation(patch, signal.SIGTERM)
        execute(run_config(POINT), tmp_path)
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    # as an older version of the code wrote it: without two settings added since, whose defaults keep the
    # behaviour it had, and with the hash that version computed
    del state["config"]["method"]["dropout"], state["config"]["trainer"]["checkpoint_every"]
    state_file.write_text(json.dumps({**state, "config_hash": "0" * 16}))
    resumed = execute(run_config(POINT), tmp_path)
    assert resumed["status"] == "ok" and resumed["provenance"]["resumed_from_step"] == 2


def test_checkpoint_every_does_not_change_what_a_run_is() -> None:
    assert config_hash(run_config(POINT)) == config_hash(run_config([*POINT, "trainer.checkpoint_every=1"]))


def test_sigterm_to_a_run_process_exits_143_with_a_record_and_a_free_lock(tmp_path: Path) -> None:
    """As Slurm preempts: a long run, checkpointed at every validation pass, gets SIGTERM mid-training."""
    runs = tmp_path / "runs"
    args = [*POINT, "trainer=smoke", "trainer.max_steps=100000", "trainer.checkpoint_every=1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *args, f"runs_root={runs}", "sweep_name=pre"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while not list(runs.rglob("checkpoint/state.json")) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-2000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, stderr[-2000:]
    (record_path,) = runs.rglob("result.json")
    record = read_record(record_path)
    assert record["status"] == "interrupted" and record["interrupted"]["signal"] == "SIGTERM"
    assert record["interrupted"]["checkpoint"]["step"] == record["interrupted"]["step"] >= 2
    assert not (record_path.parent / LOCK_NAME).exists()
    assert "[interrupted]" in stderr
