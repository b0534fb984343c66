"""scripts/gpu_shapes.sh, the GPU cost check at real model shapes (issue #23): its CPU side."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.speed import parse_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_shapes.sh"


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PY": sys.executable, **env},
        timeout=300,
    )


def speed_options(line: str) -> list[str]:
    """The bench.speed options of one printed ``timeout N PY -m bench.speed ...`` line."""
    words = shlex.split(line)
    assert words[0] == "timeout" and words[2:5] == [sys.executable, "-m", "bench.speed"], line
    return words[5:]


def test_dry_run_prints_one_timed_bench_speed_command_per_shape_within_90_s(tmp_path: Path) -> None:
    result = run_script(str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and sum(int(line.split()[1]) for line in lines) <= 90
    roberta, llama = (parse_args(speed_options(line)) for line in lines)
    assert (roberta.sections, roberta.cls_model, roberta.lm_model) == (("cls",), "roberta_large_shape", None)
    assert (llama.sections, llama.cls_model, llama.lm_model) == (("lm",), None, "llama3_2_1b_shape")
    assert "full_finetune" in llama.lm_methods and {"prompt_tuning", "prefix_tuning"} <= set(llama.lm_methods)
    for cfg in (roberta, llama):
        assert (cfg.device, cfg.dtype, cfg.out) == ("cuda", "bf16", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # a dry run starts nothing
    eight = run_script(str(tmp_path / "out"), "--dry-run", SHAPES_8B="1").stdout.splitlines()
    big = parse_args(speed_options(eight[-1]))
    assert len(eight) == 3 and big.lm_model == "llama3_8b_shape" and "full_finetune" not in big.lm_methods


def test_refuses_without_a_gpu_and_starts_nothing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would run")
    result = run_script(str(tmp_path / "out"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("gpu-shapes: refused: no CUDA GPU") and not (tmp_path / "out").exists()


@pytest.mark.slow  # 16 s on one thread: both sections end to end on the tiny models, on CPU
def test_the_script_writes_a_record_and_the_log_per_section(tmp_path: Path) -> None:
    tiny = "--batch 2 --length 16 --lm-batch 2 --lm-length 16 --warmup 1 --steps 1 --repeats 1 --threads 1"
    settings = dict(CLS_MODEL="tiny_roberta", LM_MODEL="tiny_llama", SHAPES_ARGS=tiny)
    result = run_script(str(tmp_path), SHAPES_DEVICE="cpu", SHAPES_DTYPE="fp32", **settings)
    assert result.returncode == 0, result.stdout[-2000:]
    log = (tmp_path / "gpu_shapes.log").read_text()
    assert "gpu-shapes: done (status 0)" in log
    for name, section in (("roberta-large-shape", "cls"), ("llama3.2-1b-shape", "lm")):
        record = json.loads((tmp_path / name / "speed.json").read_text())
        methods = record["sections"][section]["methods"]
        assert record["status"] == "ok" and methods["full_finetune"]["memory"]["peak"] > 0
        assert f"gpu-shapes: {name} took" in log
