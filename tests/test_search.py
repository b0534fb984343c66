"""Hyperparameter search (issue #15): ``hydra/sweeper=optuna`` composes with every launcher, optimises
the record's best validation score in the task metric's direction, and its trials are ordinary runs."""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from omegaconf import OmegaConf

from bench.record import read_record
from bench.search import metric_direction, objective, register
from tests.conftest import compose, group_choices, run_bench
from tests.test_config import LAUNCHER_PLUGINS

needs_optuna = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra/sweeper=optuna needs the 'optuna' extra",
)


def test_objective_is_the_best_validation_score_of_the_primary_metric() -> None:
    record = {"metrics": {"primary": "f1", "final": {"f1": 0.5}, "best": {"f1": 0.7, "accuracy": 0.9}}}
    assert objective(record) == 0.7
    assert objective({"metrics": {"primary": "f1", "final": {}, "best": {}}}) is None  # failed: a failed trial
    assert metric_direction("accuracy") == metric_direction("bleu") == "maximize"
    assert metric_direction("error_rate") == "minimize"  # declared in the metric registry


@needs_optuna
@pytest.mark.parametrize("launcher", group_choices("hydra/launcher"))
def test_optuna_preset_composes_with_every_launcher(launcher: str) -> None:
    if importlib.util.find_spec(LAUNCHER_PLUGINS[launcher]) is None:
        pytest.skip(f"{LAUNCHER_PLUGINS[launcher]} is an optional extra")
    register()
    cfg = compose(["hydra/sweeper=optuna", f"hydra/launcher={launcher}", "task=rte"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert dict(sweeper.params) == {
        "trainer.lr": "tag(log, interval(1e-4, 1e-1))",
        "method.num_virtual_tokens": "int(interval(4, 64))",
    }
    assert OmegaConf.select(cfg, "hydra.sweeper.direction") == "maximize" and "_target_" in cfg.hydra.launcher


@needs_optuna
def test_optuna_sweep_of_four_trials_leaves_four_ordinary_records(runs_root) -> None:
    result = run_bench(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=4",
            "method=prompt_tuning",
            "model=tiny_bert",
            "task=synth_cls",
            "trainer=smoke",
            f"runs_root={runs_root}",
            "sweep_name=tpe",
            "method.num_virtual_tokens=int(interval(2, 8))",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [read_record(path) for path in sorted(runs_root.rglob("result.json"))]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    points = {
        (r["provenance"]["config"]["trainer"]["lr"], r["provenance"]["config"]["method"]["num_virtual_tokens"])
        for r in records
    }
    assert len(points) == 4 and all(1e-4 <= lr <= 1e-1 and 2 <= n <= 8 for lr, n in points)
    study = yaml.safe_load(next((runs_root / "tpe").rglob("optimization_results.yaml")).read_text())
    assert study["best_value"] == pytest.approx(max(objective(r) for r in records))
    from bench.report import load_runs
    from bench.report.tables import select_points

    chosen = select_points(load_runs(runs_root / "tpe"))  # the tuned table's choice among the 4 trials
    assert len(chosen) == 1 and chosen.loc[0, "candidates"] == 4
    assert chosen.loc[0, "selection"] == pytest.approx(max(objective(r) for r in records))
