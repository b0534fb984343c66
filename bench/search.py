"""Hyperparameter search: ``python -m bench.search [options] [overrides]``, an Optuna (>= 4) study over runs.

Each trial is an ordinary run: Hydra composes ``conf/config.yaml`` with the command's overrides plus the
trial's values, and :func:`bench.runner.run_point` trains it into its own folder with its own record, so
the report and its tuned table read trials like any sweep. What the driver adds:

- a persistent study (an Optuna journal file beside the runs, or any ``sqlite:``/RDB URL): running the same
  command again resumes it, up to ``--trials`` finished trials in all; records already on disk are not
  trained again;
- every validation pass is reported to a pruner (median or successive halving), which may end a hopeless
  trial: its record has status ``pruned`` (the report lists it and never averages it), the study marks it
  PRUNED, not failed;
- the record names its study and trial (``record["search"]``);
- a table (``trials.csv``, ``trials.md``) and Optuna's plots (``history.png``, ``intermediate.png``) in
  ``<runs_root>/<sweep_name>/optuna/``, rewritten after every trial.

The objective is :func:`objective` of the record (the best validation score of the primary metric), in the
direction the metric registry declares (:func:`bench.tasks.metrics.metric_direction`).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.tasks.metrics import metric_direction

__all__ = ["Study", "metric_direction", "objective", "register", "run_study"]  # metric_direction: the registry's

DEFAULT_SPACE = {"trainer.lr": "tag(log, interval(1e-4, 1e-1))", "method.num_virtual_tokens": "int(interval(4, 64))"}
"""Searched when no ``--param`` is given; a key the composed config lacks (LoRA has no virtual tokens) is left out."""
STUDY_FOLDER = "optuna"
PRUNERS = ("median", "halving", "none")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def objective(record: Mapping[str, Any]) -> float | None:
    """The best validation score of the primary metric (``metrics.best[primary]``); None when the run
    has none (failed, diverged, pruned), which the study records as a failed or pruned trial.

    The best rather than the final score: it is the checkpoint the run keeps (test metrics and the
    saved adapter come from it), and it is less noisy than the last evaluation.
    """
    metrics = record.get("metrics") or {}
    value = (metrics.get("best") or {}).get(metrics.get("primary"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def register() -> None:
    """Before Hydra composes: the ``${metric_direction:...}`` resolver."""
    if not OmegaConf.has_resolver("metric_direction"):
        OmegaConf.register_new_resolver("metric_direction", metric_direction)


REMOVED = {
    "hydra/sweeper=optuna": (
        "hydra/sweeper=optuna is gone (hydra-optuna-sweeper pinned optuna 2): run the search with "
        "python -m bench.search [--trials N] [--param KEY=SPEC] [overrides] (README 'Hyperparameter search')"
    )
}
"""Command-line choices that no longer exist: choice -> the one line that says what replaced them."""


def missing_extra(args: Sequence[str]) -> str | None:
    """One line for a command-line choice that was removed (Hydra itself would only call it unknown), or None."""
    for arg in args:
        choice = arg.replace(" ", "").removeprefix("+").removeprefix("override")
        if choice in REMOVED:
            return REMOVED[choice]
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Study:
    """What one search needs besides the overrides: its size, space, pruner and storage."""

    trials: int = 20
    space: dict[str, str] = field(default_factory=dict)  # dotted key -> Hydra sweep syntax; {} = DEFAULT_SPACE
    pruner: Any = "median"  # a name in PRUNERS, or an Optuna pruner object (the API's callers)
    startup_trials: int = 3  # trials that finish before the pruner judges any (median pruner)
    name: str | None = None  # None: the sweep_name
    storage: str | None = None  # None: <runs_root>/<sweep_name>/optuna/journal.log
    seed: int = 0  # the TPE sampler's
    plots: bool = True  # Optuna's plots once the invocation ends (the tables are rewritten after every trial)


def space_of(study: Study, config: Mapping[str, Any]) -> dict[str, Any]:
    """The search space as Hydra sweep objects (``interval``, ``choice``, ``range``), checked against the
    composed config: one line naming the key or the syntax on bad input (:class:`SearchError`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    wanted = study.space or {k: v for k, v in DEFAULT_SPACE.items() if _has(config, k)}
    parser, space = OverridesParser.create(), {}
    for key, spec in wanted.items():
        if not _has(config, key):
            raise SearchError(f"--param {key}: no such setting in the composed config")
        try:
            value = parser.parse_override(f"{key}={spec}").value()
        except HydraException as error:
            raise SearchError(f"--param {key}={spec}: {str(error).splitlines()[0]}") from error
        if isinstance(value, (str, int, float, bool)) or value is None:
            raise SearchError(f"--param {key}={spec}: not a sweep (interval(...), choice(...) or range(...))")
        space[key] = value
    return space


def _has(config: Mapping[str, Any], dotted: str) -> bool:
    """Whether the resolved config has this dotted key (its value may be null: ``trainer.lr``)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


class SearchError(ValueError):
    """Bad search settings (one line)."""


def suggest(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's value for each key, drawn with Optuna's ``suggest_*`` as the sweep object says."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    values = {}
    for key, sweep in space.items():
        if isinstance(sweep, IntervalSweep):
            log = "log" in sweep.tags
            if isinstance(sweep.start, int) and isinstance(sweep.end, int):
                values[key] = trial.suggest_int(key, sweep.start, sweep.end, log=log)
            else:
                values[key] = trial.suggest_float(key, float(sweep.start), float(sweep.end), log=log)
        elif isinstance(sweep, (ChoiceSweep, RangeSweep)):
            options = list(sweep.list) if isinstance(sweep, ChoiceSweep) else list(sweep)
            values[key] = trial.suggest_categorical(key, options)
        else:
            raise SearchError(f"--param {key}: {type(sweep).__name__} is not supported (interval, choice, range)")
    return values


def compose_run(overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(resolved config, its hparams) as ``python -m bench OVERRIDES`` would compose them (Hydra must be
    initialised: :func:`run_study` does it)."""
    from hydra import compose
    from omegaconf import open_dict

    from bench.identity import composed_defaults, hparams

    cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]  # its ${now:...} folders are Hydra's own logs; the run folder comes from identity
    config = OmegaConf.to_container(cfg, resolve=True)
    return config, hparams(config, composed_defaults(choices))


