"""``--profile``: where a prefix-tuning step spends its time (torch ops, then Python frames)."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.measure import synchronize
from bench.models import load_model, model_config
from bench.speed.config import SpeedConfig
from bench.speed.contenders import build_ours, synthetic_batch, train_step

# where a Python frame's file lives -> the origin its self time is booked under
ORIGINS = (
    ("methods", "/methods/"),
    ("bench", "/bench/"),
    ("transformers", "/transformers/"),
    ("peft", "/peft/"),
    ("torch (python)", "/torch/"),
)


def profile_prefix(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype, path: Path) -> dict[str, Any]:
    """Profile steps of the LM step's first method (prefix tuning by default) on the classification model:
    torch ops, then Python frames (cProfile)."""
    from torch.profiler import ProfilerActivity, profile

    loaded = load_model(model_config(cfg.cls_model), "classification")
    model = build_ours(loaded, cfg.lm_methods[0], "classification", cfg, device)
    step = train_step(
        model, synthetic_batch(loaded.backbone.config.vocab_size, cfg.batch, cfg.length, device), device, dtype
    )
    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(cfg.profile_steps):
            step()
        synchronize(device)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in ops) or 1.0
    top_ops = [
        {
            "name": e.key,
            "calls_per_step": e.count / cfg.profile_steps,
            "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / cfg.profile_steps, 3),
            "percent": round(100 * e.self_cpu_time_total / total_us, 2),
        }
        for e in ops[:12]
    ]
    python = python_profile(step, cfg.profile_steps, device)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=48)
    write_profile(path, cfg, top_ops, python, table)
    return {
        "file": str(path),
        "steps": cfg.profile_steps,
        "top_ops": top_ops,
        **{k: v for k, v in python.items() if k != "text"},
    }


def python_profile(step: Callable[[], None], steps: int, device: torch.device) -> dict[str, Any]:
    """cProfile over ``steps`` steps: self time of Python frames by origin, per step."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        step()
    synchronize(device)
    profiler.disable()
    wall = (time.perf_counter() - start) / steps
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(25)
    origins = dict.fromkeys((origin for origin, _ in ORIGINS), 0.0)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        path = filename.replace("\\", "/")
        origin = next((o for o, key in ORIGINS if key in path), None)
        if origin and path.endswith(".py"):
            origins[origin] += tottime
    per_step = {k: round(v / steps * 1e3, 3) for k, v in origins.items()}
    return {"step_wall_ms": round(wall * 1e3, 2), "python_self_ms_per_step": per_step, "text": stream.getvalue()}


def write_profile(path: Path, cfg: SpeedConfig, top_ops: list[dict], python: dict, table: str) -> None:
    """profile.txt: summary, the torch op table and the top Python frames by self time."""
    lines = [
        f"# bench.speed --profile: {cfg.lm_methods[0]} on {cfg.cls_model}, batch {cfg.batch}x{cfg.length}, "
        f"N={cfg.virtual}, {cfg.profile_steps} steps, {torch.get_num_threads()} threads",
        f"# step wall under cProfile: {python['step_wall_ms']} ms (cProfile inflates Python-side costs)",
        "# Python self time per step by origin (ms): "
        + ", ".join(f"{k} {v}" for k, v in python["python_self_ms_per_step"].items()),
        "",
        "## torch.profiler, top ops by self CPU time",
        table,
        "",
        "## cProfile, top frames by self time (all steps)",
        python["text"],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
