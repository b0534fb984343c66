"""The speed record, the printed tables, and the median over several records (``summarize``)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.record import git_state, package_versions
from bench.speed.config import SPEED_SCHEMA, SpeedConfig


def quiet() -> contextlib.ExitStack:
    """Silence progress bars and deprecation chatter from transformers/peft while timing."""
    import transformers

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    stack.callback(logging.set_verbosity, verbosity)
    if bars:
        stack.callback(logging.enable_progress_bar)
    return stack


def build_record(
    cfg: SpeedConfig,
    device: torch.device,
    sections: dict,
    targets: dict,
    profile: dict | None,
    start_load: tuple | None,
    started: float,
) -> dict[str, Any]:
    """The speed record: like a run's (schema, status, provenance), with sections/ratios/targets."""
    sha, dirty = git_state()
    measured = [t["met"] for t in targets.values() if t["met"] is not None]
    failed = {name: body["error"] for name, body in sections.items() if "error" in body}
    return {
        "schema": SPEED_SCHEMA,
        "kind": "speed",
        "status": "ok" if not failed else "partial",
        "error": "; ".join(f"{k}: {v}" for k, v in failed.items()) or None,
        "name": cfg.name,
        "device": str(device),
        "dtype": cfg.dtype,
        "threads": torch.get_num_threads(),
        "sections": sections,
        "targets": targets,
        "all_targets_met": bool(measured) and all(measured) and len(measured) == len(targets),
        "profile": profile,
        "provenance": {
            "git_sha": sha,
            "git_dirty": dirty,
            "versions": package_versions(),
            "config": asdict(cfg),
            "argv": sys.argv[1:],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": {"start": start_load, "end": load_average()},
            "busy_at_start": busy(device, start_load),
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }


def busy(device: torch.device, load_average: tuple[float, ...] | None) -> bool:
    """True when, before we start, other processes already occupy cores our CPU threads would use."""
    if device.type != "cpu" or not load_average:
        return False
    spare = (os.cpu_count() or 1) - torch.get_num_threads()
    return load_average[0] > spare + 1.0  # the 1-minute average still carries a just-finished run's tail


def load_average() -> tuple[float, ...] | None:
    """The 1/5/15-minute load averages, where the platform has them."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except (OSError, AttributeError):
        return None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_section(name: str, body: dict[str, Any]) -> None:
    """Per-contender medians and the section's ratios, as plain text."""
    if "error" in body:
        print(f"\n== {name}: n/a ({body['error']})")
        return
    figures = {k: v for k, v in body.items() if k not in ("shapes", "methods", "ratios", "memory_ratios")}
    print(f"\n== {name}: " + ", ".join(f"{k}={v}" for k, v in {**body.get("shapes", {}), **figures}.items()))
    if body.get("methods"):
        print_contenders(body["methods"])
    for key, ratio in body.get("ratios", {}).items():
        text = _fmt(ratio["value"]) + (f"  (IQR {ratio['iqr']:.3f})" if ratio.get("iqr") is not None else "")
        print(f"   ratio {key:38} {text if ratio['value'] is not None else 'n/a (' + ratio['na'] + ')'}")
    for key, value in body.get("memory_ratios", {}).items():
        print(f"   peak memory {key:32} {value:.3f}")


def print_contenders(methods: dict[str, dict[str, Any]]) -> None:
    """Per-contender medians, IQR, CPU time and per-repeat medians."""
    print(f"   {'contender':22} {'median s':>9} {'IQR s':>8} {'cpu s':>8} {'n':>3}  repeat medians")
    for contender, stats in methods.items():
        if "error" in stats:
            print(
                f"   {contender:22} n/a (PEFT: {stats['error']})"
                if contender.startswith("peft_")
                else f"   {contender:22} n/a ({stats['error']})"
            )
            continue
        extra = f"  {stats['tokens_per_s']} tok/s" if "tokens_per_s" in stats else ""
        extra += memory_text(stats.get("memory"))
        print(
            f"   {contender:22} {stats['median_s']:9.4f} {stats['iqr_s']:8.4f} {stats['cpu_median_s']:8.3f} "
            f"{stats['n']:3d}  {stats['repeat_medians_s']}{extra}"
        )


def memory_text(memory: dict[str, Any] | None) -> str:
    """A contender's step memory as the table prints it: peak GB (how it was measured) and its parts."""
    if not memory:
        return ""
    if "error" in memory:
        return f"  peak memory n/a ({memory['error']})"
    parts = "+".join(f"{memory[k] / 1e9:.2f}" for k in ("weights", "optimizer", "gradients", "saved"))
    return f"  peak {memory['peak'] / 1e9:.2f} GB ({memory['peak_source']}; weights+optimizer+grads+saved {parts})"


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    """Each target's value against its limit, and whether it is met."""
    print("\n== targets (ratios: medians of paired per-round ratios)")
    for label, target in targets.items():
        state = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        note = f"  ({target['na']})" if target.get("na") else ""
        sign = ">=" if target.get("at_least") else "<="
        print(f"   {label:48} {_fmt(target['value']):>7}  {sign} {target['limit']:<5g} {state}{note}")


def record_figures(record: dict[str, Any]) -> dict[str, float]:
    """Every ratio, contender median/tokens-per-second/peak memory and plain figure of one record, by
    ``section:key``."""
    values: dict[str, float] = {}
    for section, body in record["sections"].items():
        for key, ratio in body.get("ratios", {}).items():
            if ratio.get("value") is not None:
                values[f"{section}:{key}"] = ratio["value"]
        for key, value in body.get("memory_ratios", {}).items():
            values[f"{section}:peak_memory:{key}"] = value
        for name, stats in body.get("methods", {}).items():
            for figure in ("median_s", "tokens_per_s"):
                if stats.get(figure) is not None:
                    values[f"{section}:{name}:{figure}"] = stats[figure]
            if stats.get("memory", {}).get("peak"):
                values[f"{section}:{name}:peak_bytes"] = stats["memory"]["peak"]
        for key, value in body.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[f"{section}:{key}"] = value
    return values


def summarize_records(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Median over several speed records (files or folders holding ``speed.json``) of every ratio and figure."""
    files = [p / "speed.json" if p.is_dir() else p for p in map(Path, paths)]
    records = [json.loads(f.read_text()) for f in files if f.is_file()]
    values: dict[str, list[float]] = {}
    for record in records:
        for key, value in record_figures(record).items():
            values.setdefault(key, []).append(value)
    limits = {t["ratio"]: (t["limit"], t.get("at_least", False)) for r in records for t in r["targets"].values()}
    print(f"{len(records)} records: " + ", ".join(str(f) for f in files if f.is_file()))
    summary = {}
    for key, found in values.items():
        median = statistics.median(found)
        limit, at_least = limits.get(key, (None, False))
        met = None if limit is None else (median >= limit if at_least else median <= limit)
        summary[key] = {"median": round(median, 4), "runs": [round(v, 4) for v in found], "limit": limit, "met": met}
        state = "" if met is None else ("  met" if met else "  NOT met")
        print(
            f"   {key:58} {median:9.4f}  runs {summary[key]['runs']}" + (f"  limit {limit:g}{state}" if limit else "")
        )
    return summary