def open_study(study: Study, config: Mapping[str, Any]) -> Any:
    """Create the study, or load it when its storage already holds one of this name (resume)."""
    import optuna

    folder = Path(str(config["runs_root"])) / str(config["sweep_name"]) / STUDY_FOLDER
    storage = study.storage
    if storage is None or "://" not in storage:  # a file: Optuna's journal (no database, safe for many workers)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage) if storage else folder / "journal.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(path)))
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=study.startup_trials),
        "halving": optuna.pruners.SuccessiveHalvingPruner,
        "none": optuna.pruners.NopPruner,
    }
    if isinstance(study.pruner, str) and study.pruner not in pruners:
        raise SearchError(f"--pruner {study.pruner!r}: choices are {', '.join(PRUNERS)}")
    pruner = pruners[study.pruner]() if isinstance(study.pruner, str) else study.pruner
    opened = optuna.create_study(
        study_name=study.name or str(config["sweep_name"]),
        storage=storage,
        direction=metric_direction(config["task"]["primary_metric"]),  # as the metric registry declares
        pruner=pruner,
        load_if_exists=True,
    )
    # seeded past the trials already held: a resumed study must not draw its first points again
    opened.sampler = optuna.samplers.TPESampler(seed=study.seed + len(opened.get_trials(deepcopy=False)))
    return opened


def finished(study: Any) -> int:
    """Trials that ended (complete, pruned, failed), not counting those a signal interrupted (re-queued)."""
    return sum(
        t.state.name in FINISHED and not t.user_attrs.get("interrupted") for t in study.get_trials(deepcopy=False)
    )


