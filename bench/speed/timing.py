"""Timing as pure functions: paired round-robin rounds, quartiles, per-round ratios, overheads.

Contenders are timed round-robin (one call of each per round, in a fresh random order every
round) in one process, so noise from other processes hits all of them alike; ratios are taken
per round (paired) and their median reported, which is robust to slow drift in load.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.measure import synchronize
from bench.record import error_line


@dataclass
class Contender:
    """One thing to time: a training step or one ``generate`` call; ``error`` marks it n/a."""

    name: str
    run: Callable[[], Any]
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def one_line(error: BaseException) -> str:
    """A contender's error as the table prints it: one line, at most 200 characters."""
    return error_line(error, limit=200)


def guarded(name: str, build: Callable[[], Callable[[], Any]], info: dict | None = None) -> Contender:
    """A contender whose construction failure becomes ``n/a (<error>)`` instead of a crash."""
    info = info if info is not None else {}  # the same dict: a build may record checks in it
    try:
        return Contender(name, build(), info=info)
    except Exception as error:  # noqa: BLE001 — any library failure is a reportable n/a
        return Contender(name, lambda: None, error=one_line(error), info=info)


def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call; CPU time is less sensitive to other processes."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def warm_up(contenders: list[Contender], steps: int, device: torch.device) -> list[Contender]:
    """Run each contender ``steps`` times (allocations, kernel choice); a failing one becomes n/a."""
    for contender in contenders:
        if contender.error:
            continue
        try:
            for _ in range(max(steps, 1)):
                timed(contender.run, device)
        except Exception as error:  # noqa: BLE001
            contender.error = one_line(error)
    return [c for c in contenders if not c.error]


def round_robin(
    contenders: list[Contender], warmup: int, steps: int, repeats: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Per contender: ``wall``/``cpu`` seconds per round and the round's repeat index; one call each per round."""
    live = warm_up(contenders, warmup, device)
    times = {c.name: {"wall": [], "cpu": [], "repeat": []} for c in live}
    shuffle = random.Random(0)
    for round_index in range(steps * repeats):
        # a fresh order every round: no contender always follows the same one (allocator, cache state)
        for contender in shuffle.sample(live, len(live)):
            wall, cpu = timed(contender.run, device)
            entry = times[contender.name]
            entry["wall"].append(wall)
            entry["cpu"].append(cpu)
            entry["repeat"].append(round_index // steps)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3); a single value gives it three times."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarize(entry: dict[str, list[float]]) -> dict[str, Any]:
    """Median, IQR and per-repeat medians of one contender's step times."""
    q1, median, q3 = quartiles(entry["wall"])
    repeats = sorted(set(entry["repeat"]))
    per_repeat = [statistics.median([w for w, r in zip(entry["wall"], entry["repeat"]) if r == k]) for k in repeats]
    return {
        "median_s": round(median, 5),
        "q1_s": round(q1, 5),
        "q3_s": round(q3, 5),
        "iqr_s": round(q3 - q1, 5),
        "repeat_medians_s": [round(v, 5) for v in per_repeat],
        "n": len(entry["wall"]),
        "cpu_median_s": round(statistics.median(entry["cpu"]), 5),
        "wall_s": [round(v, 5) for v in entry["wall"]],
    }


def paired_ratio(times: dict, errors: dict[str, str], needed: tuple[str, str]) -> dict[str, Any]:
    """Median over rounds of ``needed[0] / needed[1]`` per round, its IQR, and the ratio of the medians.

    Every round holds one step of each contender, taken back to back, so a per-round ratio compares
    steps that saw the same machine load.
    """
    missing = [name for name in needed if name not in times]
    if missing:
        return {"value": None, "na": errors.get(missing[0]) or f"{missing[0]} not run"}
    top, bottom = times[needed[0]]["wall"], times[needed[1]]["wall"]
    q1, median, q3 = quartiles([a / b for a, b in zip(top, bottom)])
    return {
        "value": round(median, 4),
        "iqr": round(q3 - q1, 4),
        "n": len(top),
        "of_medians": round(statistics.median(top) / statistics.median(bottom), 4),
    }


def timing_results(contenders: list[Contender], times: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-contender summaries (or their n/a error) and the errors by name."""
    errors = {c.name: c.error for c in contenders if c.error}
    results: dict[str, Any] = {}
    for contender in contenders:
        body = summarize(times[contender.name]) if contender.name in times else {"error": contender.error}
        results[contender.name] = {**body, **contender.info}
    return results, errors


def overhead_key(method: str, parts: tuple[str, ...]) -> str:
    """The ratio's name: ``<method>_overhead/(<first word of each part>+...)``, e.g. P-Tuning v2's over
    prompt tuning's plus prefix tuning's is ``..._overhead/(prompt+prefix)``."""
    return f"{method}_overhead/({'+'.join(part.split('_')[0] for part in parts)})"


def combined_overhead(walls: dict[str, float], method: str, parts: tuple[str, ...], floor: str) -> float:
    """``method``'s cost over a frozen forward (the floor: head-only), over the sum of ``parts``' costs over it."""
    base = walls[floor]
    combined = sum(walls[part] - base for part in parts)
    return (walls[method] - base) / combined if combined > 0 else float("nan")


def overhead_ratio(times: dict, errors: dict[str, str], method: str, parts: tuple[str, ...]) -> dict[str, Any]:
    """:func:`combined_overhead` of the medians (differences of single steps are too noisy to pair)."""
    from bench.speed.config import frozen_method

    floor = frozen_method()
    needed = (method, *parts, floor)
    missing = [name for name in needed if name not in times]
    if missing:
        return {"value": None, "na": errors.get(missing[0]) or f"{missing[0]} not run"}
    value = combined_overhead({name: statistics.median(times[name]["wall"]) for name in needed}, method, parts, floor)
    if value != value:  # NaN: the methods' costs over head-only were not measurable
        return {"value": None, "na": f"{'/'.join(parts)} steps not slower than {floor} here"}
    rounds = range(len(times[floor]["wall"]))
    per_round = [combined_overhead({n: times[n]["wall"][i] for n in needed}, method, parts, floor) for i in rounds]
    per_round = [v for v in per_round if v == v]
    q1, _, q3 = quartiles(per_round) if per_round else (value, value, value)
    return {"value": round(value, 4), "iqr": round(q3 - q1, 4), "n": len(times[floor]["wall"])}


def add_tokens_per_s(results: dict[str, dict[str, Any]], tokens: int) -> None:
    """``tokens_per_s`` of every timed contender: ``tokens`` (real ones, per call) over its median call."""
    for body in results.values():
        if body.get("median_s"):
            body["tokens_per_s"] = round(tokens / body["median_s"], 2)
