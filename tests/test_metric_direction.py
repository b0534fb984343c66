"""A metric's direction is declared once, in the metric registry, and every "best" follows it: the
training loop's best checkpoint and plateau, the fixed-budget convergence check, the protocol's choice,
the Optuna objective's direction and the report's selection, bold best, ranks and claim signs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import bench.report as report
from bench.diagnostics import convergence
from bench.protocol import Plan, choose
from bench.report import comparison as cmp
from bench.search import objective
from bench.tasks.metrics import DIRECTIONS, METRICS, MINIMIZE, metric_direction, orient
from bench.train import LoopState, StopRule, TrainResult, _evaluate_and_track
from tests.conftest import run_bench
from tests.test_report import make_record, write_record

ERROR = "error_rate"  # the registry's lower-is-better metric (1 − accuracy)


def test_every_result_key_has_one_declared_direction() -> None:
    keys = {key for metric in METRICS.values() for key in metric.keys}
    assert all(metric_direction(key) in DIRECTIONS for key in keys)
    assert metric_direction(ERROR) == MINIMIZE and metric_direction("accuracy") == metric_direction("bleu") != MINIMIZE
    assert orient(ERROR, 0.2) > orient(ERROR, 0.3) and orient("f1", 0.3) > orient("f1", 0.2)
    with pytest.raises(ValueError, match="unknown metric key 'nope'"):
        metric_direction("nope")


def _track(metric: str, scores: list[float], patience: int = 2) -> tuple[TrainResult, LoopState, StopRule]:
    """Feed ``scores`` as successive validation passes through the training loop's bookkeeping."""
    model, task = torch.nn.Linear(2, 2), SimpleNamespace(primary_metric=metric)
    result, state = TrainResult(timer=SimpleNamespace(total_s=0.0)), LoopState()
    rule = StopRule(patience, 0.0, 100)
    for score in scores:
        state.step += 1
        with torch.no_grad():
            model.weight.fill_(score)  # the checkpoint kept must be the one of the best pass
        _evaluate_and_track(model, task, 0.0, result, state, lambda _split, s=score: {metric: s}, rule)
    assert state.best_params is not None and float(state.best_params["weight"][0, 0]) == pytest.approx(
        result.best[metric]
    )
    return result, state, rule


def test_the_best_checkpoint_and_the_plateau_follow_the_direction() -> None:
    result, state, rule = _track(ERROR, [0.5, 0.3, 0.4, 0.35])
    assert (result.best_step, result.best[ERROR]) == (2, 0.3)  # the minimum, not the first or the maximum
    assert rule.plateaued(state) and state.last_gain_step == 2  # two passes without a fall: plateau
    result, state, rule = _track("accuracy", [0.5, 0.3, 0.4, 0.35])
    assert (result.best_step, result.best["accuracy"]) == (1, 0.5) and rule.plateaued(state)
    _, state, rule = _track(ERROR, [0.5, 0.4, 0.3, 0.2])  # falling error: still improving
    assert not rule.plateaued(state) and state.last_gain_step == 4


def test_fixed_budget_convergence_reads_a_falling_error_as_progress() -> None:
    curve = [{"step": s, "split": "validation", ERROR: v} for s, v in zip(range(1, 9), [0.5] * 6 + [0.4, 0.3])]
    converged, reason = convergence(curve, ERROR)
    assert not converged and "still falling" in reason
    flat = [{**entry, ERROR: 0.3} for entry in curve]
    assert convergence(flat, ERROR)[0]


def _record(runs: Path, method: str, lr: float, seed: int, best: float, test: float) -> None:
    record = make_record(
        method, "minilm", "synth_cls", seed, best, primary=ERROR, test=test, hparams={"trainer.lr": lr}
    )
    record["metrics"]["best"] = {ERROR: best}
    record["provenance"]["config"]["trainer"]["lr"] = lr  # where the protocol reads a run's grid point
    write_record(runs, record)


def _lower_is_better_runs(runs: Path) -> None:
    for seed in (0, 1):
        _record(runs, "prompt_tuning", 0.1, seed, 0.30, 0.32)
        _record(runs, "prompt_tuning", 0.01, seed, 0.20 + seed / 100, 0.25)  # the smaller error: chosen
        _record(runs, "prefix_tuning", 0.01, seed, 0.15, 0.15 + seed / 100)
        _record(runs, "head_only", 0.01, seed, 0.50, 0.50 + seed / 100)
        _record(runs, "full_finetune", 0.01, seed, 0.10, 0.10 + seed / 100)


def test_the_protocol_and_the_report_select_the_minimum(tmp_path: Path) -> None:
    _lower_is_better_runs(tmp_path)
    df = report.load_records(tmp_path)
    plan = Plan(
        "x",
        tmp_path,
        ["prompt_tuning"],
        ["minilm"],
        ["synth_cls"],
        {"prompt_tuning": {"trainer.lr": [0.1, 0.01]}},
        0,
        [0],
        "best",
    )
    choice = choose(df, plan, "prompt_tuning", "minilm", "synth_cls")
    assert choice.point == {"trainer.lr": 0.01} and choice.score == pytest.approx(0.20)
    tuned = report.tuned_data(df).set_index("method")
    assert tuned.loc["prompt_tuning", "hparams"] == "lr=0.01" and tuned.loc["prompt_tuning", "mean"] == pytest.approx(
        0.25
    )
    table = report.main_table(df, "tuned").set_index("Method")["synth_cls (error_rate; on test)"]
    assert table["full_finetune"].startswith("**10.5**") and not table["head_only"].startswith("**")
    scores = cmp.relative_scores(df).set_index("method")
    assert scores.loc["full_finetune", "rank"] == 1 and scores.loc["head_only", "rank"] == 4
    assert 0 < scores.loc["prompt_tuning", "r"] < 1  # between the floor (0.50) and the ceiling (0.10)
    claims = cmp.claim_check_data(df).set_index("relation")
    assert claims.loc["prompt_tuning < prefix_tuning", "diff"] == pytest.approx(0.25 - 0.155)  # prefix is better


def test_a_lower_is_better_primary_metric_end_to_end(runs_root: Path) -> None:
    result = run_bench(
        [
            "-m",
            "method=head_only",
            "model=tiny_bert",
            "task=synth_cls",
            f"task.metric=[{ERROR},accuracy]",
            f"task.primary_metric={ERROR}",
            "trainer=smoke",
            "trainer.max_steps=6",
            "trainer.lr=1e-4,0.3",
            f"runs_root={runs_root}",
            "sweep_name=err",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    df = report.load_records(runs_root / "err")
    assert len(df) == 2 and df["usable"].all() and set(df["metrics.primary"]) == {ERROR}
    for _, run in df.iterrows():
        curve = [h[ERROR] for h in run["metrics.history"] if h.get("split") == "validation"]
        assert run["score_best"] == min(curve)  # the kept checkpoint is the lowest error of the run
        assert objective({"metrics": {"primary": ERROR, "best": {ERROR: run["score_best"]}}}) == run["score_best"]
    plan = Plan(
        "x",
        runs_root / "err",
        ["head_only"],
        ["tiny_bert"],
        ["synth_cls"],
        {"head_only": {"trainer.lr": [1e-4, 0.3]}},
        0,
        [0],
        "best",
    )
    choice = choose(df, plan, "head_only", "tiny_bert", "synth_cls")
    assert choice.score == min(df["score_best"]) == report.select_points(df).loc[0, "selection"]
