"""The reference-result presets and ``python -m bench.protocol`` (grid at one seed, then seeds)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.protocol import (
    Choice,
    Plan,
    ProtocolError,
    choose,
    choose_all,
    describe,
    grid_command,
    main,
    make_plan,
    run_counts,
    seeds_command,
)
from bench.report import load_records
from tests.conftest import ROOT, compose

PRESETS = ("cpu_ner", "cpu_superglue", "fewglue", "cpu_generation")
SOFT = ("prompt_tuning", "prefix_tuning", "p_tuning_v2")
SUPERGLUE = ("boolq", "cb", "copa", "rte", "wic", "wsc", "multirc", "record")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_task_of_a_preset_composes_with_its_data_folder(preset: str, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOFTPROMPT_DATA", str(tmp_path))
    plan = make_plan(preset, [])
    for task in plan.tasks:
        cfg = compose([f"sweep={preset}", f"task={task}", f"model={plan.models[0]}"], hydra_node=False)
        data_dir = Path(cfg.task.data_dir)
        assert data_dir.parent.parent == tmp_path and data_dir.name.lower() == task.lower(), data_dir
        assert cfg.sweep_name == preset and cfg.protocol.seeds


@pytest.mark.parametrize("preset", ("cpu_ner", "cpu_superglue", "fewglue"))
def test_soft_prompt_methods_have_an_lr_grid_of_three(preset: str) -> None:
    plan = make_plan(preset, [])
    assert set(plan.methods) == {"head_only", "lora", "full_finetune", *SOFT}
    for method in SOFT:
        assert len(plan.grid[method]["trainer.lr"]) >= 3
    assert len(plan.seeds) >= 3 and plan.grid_seed in plan.seeds


def test_fewglue_trains_on_train32_selects_on_dev32_reports_val() -> None:
    plan = make_plan("fewglue", [])
    assert sorted(plan.tasks) == sorted(SUPERGLUE)
    cfg = compose(["sweep=fewglue", "task=rte"], hydra_node=False)
    files = OmegaConf.to_container(cfg.task.files, resolve=True)
    assert files == {"train": ["train32.jsonl"], "validation": ["dev32.jsonl"], "test": ["val.jsonl"]}


def test_cpu_generation_runs_the_five_generating_methods_on_smollm2() -> None:
    plan = make_plan("cpu_generation", [])
    assert plan.models == ["smollm2"] and sorted(plan.tasks) == ["e2e", "webnlg"]
    assert set(plan.methods) == {"lora", "full_finetune", *SOFT}


def test_cpu_generation_lrs_are_the_ones_cpu_ner_chose() -> None:
    """The preset says its LRs (no grid affordable on CPU) are cpu_ner's measured choices; hold it to that."""
    choices = json.loads((ROOT / "results" / "cpu_ner" / "records" / "protocol.json").read_text())
    chosen = {c["method"]: c["point"]["trainer.lr"] for c in choices["choices"]}
    plan = make_plan("cpu_generation", [])
    for method in plan.methods:
        assert plan.grid[method]["trainer.lr"] == [chosen[method]], method


def test_commands_and_counts() -> None:
    plan = make_plan("cpu_ner", ["task.data_dir=/d"])
    assert grid_command(plan, "prompt_tuning")[1:] == [
        "-m",
        "bench",
        "-m",
        "sweep=cpu_ner",
        "method=prompt_tuning",
        "model=minilm",
        "task=conll2003",
        "seed=0",
        "trainer.lr=0.01,0.03,0.1",
        "task.data_dir=/d",
    ]
    choice = Choice("lora", "minilm", "conll2003", {"trainer.lr": 0.003}, 0.8, "f1", [])
    assert seeds_command(plan, choice)[4:] == [
        "sweep=cpu_ner",
        "method=lora",
        "model=minilm",
        "task=conll2003",
        "seed=0,1,2",
        "trainer.lr=0.003",
        "task.data_dir=/d",
    ]
    assert run_counts(plan) == (3 * 3 + 3, 6 * 2)
    only = make_plan("fewglue", [], {"task": ["rte", "cb"]})
    assert only.tasks == ["rte", "cb"] and run_counts(only) == (2 * 12, 2 * 6 * 2)


