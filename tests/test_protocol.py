"""The reference-result presets and ``python -m bench.protocol`` (grid at one seed, then seeds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.protocol import (
    Choice,
    Plan,
    ProtocolError,
    choose,
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
    _write(tmp_path, "prompt_tuning", 0.1, 0, 0.95, status="failed")  # never chosen
    _write(tmp_path, "prompt_tuning", 0.01, 1, 0.99)  # another seed: not part of the grid stage
    choice = choose(load_records(tmp_path), _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert choice.point == {"trainer.lr": 0.03} and choice.score == pytest.approx(0.70)
    assert [t["status"] for t in choice.tried] == ["ok", "ok", "failed"]
    line = describe(choice, "best")
    assert "chose trainer.lr=0.03" in line and "trainer.lr=0.1 failed" in line


def test_choose_breaks_ties_by_grid_order_and_reports_missing(tmp_path: Path) -> None:
    _write(tmp_path, "prompt_tuning", 0.03, 0, 0.70)
    _write(tmp_path, "prompt_tuning", 0.1, 0, 0.70)
    choice = choose(load_records(tmp_path), _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert choice.point == {"trainer.lr": 0.03}
    assert choice.tried[0]["status"] == "missing"
    nothing = choose(None, _plan(tmp_path), "prompt_tuning", "minilm", "conll2003")
    assert nothing.point is None and "seeds stage skipped" in describe(nothing, "best")


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
    assert len(records) == 3 + 2 + 1 + 2  # prompt: 3 grid points + 2 seeds; head-only: 1 point + 2 seeds
    chosen = json.loads((runs_root / "cpu_ner" / "protocol.json").read_text())["choices"]
    assert {c["method"] for c in chosen} == {"prompt_tuning", "head_only"}
    assert "[protocol] prompt_tuning/tiny_bert/synth_ner: chose trainer.lr=" in first.stdout
    stamps = {p: p.stat().st_mtime_ns for p in records}
    second = _protocol(runs_root)
    assert second.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in runs_root.glob("cpu_ner/**/result.json")} == stamps  # all skipped
    # editing one method's grid in the preset retrains nothing that was finished: the grid is sweep-only
    third = _protocol(runs_root, "protocol.grid.prompt_tuning={trainer.lr:[0.01,0.03,0.1,0.3]}")
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    after = {p: p.stat().st_mtime_ns for p in runs_root.glob("cpu_ner/**/result.json")}
    assert {p: after[p] for p in stamps} == stamps
    added = [p for p in after if p not in stamps]
    assert added and all("prompt_tuning" in p.parts for p in added)
    assert any("lr=0.3" in str(p) for p in added)


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