def run_study(study: Study, overrides: Sequence[str]) -> tuple[Any, int]:
    """Run trials until the study holds ``study.trials`` finished ones; (the Optuna study, exit status):
    0, 1 when a run of this invocation failed or diverged, 128+signal when one was interrupted."""
    from hydra import initialize_config_dir

    from bench.identity import CONF_DIR

    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base, _ = compose_run(list(overrides))
        space = space_of(study, base)
        optuna_study = open_study(study, base)
        status = 0
        while finished(optuna_study) < study.trials and status not in range(128, 160):
            status = max(status, run_trial(optuna_study, space, list(overrides)))
            write_views(optuna_study, _folder(base), plots=False)  # a killed study still leaves its table
        write_views(optuna_study, _folder(base), plots=study.plots)
    return optuna_study, status


def _folder(config: Mapping[str, Any]) -> Path:
    return Path(str(config["runs_root"])) / str(config["sweep_name"]) / STUDY_FOLDER


def run_trial(optuna_study: Any, space: Mapping[str, Any], overrides: list[str]) -> int:
    """Ask for a trial, run it as an ordinary run with per-pass reports, tell the study how it ended."""
    from optuna.trial import TrialState

    from bench.identity import run_dir
    from bench.runner import INTERRUPTED, PRUNED, interrupted_exit_code, run_point
    from bench.train import PASS_HOOK

    trial = optuna_study.ask()
    values = suggest(trial, space)
    trial_overrides = overrides + [_override(key, value) for key, value in values.items()]
    config, point = compose_run(trial_overrides)
    folder = run_dir(config, point)
    trial.set_user_attr("record", str(folder / "result.json"))
    token = PASS_HOOK.set(_reporter(trial, config["task"]["primary_metric"]))
    try:
        outcome = run_point(config, folder, trial_overrides, point)
    finally:
        PASS_HOOK.reset(token)
    record = outcome.record or {}
    if outcome.status in ("ok", "failed", "diverged", PRUNED, INTERRUPTED):  # this trial wrote the record
        _name_trial(record, outcome.path, optuna_study.study_name, trial.number)
    value = objective(record) if record.get("status") == "ok" else None
    if outcome.status == INTERRUPTED:  # the same point again on resume, from its checkpoint
        trial.set_user_attr("interrupted", True)
        optuna_study.tell(trial, state=TrialState.FAIL)
        optuna_study.enqueue_trial(values)
        return interrupted_exit_code(record)
    if outcome.status == PRUNED:
        optuna_study.tell(trial, state=TrialState.PRUNED)
    elif value is not None and math.isfinite(value):
        optuna_study.tell(trial, value)
    else:
        trial.set_user_attr("reason", outcome.reason or f"status {outcome.status}")
        optuna_study.tell(trial, state=TrialState.FAIL)
    return 1 if outcome.status in ("failed", "diverged") else 0