def test_unknown_preset_or_preset_without_protocol_is_one_line(capsys) -> None:
    assert main(["no_such_preset"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ProtocolError, match="no 'protocol' block"):
        make_plan("demo", [])


# --- selection from records --------------------------------------------------------------------


def _write(runs: Path, method: str, lr: float, seed: int, best: float | None, status: str = "ok") -> None:
    record = {
        "schema": 1,
        "status": status,
        "error": None if status == "ok" else "boom",
        "method": method,
        "model": "minilm",
        "task": "conll2003",
        "seed": seed,
        "hparams": {"trainer.lr": lr},
        "metrics": {
            "primary": "f1",
            "final": {"f1": (best or 0) - 0.05},
            "best": {"f1": best},
            "best_step": 1,
            "history": [],
            "data": {},
        },
        "provenance": {"config": {"trainer": {"lr": lr}}},
    }
    path = runs / method / "minilm" / "conll2003" / f"lr={lr}" / f"seed={seed}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


def _plan(runs: Path) -> Plan:
    return Plan(
        "cpu_ner",
        runs,
        ["prompt_tuning"],
        ["minilm"],
        ["conll2003"],
        {"prompt_tuning": {"trainer.lr": [0.01, 0.03, 0.1]}},
        0,
        [0, 1, 2],
        "best",
    )


def test_choose_takes_the_best_validation_point_of_the_grid_seed(tmp_path: Path) -> None:
    _write(tmp_path, "prompt_tuning", 0.01, 0, 0.60)
    _write(tmp_path, "prompt_tuning", 0.03, 0, 0.70)
    _write(tmp_path, "prompt_tuning", 0.1, 0, 0.95, status="diverged")  # an outcome (it lost), never chosen
    _write(tmp_path, "prompt_tuning", 0.01, 1, 0.99)  # another seed: not part of the grid stage
    choice = choose(load_records(tmp_path), _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert choice.point == {"trainer.lr": 0.03} and choice.score == pytest.approx(0.70)
    assert [t["status"] for t in choice.tried] == ["ok", "ok", "diverged"]
    line = describe(choice, "best")
    assert "chose trainer.lr=0.03" in line and "trainer.lr=0.1 diverged" in line


def test_choose_breaks_ties_by_grid_order(tmp_path: Path) -> None:
    _write(tmp_path, "prompt_tuning", 0.01, 0, 0.60)
    _write(tmp_path, "prompt_tuning", 0.03, 0, 0.70)
    _write(tmp_path, "prompt_tuning", 0.1, 0, 0.70)
    choice = choose(load_records(tmp_path), _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert choice.point == {"trainer.lr": 0.03}


@pytest.mark.parametrize("status", ["missing", "failed", "interrupted"])
def test_a_grid_with_a_point_without_outcome_chooses_nothing(status: str, tmp_path: Path) -> None:
    _write(tmp_path, "prompt_tuning", 0.03, 0, 0.70)
    _write(tmp_path, "prompt_tuning", 0.1, 0, 0.60)
    if status != "missing":
        _write(tmp_path, "prompt_tuning", 0.01, 0, 0.99, status=status)  # its score cannot be trusted
    choice = choose(load_records(tmp_path), _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert choice.point is None and choice.tried[0]["status"] == status
    line = describe(choice, "best")
    assert line.startswith(
        f"[protocol] prompt_tuning/minilm/conll2003: grid incomplete, nothing chosen: trainer.lr=0.01 {status};"
    )
    assert "\n" not in line and ": chose " not in line
    nothing = choose(None, _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert nothing.point is None and "seeds stage skipped" in describe(nothing, "best")


HOLD_LOCK = """
import sys, time
from pathlib import Path
from bench.identity import RunLock
lock = RunLock(Path(sys.argv[1]))
assert lock.acquire() is None
print("held", flush=True)
time.sleep(float(sys.argv[2]))
if len(sys.argv) > 3:  # finish the run: its record, then the lock
    Path(sys.argv[3]).write_text(sys.stdin.read())
lock.release()
"""


def _hold(lock: Path, seconds: float, record: Path | None = None, body: str = "") -> subprocess.Popen:
    """A process holding a grid point's run lock, as a training run (or an orphaned stage) does."""
    args = [sys.executable, "-c", HOLD_LOCK, str(lock), str(seconds), *([str(record)] if record else [])]
    holder = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    holder.stdin.write(body)
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_locked_grid_point_stops_the_choice_and_the_exit_status(tmp_path: Path, monkeypatch, capsys) -> None:
    """The issue's reproduction: 0.1 is held by a live process (no record yet); 0.01 is not chosen."""
    _write(tmp_path, "prompt_tuning", 0.01, 0, 0.60)
    _write(tmp_path, "prompt_tuning", 0.03, 0, 0.70)
    point = tmp_path / "prompt_tuning" / "minilm" / "conll2003" / "lr=0.1" / "seed=0"
    holder = _hold(point / "run.lock", 60)
    commands = []
    monkeypatch.setattr("bench.protocol.make_plan", lambda *a, **k: _plan(tmp_path))
    monkeypatch.setattr("bench.protocol._run", lambda command, dry_run: commands.append(command) or 0)
    try:
        code = main(["cpu_ner"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert not any("seed=0,1,2" in " ".join(c) for c in commands)  # no seeds stage
    out = capsys.readouterr().out
    assert f"trainer.lr=0.1 locked (run held by pid {holder.pid} on " in out
    assert ": chose " not in out and "0 chosen" in out


def test_wait_locked_waits_for_the_running_point_then_chooses(tmp_path: Path, monkeypatch, capsys) -> None:
    runs = tmp_path / "runs"
    _write(runs, "prompt_tuning", 0.01, 0, 0.60)
    _write(runs, "prompt_tuning", 0.03, 0, 0.70)
    _write(tmp_path / "later", "prompt_tuning", 0.1, 0, 0.80)  # what the running point will write
    record = next((tmp_path / "later").rglob("result.json"))
    point = runs / "prompt_tuning" / "minilm" / "conll2003" / "lr=0.1" / "seed=0"
    holder = _hold(point / "run.lock", 2, point / "result.json", record.read_text())
    monkeypatch.setattr("bench.protocol.WAIT_POLL_S", 0.2)
    try:
        (choice,) = choose_all(_plan(runs), wait_locked=60)
    finally:
        holder.wait(timeout=60)
    assert choice.point == {"trainer.lr": 0.1} and choice.score == pytest.approx(0.80)
    assert "[protocol] waiting for 1 running grid point(s)" in capsys.readouterr().out


def test_protocols_run_per_method_at_once_keep_each_others_choices(tmp_path: Path, monkeypatch) -> None:
    """The device script runs one protocol process per method; protocol.json must end with every method's."""
    grid = {"trainer.lr": [0.01, 0.03, 0.1]}
    for method, best in (("prompt_tuning", 0.03), ("lora", 0.1)):
        for lr in grid["trainer.lr"]:
            _write(tmp_path, method, lr, 0, 0.9 if lr == best else 0.5)
    monkeypatch.setattr("bench.protocol._run", lambda command, dry_run: 0)
    for method in ("prompt_tuning", "lora", "prompt_tuning"):  # a rerun replaces its own cell only
        plan = Plan("cpu_ner", tmp_path, [method], ["minilm"], ["conll2003"], {method: grid}, 0, [0], "best")
        monkeypatch.setattr("bench.protocol.make_plan", lambda *a, plan=plan, **k: plan)
        assert main(["cpu_ner"]) == 0
    chosen = json.loads((tmp_path / "protocol.json").read_text())["choices"]
    assert sorted((c["method"], c["point"]["trainer.lr"]) for c in chosen) == [("lora", 0.1), ("prompt_tuning", 0.03)]


def test_a_damaged_protocol_json_stops_the_protocol_before_any_run(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "protocol.json").write_text("{not json", encoding="utf-8")
    monkeypatch.setattr("bench.protocol.make_plan", lambda *a, **k: _plan(tmp_path))
    monkeypatch.setattr("bench.protocol._run", lambda command, dry_run: pytest.fail("a run started"))
    assert main(["cpu_ner"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'protocol.json'}: not a protocol.json") and "\n" not in err


STAGE = """
import signal, sys, time
from pathlib import Path
def stop(signum, frame):
    Path(sys.argv[1]).write_text(signal.Signals(signum).name)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""
PROTOCOL = """
import sys
from bench.protocol import _run
sys.exit(_run([sys.executable, "-c", sys.argv[1], sys.argv[2]], False))
"""


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stage_dies_with_the_protocol(number: int, tmp_path: Path) -> None:
    """A stopped protocol leaves no stage training (and holding a grid point's lock) behind."""
    got = tmp_path / "stage_got"
    protocol = subprocess.Popen(
        [sys.executable, "-c", PROTOCOL, STAGE, str(got)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        while protocol.stdout.readline().strip() != "ready":
            assert protocol.poll() is None
        protocol.send_signal(number)
        code = protocol.wait(timeout=30)
        for _ in range(100):  # the orphaned stage's handler runs after its parent is gone
            if got.exists():
                break
            time.sleep(0.1)
    finally:
        protocol.kill()
    assert got.read_text() == "SIGTERM"
    assert code == (143 if number == signal.SIGTERM else -signal.SIGKILL)


# --- the whole protocol, on a tiny model -------------------------------------------------------


def _protocol(runs_root: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "cpu_ner",
        "--methods",
        "prompt_tuning,head_only",
        "--models",
        "tiny_bert",
        "--tasks",
        "synth_ner",
        "--seeds",  # two seeds show the seeds stage; a third would only add a run per method
        "0,1",
        "trainer=smoke",
        "task.data_dir=null",
        f"runs_root={runs_root}",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "bench.protocol", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def test_protocol_runs_the_grid_then_seeds_and_resumes(runs_root: Path) -> None:
    pytest.importorskip("bench.identity", reason="needs per-point run folders (run identity)")
    first = _protocol(runs_root)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    records = sorted(runs_root.glob("cpu_ner/**/result.json"))
    assert len(records) == 3 + 1 + 1 + 1  # prompt: 3 grid points + seed 1; head-only: 1 point + seed 1
    chosen = json.loads((runs_root / "cpu_ner" / "protocol.json").read_text())["choices"]
    assert {c["method"] for c in chosen} == {"prompt_tuning", "head_only"}
    assert "[protocol] prompt_tuning/tiny_bert/synth_ner: chose trainer.lr=" in first.stdout
    stamps = {p: p.stat().st_mtime_ns for p in records}
    second = _protocol(runs_root)
    assert second.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in runs_root.glob("cpu_ner/**/result.json")} == stamps  # all skipped
    # ... and without starting a process per stage: every stage's points were found up to date here
    assert "$ python -m bench" not in second.stdout, second.stdout
    assert second.stdout.count("up to date, not launched") == 4
    # editing one method's grid in the preset retrains nothing that was finished: the grid is sweep-only
    third = _protocol(runs_root, "protocol.grid.prompt_tuning={trainer.lr:[0.01,0.03,0.1,0.3]}")
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    after = {p: p.stat().st_mtime_ns for p in runs_root.glob("cpu_ner/**/result.json")}
    assert {p: after[p] for p in stamps} == stamps
    added = [p for p in after if p not in stamps]
    assert added and all("prompt_tuning" in p.parts for p in added)
    assert any("lr=0.3" in str(p) for p in added)
    assert "$ python -m bench -m sweep=cpu_ner method=head_only" not in third.stdout  # its stages were finished


# --- the prepared GPU check (its CPU side) -------------------------------------------------------

GPU_SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _gpu_check(*args: str, out: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PY": sys.executable, **({"GPU_OUT": out} if out else {})}
    return subprocess.run(
        ["bash", str(GPU_SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )


def test_gpu_check_refuses_without_a_gpu_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would run")
    result = _gpu_check(out=str(tmp_path / "gpu"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gpu-check: refused: no CUDA GPU")
    assert not (tmp_path / "gpu").exists()  # nothing was started


def test_gpu_check_composes_and_writes_only_under_results_gpu() -> None:
    result = _gpu_check("--dry-run")
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("timeout ")]
    assert len(commands) == 3
    speed, protocol, report = commands
    assert "-m bench.speed --device cuda --dtype bf16 --out results/gpu/speed" in speed
    assert "-m bench.protocol cpu_ner --seeds 0 device=cuda dtype=bf16" in protocol
    assert protocol.endswith("runs_root=results/gpu/runs")
    assert "-m bench.report results/gpu/runs/cpu_ner --out results/gpu/report" in report
    runs = [line for line in result.stdout.splitlines() if line.startswith("$ python -m bench -m sweep=cpu_ner")]
    assert len(runs) == 6 and all("runs_root=results/gpu/runs" in line and "device=cuda" in line for line in runs)
    assert "records in results/gpu/runs/cpu_ner" in result.stdout


def test_make_gpu_check_target_calls_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "gpu-check:\n\tPY=$(PY) scripts/gpu_check.sh\n" in makefile


def test_choose_only_rewrites_the_committed_protocol_json_and_launches_nothing(tmp_path: Path, monkeypatch) -> None:
    import shutil

    records = ROOT / "results" / "gpu_ner_full" / "records"
    shutil.copytree(records, tmp_path / "gpu_ner_full", ignore=shutil.ignore_patterns("protocol.json"))
    monkeypatch.setattr("bench.protocol._run", lambda command, dry_run: pytest.fail("a stage was launched"))
    assert main(["gpu_ner_full", "--choose-only", f"runs_root={tmp_path}"]) == 0
    written = json.loads((tmp_path / "gpu_ner_full" / "protocol.json").read_text())
    assert written == json.loads((records / "protocol.json").read_text())
