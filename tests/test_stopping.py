"""Convergence stopping: a plateau of validation passes ends a run, the step cap ends it otherwise, and the
record says which, with ``converged`` agreeing by construction (bench.train.StopRule)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.diagnostics import run_diagnostics
from bench.runner import execute
from bench.settings import TrainerConfig, TrainerConfigError
from bench.train import LoopState, StopRule, make_scheduler
from tests.conftest import compose


def run(tmp_path: Path, *trainer: str) -> dict:
    overrides = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke", *trainer]
    config = OmegaConf.to_container(compose(overrides, hydra_node=False), resolve=True)
    return execute(config, tmp_path)


def test_a_plateau_stops_the_run_before_its_cap(tmp_path: Path) -> None:
    # no gain can exceed a margin of 1.0 on a metric in [0, 1]: the second pass is the plateau's first
    record = run(tmp_path, "trainer.max_steps=40", "trainer.stop_patience=2", "trainer.stop_margin=1.0")
    assert record["status"] == "ok", record["error"]
    steps = [h["step"] for h in record["metrics"]["history"]]
    assert steps == [2, 4, 6]  # the first pass, then 2 passes without a gain > 1.0
    diagnostics = record["diagnostics"]
    assert diagnostics["stop_reason"] == "plateau" and diagnostics["stop_step"] == 6
    assert diagnostics["converged"] is True and diagnostics["converged_reason"].startswith("plateau")
    assert record["throughput"]["train_steps"] == 6


def test_the_cap_ends_a_run_still_improving_and_it_is_not_converged(tmp_path: Path) -> None:
    record = run(tmp_path, "trainer.max_steps=6", "trainer.stop_patience=50")
    assert [h["step"] for h in record["metrics"]["history"]] == [2, 4, 6]
    diagnostics = record["diagnostics"]
    assert diagnostics["stop_reason"] == "cap" and diagnostics["stop_step"] == 6
    assert diagnostics["converged"] is False and diagnostics["converged_reason"].startswith("cap")


def test_a_fixed_budget_says_cap_and_judges_convergence_from_the_curve(tmp_path: Path) -> None:
    record = run(tmp_path)
    assert record["diagnostics"]["stop_reason"] == "cap"
    assert not record["diagnostics"]["converged_reason"].startswith(("plateau", "cap"))


def test_a_gain_within_the_margin_does_not_reset_the_patience() -> None:
    rule, state = StopRule(patience=2, margin=0.05, cap=100), LoopState()
    history = []
    for step, score in [(10, 0.50), (20, 0.60), (30, 0.62), (40, 0.64), (50, 0.70)]:
        history.append({"step": step, "split": "validation", "f1": score})
        state.step = step
        rule.observe(state, score)
        state.best_score = max(state.best_score, score)
        if rule.plateaued(state):
            break
    assert state.step == 40  # 0.62 and 0.64 are gains of ≤ 0.05 over 0.60: two passes without a gain
    stop = rule.describe(state, plateau=True)
    assert run_diagnostics(history, "f1", "classification", None, stop=stop)["converged"] is True


@pytest.mark.parametrize("schedule, expected", [("linear", 0.0), ("constant", 1.0)])
def test_lr_schedules_after_warm_up(schedule: str, expected: float) -> None:
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = make_scheduler(optimizer, TrainerConfig(warmup_ratio=0.1, lr_schedule=schedule), steps=10)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


@pytest.mark.parametrize("schedule", ["linear", "constant"])
@pytest.mark.parametrize("warmup_ratio, steps", [(0.0, 7), (0.02, 300), (0.06, 1890), (0.5, 3)])
def test_lr_schedules_equal_transformers_step_for_step(schedule: str, warmup_ratio: float, steps: int) -> None:
    """Our schedule replaced transformers' (whose module imports peft); every LR a run trains at is unchanged."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    def lrs(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        scheduler, seen = make(optimizer), []
        for _ in range(steps + 2):  # two past the cap: linear stays at 0
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    warmup = int(warmup_ratio * steps)
    theirs = (
        (lambda o: get_constant_schedule_with_warmup(o, warmup))
        if schedule == "constant"
        else (lambda o: get_linear_schedule_with_warmup(o, warmup, steps))
    )
    ours = lambda o: make_scheduler(o, TrainerConfig(warmup_ratio=warmup_ratio, lr_schedule=schedule), steps)  # noqa: E731
    assert lrs(ours) == lrs(theirs)


def test_stop_settings_are_checked_before_anything_loads() -> None:
    with pytest.raises(TrainerConfigError, match="trainer.stop_patience=0"):
        TrainerConfig.from_dict({"stop_patience": 0})
    with pytest.raises(TrainerConfigError, match="trainer.lr_schedule='cosine'"):
        TrainerConfig.from_dict({"lr_schedule": "cosine"})
