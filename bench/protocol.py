"""``python -m bench.protocol PRESET [--dry-run] [overrides...]``: the reference-results protocol.

Two stages, one command, resumable:

1. **grid** — for each method of the sweep preset (``conf/sweep/PRESET.yaml``), a Hydra multirun of
   its hyperparameter grid (``protocol.grid.<method>``, e.g. ``trainer.lr: [1e-3, 3e-3, 1e-2]``) over
   the preset's models and tasks at one seed (``protocol.grid_seed``);
2. **seeds** — the records are read back and, per method × model × task, the grid point with the
   best validation score (``metrics.<protocol.select_on>.<primary>``, in the direction the metric
   registry declares for it; ties go to the earlier grid value) is run at every seed of ``protocol.seeds``.

A rerun skips every run whose ``ok`` record is up to date (the runner's resume), so a killed
protocol continues where it stopped. What was chosen and why is printed and written to
``<runs_root>/<sweep_name>/protocol.json``. Extra ``key=value`` arguments are passed to every run
(e.g. ``task.data_dir=...`` or ``device=cuda``). ``--choose-only`` launches nothing: it chooses from the records
already there and writes protocol.json (records gathered from another machine).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import CONF_DIR
from bench.tasks.metrics import orient


class ProtocolError(ValueError):
    """The preset cannot drive the protocol (no such preset, no ``protocol`` block, bad grid)."""


@dataclass
class Plan:
    """What a preset asks for, read from its composed config."""

    preset: str
    runs_dir: Path
    methods: list[str]
    models: list[str]
    tasks: list[str]
    grid: dict[str, dict[str, list[Any]]]  # method -> override key -> values
    grid_seed: int
    seeds: list[int]
    select_on: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class Choice:
    """The grid point chosen for one method × model × task, with the evidence."""

    method: str
    model: str
    task: str
    point: dict[str, Any] | None  # None: no usable grid record
    score: float | None
    metric: str | None
    tried: list[dict[str, Any]]  # every grid point: values, score (None when missing or unusable), status


def compose_preset(preset: str, overrides: list[str]) -> Any:
    """The preset's composed config, with the Hydra node (for the sweeper's lists)."""
    if not (CONF_DIR / "sweep" / f"{preset}.yaml").is_file():
        names = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
        raise ProtocolError(f"no sweep preset {preset!r} (conf/sweep/{preset}.yaml); have {names}")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"sweep={preset}", *overrides], return_hydra_config=True)


def _split(value: Any) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def make_plan(preset: str, overrides: list[str], only: dict[str, list[str]] | None = None) -> Plan:
    """Read the preset's methods, models, tasks and ``protocol`` block; ``only`` replaces any of
    the three lists (``{"task": ["rte", "cb"]}``)."""
    from omegaconf import OmegaConf

    cfg = compose_preset(preset, overrides)
    block = cfg.get("protocol")
    if block is None:
        raise ProtocolError(f"conf/sweep/{preset}.yaml: no 'protocol' block (grid, grid_seed, seeds)")
    params = cfg.hydra.sweeper.params
    only = only or {}
    methods = only.get("method") or _split(params.get("method", cfg.method.name))
    grid = OmegaConf.to_container(block.get("grid") or {}, resolve=True)
    for method, keys in grid.items():
        if method not in methods and not only.get("method"):
            raise ProtocolError(f"conf/sweep/{preset}.yaml: protocol.grid.{method}: not a method of the preset")
        for key, values in keys.items():
            if not isinstance(values, list) or not values:
                raise ProtocolError(f"conf/sweep/{preset}.yaml: protocol.grid.{method}.{key}: need a non-empty list")
    return Plan(
        preset=preset,
        runs_dir=Path(cfg.runs_root) / cfg.sweep_name,
        methods=methods,
        models=only.get("model") or _split(params.get("model", cfg.model.name)),
        tasks=only.get("task") or _split(params.get("task", cfg.task.name)),
        grid=grid,
        grid_seed=int(block.get("grid_seed", 0)),
        seeds=[int(s) for s in block.seeds],
        select_on=str(block.get("select_on", "best")),
        overrides=list(overrides),
    )


def grid_points(plan: Plan, method: str) -> list[dict[str, Any]]:
    """Every point of a method's grid, in grid order ([{}] when it has none: its defaults)."""
    keys = list(plan.grid.get(method, {}))
    values = [plan.grid[method][k] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _bench(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench", "-m", *args]


def grid_command(plan: Plan, method: str) -> list[str]:
    """Stage 1 for one method: its grid over the preset's models and tasks at the grid seed."""
    sweep = [f"{k}={','.join(str(v) for v in values)}" for k, values in plan.grid.get(method, {}).items()]
    return _bench(
        [
            f"sweep={plan.preset}",
            f"method={method}",
            f"model={','.join(plan.models)}",
            f"task={','.join(plan.tasks)}",
            f"seed={plan.grid_seed}",
            *sweep,
            *plan.overrides,
        ]
    )


def grid_jobs(plan: Plan, method: str) -> list[list[str]]:
    """The overrides of every job :func:`grid_command` launches, one list per job."""
    return [
        [
            f"sweep={plan.preset}",
            f"method={method}",
            f"model={model}",
            f"task={task}",
            f"seed={plan.grid_seed}",
            *[f"{k}={v}" for k, v in point.items()],
            *plan.overrides,
        ]
        for model in plan.models
        for task in plan.tasks
        for point in grid_points(plan, method)
    ]


def seeds_jobs(plan: Plan, choice: Choice) -> list[list[str]]:
    """The overrides of every job :func:`seeds_command` launches, one list per job."""
    point = [f"{k}={v}" for k, v in (choice.point or {}).items()]
    return [
        [
            f"sweep={plan.preset}",
            f"method={choice.method}",
            f"model={choice.model}",
            f"task={choice.task}",
            f"seed={seed}",
            *point,
            *plan.overrides,
        ]
        for seed in plan.seeds
    ]


def job_is_done(overrides: list[str]) -> bool:
    """Whether the job these overrides make would skip its point as up to date: its folder and identity are
    computed as the job computes them (bench.__main__, bench.runner.run_point). Any doubt (an error, force,
    an artefact asked for) answers False, and the job is launched to decide for itself."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from bench.identity import config_hash, job_point, run_dir
    from bench.runner import apply_paper_settings, up_to_date

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        config = OmegaConf.to_container(cfg, resolve=True)
        if config.get("force") or config.get("save_adapter"):
            return False
        point = job_point(config, choices)
        folder = run_dir(config, point)
        apply_paper_settings(config, set(point))
        return up_to_date(folder / "result.json", config_hash(config))
    except Exception:  # noqa: BLE001 — launching is always safe: the job skips what is finished
        return False


def _run_stage(command: list[str], jobs: list[list[str]], dry_run: bool) -> int:
    """Launch a stage unless every one of its jobs is finished (a rerun of a finished protocol starts no
    process: each would import torch only to skip its point)."""
    if not dry_run and jobs and all(job_is_done(job) for job in jobs):
        print(f"[protocol] {len(jobs)} run(s) up to date, not launched: " + shlex.join(["python", *command[1:]]))
        return 0
    return _run(command, dry_run)


def seeds_command(plan: Plan, choice: Choice) -> list[str]:
    """Stage 2 for one method × model × task: every seed at the chosen point."""
    point = [f"{k}={v}" for k, v in (choice.point or {}).items()]
    return _bench(
        [
            f"sweep={plan.preset}",
            f"method={choice.method}",
            f"model={choice.model}",
            f"task={choice.task}",
            f"seed={','.join(str(s) for s in plan.seeds)}",
            *point,
            *plan.overrides,
        ]
    )


def _config_value(config: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(part)
    return config


def point_of(run: Any, keys: list[str]) -> dict[str, Any]:
    """A record row's values for the grid keys, read from its resolved config (``provenance.config``),
    which holds every setting whether or not it differs from the defaults (``hparams`` only those)."""
    return {key: _config_value(run.get("provenance.config"), key) for key in keys}


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _grid_rows(runs: Any, plan: Plan, method: str, model: str, task: str) -> Any:
    if runs is None or not len(runs):
        return runs
    seeds = runs["seed"].apply(lambda s: str(s) == str(plan.grid_seed))
    return runs[(runs["method"] == method) & (runs["model"] == model) & (runs["task"] == task) & seeds]


INCOMPLETE = ("missing", "locked", "failed", "interrupted")
"""Grid point outcomes that leave its score unknown: a cell with one chooses nothing, since the point not
seen might be the best (a diverged point is an outcome: it lost)."""


def held_locks(plan: Plan, method: str, model: str, task: str) -> list[tuple[dict[str, str], str]]:
    """(the folder's ``key=value`` pairs, holder) of each grid-seed run of the cell that a live process holds."""
    from bench.identity import LOCK_NAME, RunLock

    cell = plan.runs_dir / method / model / task
    found = []
    for lock in sorted(cell.glob(f"**/seed={plan.grid_seed}/{LOCK_NAME}")) if cell.is_dir() else []:
        holder = RunLock.holder(lock)
        folder = lock.parent.parent
        if holder is not None:
            pairs = dict(pair.split("=", 1) for pair in folder.name.split(",") if "=" in pair) if folder != cell else {}
            found.append((pairs, holder))
    return found


def _locked_by(point: dict[str, Any], locks: list[tuple[dict[str, str], str]]) -> str | None:
    """The holder of the run of ``point``, matched on its folder name (``lr=0.1`` or ``trainer.lr=0.1``)."""
    for pairs, holder in locks:
        values = [pairs.get(key, pairs.get(key.rsplit(".", 1)[-1])) for key in point]
        if all(v is not None and _same(v, point[key]) for v, key in zip(values, point)):
            return holder
    return None


def choose(
    runs: Any, plan: Plan, method: str, model: str, task: str, locks: list[tuple[dict[str, str], str]] | None = None
) -> Choice:
    """The grid point with the best validation score in the primary metric's declared direction
    (bench.tasks.metrics.orient: the minimum of a lower-is-better metric), when every grid point has an
    outcome: none while one is missing, failed, interrupted or running (``locks``: :func:`held_locks`)."""
    column = "score_best" if plan.select_on == "best" else "score_final"
    rows = _grid_rows(runs, plan, method, model, task)
    tried, best = [], None
    for point in grid_points(plan, method):
        found = (
            [r for _, r in rows.iterrows() if all(_same(v, point[k]) for k, v in point_of(r, list(point)).items())]
            if rows is not None
            else []
        )
        usable = [r for r in found if r["usable"] and not math.isnan(r[column])]
        metric = str(usable[0]["metrics.primary"]) if usable else ""
        score = max((float(r[column]) for r in usable), key=lambda v: orient(metric, v), default=None)
        status = "ok" if usable else (str(found[0]["status"]) if found else "missing")
        holder = _locked_by(point, locks or []) if not usable else None
        tried.append({"point": point, "score": score, "status": "locked" if holder else status, "holder": holder})
        if score is not None and (best is None or orient(metric, score) > orient(best[2], best[1])):
            best = (point, score, metric)
    if best is None or any(t["status"] in INCOMPLETE for t in tried):
        return Choice(method, model, task, None, None, None, tried)
    return Choice(method, model, task, best[0], best[1], best[2], tried)


def _fmt(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()) or "defaults"


def describe(choice: Choice, select_on: str) -> str:
    """One line: what was chosen and why (every grid point's score), or why nothing was."""
    where = f"{choice.method}/{choice.model}/{choice.task}"
    waiting = [t for t in choice.tried if t["status"] in INCOMPLETE]
    if waiting:
        named = ", ".join(
            f"{_fmt(t['point'])} {t['status']}" + (f" (run held by {t['holder']})" if t.get("holder") else "")
            for t in waiting
        )
        return (
            f"[protocol] {where}: grid incomplete, nothing chosen: {named}; seeds stage skipped "
            "(rerun the protocol to finish the grid, or add --wait-locked SECONDS to wait for running points)"
        )
    others = "; ".join(
        f"{_fmt(t['point'])} " + (f"{t['score']:.4f}" if t["score"] is not None else t["status"]) for t in choice.tried
    )
    if choice.point is None:
        return f"[protocol] {where}: no usable grid run ({others}); seeds stage skipped"
    return (
        f"[protocol] {where}: chose {_fmt(choice.point)} — best validation {choice.metric} ({select_on}) "
        f"{choice.score:.4f} of: {others}"
    )


def choose_all(plan: Plan, wait_locked: float = 0.0) -> list[Choice]:
    """Every cell's choice from the records on disk; with ``wait_locked`` seconds, first wait (polling)
    while a grid point of some cell is running in another process."""
    deadline = time.monotonic() + wait_locked
    while True:
        cells = [(m, model, t) for m in plan.methods for model in plan.models for t in plan.tasks]
        locks = [held_locks(plan, *cell) for cell in cells]  # before the records: a run writes its record, then unlocks
        runs = load_runs(plan.runs_dir)
        choices = [choose(runs, plan, *cell, locks=held) for cell, held in zip(cells, locks)]
        running = [t for c in choices for t in c.tried if t["status"] == "locked"]
        if not running or time.monotonic() >= deadline:
            return choices
        print(f"[protocol] waiting for {len(running)} running grid point(s) (up to {wait_locked:.0f} s)", flush=True)
        time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))


WAIT_POLL_S = 10.0


def load_runs(runs_dir: Path) -> Any:
    """Every record under the preset's runs folder (None when there is none yet)."""
    from bench.report import ReportError, load_records

    try:
        return load_records(runs_dir)
    except ReportError:
        return None


def _run(command: list[str], dry_run: bool) -> int:
    """Run one stage; a SIGTERM/SIGINT sent to the protocol goes to the stage (which checkpoints its run)
    and, once the stage has exited, ends the protocol with 128 + the signal's number. The stage has its
    own session, so a terminal's Ctrl-C reaches it once (through here), and on Linux it gets SIGTERM
    when the protocol dies, however it dies: no stage outlives the protocol to hold a grid point's lock."""
    print("$ " + shlex.join(["python", *command[1:]]), flush=True)
    if dry_run:
        return 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        child.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        code = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        print(f"[protocol] stopped by {signal.Signals(received[0]).name}; rerun to resume", file=sys.stderr)
        sys.exit(128 + received[0])
    return code


def _die_with_parent() -> None:
    """In the stage process, before it starts: ask Linux for SIGTERM when the protocol exits (prctl)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def run_counts(plan: Plan) -> tuple[int, int]:
    """(stage-1 runs, stage-2 runs beyond them): what the protocol costs, in runs."""
    cells = len(plan.models) * len(plan.tasks)
    grid = sum(len(grid_points(plan, m)) for m in plan.methods) * cells
    extra = len(plan.methods) * cells * len([s for s in plan.seeds if s != plan.grid_seed])
    return grid, extra


def run_protocol(plan: Plan, dry_run: bool = False, wait_locked: float = 0.0) -> list[Choice]:
    """Stage 1, selection, stage 2; returns the choices (also written to protocol.json)."""
    grid, extra = run_counts(plan)
    print(
        f"[protocol] {plan.preset}: stage 1 = {grid} grid runs at seed {plan.grid_seed}; stage 2 = {extra} "
        f"more runs (seeds {plan.seeds} at each chosen point); records in {plan.runs_dir}",
        flush=True,
    )
    failures = 0
    for method in plan.methods:
        failures += _run_stage(grid_command(plan, method), grid_jobs(plan, method), dry_run) != 0
    choices = choose_all(plan, wait_locked)
    for choice in choices:
        print(describe(choice, plan.select_on), flush=True)
    more_seeds = bool(set(plan.seeds) - {plan.grid_seed})
    for choice in choices:
        if choice.point is not None and more_seeds:
            failures += _run_stage(seeds_command(plan, choice), seeds_jobs(plan, choice), dry_run) != 0
        elif dry_run and more_seeds:
            print(
                f"# after stage 1: {choice.method}/{choice.model}/{choice.task} at seeds {plan.seeds} "
                "at the chosen point"
            )
    if not dry_run:
        _write_choices(plan, choices)
    print(
        f"[protocol] {plan.preset}: {len(choices)} method×model×task cells, "
        f"{sum(c.point is not None for c in choices)} chosen, {failures} command(s) exited non-zero"
    )
    return choices


def _write_choices(plan: Plan, choices: list[Choice]) -> None:
    """Write this plan's choices into protocol.json, keeping every other cell's choice already there.

    Protocol processes for one preset may run at once, each over a subset (``--methods``, as the device script
    runs them); each rewrites the file under an exclusive lock, replacing only its own cells, so none erases
    another's choices (one file per preset, the last writer's view of each cell)."""
    plan.runs_dir.mkdir(parents=True, exist_ok=True)
    path = plan.runs_dir / "protocol.json"
    with open(plan.runs_dir / "protocol.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        mine = {(c.method, c.model, c.task) for c in choices}
        kept = [c for c in _read_choices(path) if (c["method"], c["model"], c["task"]) not in mine]
        body = {
            "preset": plan.preset,
            "select_on": plan.select_on,
            "grid_seed": plan.grid_seed,
            "seeds": plan.seeds,
            "choices": kept + [asdict(c) for c in choices],
        }
        temp = path.with_suffix(".json.tmp")
        temp.write_text(json.dumps(body, indent=1, default=str) + "\n", encoding="utf-8")
        temp.replace(path)


def _read_choices(path: Path) -> list[dict[str, Any]]:
    """The choices an existing protocol.json holds (none when there is no file)."""
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["choices"])
    except (ValueError, KeyError, TypeError) as error:
        raise ProtocolError(f"{path}: not a protocol.json ({error}); move it aside and rerun") from None


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 2 with one line when the preset cannot drive the protocol."""
    parser = argparse.ArgumentParser(prog="python -m bench.protocol", description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="a sweep preset with a 'protocol' block (conf/sweep/<preset>.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value passed to every run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands (and choices so far) only")
    parser.add_argument(
        "--choose-only", action="store_true", help="launch nothing: choose from the records there, write protocol.json"
    )
    for group in ("method", "model", "task"):
        parser.add_argument(f"--{group}s", help=f"comma list replacing the preset's {group}s")
    parser.add_argument("--seeds", help="comma list replacing protocol.seeds (e.g. 0: the grid stage only)")
    parser.add_argument(
        "--wait-locked",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before choosing, wait up to SECONDS for grid points running in other processes",
    )
    args = parser.parse_intermixed_args(argv)  # overrides may follow options
    only = {g: _split(getattr(args, f"{g}s")) for g in ("method", "model", "task") if getattr(args, f"{g}s")}
    try:
        plan = make_plan(args.preset, args.overrides, only)
        if args.seeds:
            plan.seeds = [int(s) for s in _split(args.seeds)]
        _read_choices(plan.runs_dir / "protocol.json")  # a damaged file stops the protocol now, not after its runs
    except ValueError as error:  # ProtocolError, or a --seeds value that is not an integer
        print(f"error: {error}", file=sys.stderr)
        return 2
    choices = choose_and_write(plan) if args.choose_only else run_protocol(plan, args.dry_run, args.wait_locked)
    return 0 if args.dry_run or all(c.point is not None for c in choices) else 1


def choose_and_write(plan: Plan) -> list[Choice]:
    """Choose from the records already under the plan's runs folder and write protocol.json; launch nothing."""
    choices = choose_all(plan)
    for choice in choices:
        print(describe(choice, plan.select_on), flush=True)
    _write_choices(plan, choices)
    return choices


if __name__ == "__main__":
    sys.exit(main())