def _override(key: str, value: Any) -> str:
    """``key=value`` in Hydra's override grammar (strings quoted, booleans lower-case)."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"


def _reporter(trial: Any, primary: str) -> Any:
    """The per-pass hook (:data:`bench.train.PASS_HOOK`): report the pass's primary score at its step,
    end the run (:class:`bench.train.Pruned`) when the pruner says so."""
    from bench.train import Pruned

    def report(step: int, entry: Mapping[str, Any]) -> None:
        value = entry.get(primary)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return  # nothing a pruner can compare; the loss watch decides about a run gone NaN
        trial.report(float(value), step)
        if trial.should_prune():
            raise Pruned(f"trial {trial.number}: validation {primary} {value:.4g} at step {step} judged hopeless")

    return report


def _name_trial(record: dict[str, Any], path: Path, study_name: str, number: int) -> None:
    """Add the study and trial to the record this trial wrote (``record["search"]``)."""
    from bench.record import write_record

    if not record or not path.exists():
        return
    record["search"] = {"study": study_name, "trial": number}
    write_record(record, path)


def trials_table(optuna_study: Any) -> Any:
    """One row per trial: number, state, value, its parameters, the pass it reached, its record."""
    frame = optuna_study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    steps = {t.number: max(t.intermediate_values, default=None) for t in optuna_study.get_trials(deepcopy=False)}
    frame.insert(3, "last_step", frame["number"].map(steps))
    return frame.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))


def write_views(optuna_study: Any, folder: Path, plots: bool = True) -> list[Path]:
    """``trials.csv``, ``trials.md`` and (``plots``, once a trial completed) Optuna's history and
    intermediate-value plots into ``folder``; the paths written."""
    from bench.report.render import to_markdown

    folder.mkdir(parents=True, exist_ok=True)
    table = trials_table(optuna_study)
    table.to_csv(folder / "trials.csv", index=False)
    (folder / "trials.md").write_text(to_markdown(table) + "\n")  # the report's renderer: no tabulate
    written = [folder / "trials.csv", folder / "trials.md"]
    if plots and any(t.state.name == "COMPLETE" for t in optuna_study.get_trials(deepcopy=False)):
        written += write_plots(optuna_study, folder)
    return written


def write_plots(optuna_study: Any, folder: Path) -> list[Path]:
    """Optuna's optimisation history and intermediate values (its matplotlib backend) as PNGs."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, plot in (
            ("history.png", optuna_plots.plot_optimization_history),
            ("intermediate.png", optuna_plots.plot_intermediate_values),
        ):
            axes = plot(optuna_study)
            axes.figure.savefig(folder / name, dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
            written.append(folder / name)
    return written


def summary_line(optuna_study: Any) -> str:
    """``study demo: 6 trials (4 complete, 2 pruned, 0 failed); best 0.75 (trial 3: trainer.lr=0.01)``."""
    states = [t.state.name for t in optuna_study.get_trials(deepcopy=False)]
    counts = {name: states.count(name) for name in FINISHED}
    line = (
        f"study {optuna_study.study_name}: {sum(counts.values())} trials ({counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed)"
    )
    if counts["COMPLETE"]:
        best = optuna_study.best_trial
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        line += f"; best {best.value:.4g} (trial {best.number}: {params})"
    return line


def parse_args(argv: Sequence[str]) -> tuple[Study, list[str]]:
    """Options first; everything else is a Hydra override of each trial's run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.search",
        description="An Optuna study over runs: resumable (same command again), pruned per validation pass.",
        epilog="Other arguments are Hydra overrides, e.g. method=<name> task=rte sweep_name=rte_lr.",
    )
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should hold in all")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help="e.g. 'trainer.lr=tag(log, interval(1e-4, 1e-1))'",
    )
    parser.add_argument("--pruner", choices=PRUNERS, default="median")
    parser.add_argument("--startup-trials", type=int, default=3, help="median pruner: trials finished before it prunes")
    parser.add_argument("--study", default=None, help="study name (default: sweep_name)")
    parser.add_argument(
        "--storage", default=None, help="journal file or sqlite:///... URL (default: <sweep>/optuna/journal.log)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed")
    options, overrides = parser.parse_known_args(list(argv))
    if bad := [arg for arg in overrides if arg.startswith("--")]:
        parser.error(f"unknown option {bad[0]}")
    space = {}
    for param in options.param:
        key, sep, spec = param.partition("=")
        if not sep or not key or not spec:
            parser.error(f"--param {param!r}: expected KEY=SPEC, e.g. trainer.lr='tag(log, interval(1e-4, 1e-1))'")
        space[key.strip()] = spec.strip()
    study = Study(
        options.trials, space, options.pruner, options.startup_trials, options.study, options.storage, options.seed
    )
    return study, overrides


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.search``: run (or resume) the study; print one line per run and the study's summary."""
    study, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if not _installed("optuna"):
        print(
            "error: python -m bench.search needs the 'optuna' extra: pip install 'softprompt-bench[optuna]'",
            file=sys.stderr,
        )
        return 2
    try:
        optuna_study, status = run_study(study, overrides)
    except SearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_line(optuna_study), flush=True)
    return status


if __name__ == "__main__":
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our run lines say what happened; Optuna's repeat it
    sys.exit(main())
