"""The GPU twin of the converged preset, and the device scripts that run it (their CPU side).

``gpu_ner_converged`` must be ``cpu_ner_converged``'s protocol with only precision, device and bookkeeping
changed: the committed GPU records answer the same question, and never share a run identity with the fp32 ones.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from bench.identity import config_hash
from bench.protocol import compose_preset, grid_points, make_plan

ROOT = Path(__file__).resolve().parents[1]


def _plain(preset: str) -> dict:
    return OmegaConf.to_container(compose_preset(preset, []), resolve=False)


def test_the_gpu_preset_is_the_cpu_protocol_in_bf16_on_cuda() -> None:
    cpu, gpu = _plain("cpu_ner_converged"), _plain("gpu_ner_converged")
    assert (gpu["dtype"], gpu["device"], gpu["sweep_name"]) == ("bf16", "cuda", "gpu_ner_converged")
    assert cpu["dtype"] == "fp32" and gpu["protocol"] == cpu["protocol"] and gpu["task"] == cpu["task"]
    # checkpoints are bookkeeping (a device machine keeps nothing); every computing trainer setting is shared
    assert gpu["trainer"]["checkpoint_every"] is None
    assert {k: v for k, v in gpu["trainer"].items() if k != "checkpoint_every"} == {
        k: v for k, v in cpu["trainer"].items() if k != "checkpoint_every"
    }
    cpu_plan, gpu_plan = make_plan("cpu_ner_converged", []), make_plan("gpu_ner_converged", [])
    assert all(grid_points(cpu_plan, m) == grid_points(gpu_plan, m) for m in cpu_plan.methods)


def test_the_full_set_preset_changes_only_the_training_set_size_and_the_grids() -> None:
    """gpu_ner_full must be gpu_ner_converged on all training sentences: the same halves, stopping and cap."""
    subset, full = _plain("gpu_ner_converged"), _plain("gpu_ner_full")
    assert subset["task"]["max_train_samples"] == 1000 and full["task"]["max_train_samples"] is None
    assert {**full["task"], "max_train_samples": 1000} == subset["task"]
    steps_per_epoch = -(-subset["task"]["max_train_samples"] // subset["trainer"]["batch_size"])
    assert full["trainer"]["max_steps"] == subset["trainer"]["epochs"] * steps_per_epoch  # the subset's cap
    assert {**full["trainer"], "max_steps": None} == {**subset["trainer"], "max_steps": None}
    assert (full["dtype"], full["device"], full["sweep_name"]) == ("bf16", "cuda", "gpu_ner_full")
    chosen = json.loads((ROOT / "results/gpu_ner_converged/records/protocol.json").read_text())["choices"]
    plan = make_plan("gpu_ner_full", [])
    for choice in chosen:  # each grid is centred on (holds) the subset protocol's choice
        assert choice["point"] in grid_points(plan, choice["method"]), choice["method"]


def test_a_gpu_record_never_shares_an_identity_with_the_cpu_one() -> None:
    run = {"method": {"name": "prompt_tuning"}, "model": {"name": "minilm"}, "task": {"name": "conll2003"}}
    cpu = {**run, "trainer": _plain("cpu_ner_converged")["trainer"], "seed": 0, "dtype": "fp32", "device": "cpu"}
    gpu = {**cpu, "dtype": "bf16", "device": "cuda"}
    assert config_hash(cpu) != config_hash(gpu)
    assert config_hash(cpu) == config_hash({**cpu, "device": "cuda"})  # where it ran is not what it computes


def test_the_device_scripts_parse_and_pack_under_the_transfer_limit() -> None:
    for script in ("gpu_carry.sh", "gpu_converged.sh"):
        checked = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    text = (ROOT / "scripts" / "gpu_converged.sh").read_text()
    assert "gpu_ner_converged" in text and "records.tgz" in text and "PROTOCOLS" in text
    carry = ROOT / ".gpu"
    if carry.is_dir():  # packed here by scripts/gpu_carry.sh: it must fit the 64 MiB a device call takes
        assert sum(p.stat().st_size for p in carry.rglob("*") if p.is_file()) < 50 * 2**20


FAKE_PY = """#!/usr/bin/env bash
# stands in for Python: the method list for METHODS' default, else the arguments it was called with
[[ $1 == -c ]] && { echo "prompt_tuning lora"; exit 0; }
echo "$*" >> "$CALLS"
"""


def test_protocols_words_start_one_protocol_per_preset_and_method(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "gpu_converged.sh"
    script.write_text((ROOT / "scripts" / "gpu_converged.sh").read_text())
    fake = tmp_path / "python"
    fake.write_text(FAKE_PY)
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PY": str(fake), "CALLS": str(tmp_path / "calls"), "SKIP_SHAPES": "1"}
    env |= {"RUNS": str(tmp_path / "runs"), "PROTOCOLS": "gpu_ner_full gpu_ner_converged:head_only,full_finetune"}
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = sorted(line.split(" runs_root=")[0] for line in (tmp_path / "calls").read_text().splitlines())
    assert [c for c in calls if "bench.protocol" in c] == [
        "-m bench.protocol gpu_ner_converged --methods full_finetune",
        "-m bench.protocol gpu_ner_converged --methods head_only",
        "-m bench.protocol gpu_ner_full --methods lora",
        "-m bench.protocol gpu_ner_full --methods prompt_tuning",
    ]
    assert (tmp_path / "out" / "records.tgz").is_file()
