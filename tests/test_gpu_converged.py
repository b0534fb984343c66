"""The GPU twin of the converged preset, and the device scripts that run it (their CPU side).

``gpu_ner_converged`` must be ``cpu_ner_converged``'s protocol with only precision, device and bookkeeping
changed: the committed GPU records answer the same question, and never share a run identity with the fp32 ones.
"""

from __future__ import annotations

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
    assert "gpu_ner_converged" in text and "records.tgz" in text
    carry = ROOT / ".gpu"
    if carry.is_dir():  # packed here by scripts/gpu_carry.sh: it must fit the 64 MiB a device call takes
        assert sum(p.stat().st_size for p in carry.rglob("*") if p.is_file()) < 50 * 2**20
