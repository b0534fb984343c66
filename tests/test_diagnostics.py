"""Diagnostics on constructed cases: plateau, still rising, constant predictor, exploding loss,
and the prefix probe measured through the real attention function."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.diagnostics import LossWatch, PrefixProbe, convergence, is_collapsed
from bench.runner import execute
from tests.conftest import compose


def curve(scores: list[float], losses: list[float] | None = None, every: int = 10) -> list[dict]:
    entries = [{"step": every * (i + 1), "split": "validation", "accuracy": s} for i, s in enumerate(scores)]
    for entry, loss in zip(entries, losses or []):
        entry["eval_loss"] = loss
    return entries


def test_a_plateaued_curve_is_converged() -> None:
    converged, reason = convergence(curve([0.55, 0.70, 0.80, 0.81, 0.80, 0.81, 0.805, 0.81]), "accuracy")
    assert converged, reason


def test_a_curve_still_rising_at_its_last_step_is_not_converged() -> None:
    converged, reason = convergence(curve([0.50, 0.52, 0.55, 0.60, 0.66, 0.71, 0.78, 0.86]), "accuracy")
    assert not converged and "still rising" in reason


def test_a_late_jump_counts_as_rising_even_after_a_long_flat_stretch() -> None:
    # prefix tuning in issue #10: flat near 0.6, then 0.86 and 1.00 in the last steps
    converged, _ = convergence(curve([0.55, 0.6, 0.6, 0.61, 0.6, 0.61, 0.86, 1.0]), "accuracy")
    assert not converged


def test_a_flat_score_with_a_falling_validation_loss_is_not_converged() -> None:
    losses = [0.69, 0.68, 0.67, 0.66, 0.65, 0.64, 0.61, 0.58]
    converged, reason = convergence(curve([0.59] * 8, losses), "accuracy")
    assert not converged and "loss still falling" in reason
    converged, _ = convergence(curve([0.59] * 8, [0.69, 0.68, 0.675, 0.67, 0.67, 0.668, 0.667, 0.668]), "accuracy")
    assert converged


def test_a_perfect_score_before_the_last_quarter_is_converged_whatever_the_loss() -> None:
    converged, _ = convergence(curve([0.9, 1.0, 1.0, 1.0], [0.3, 0.1, 0.05, 0.01]), "accuracy")
    assert converged


def test_too_few_passes_cannot_be_called_converged() -> None:
    assert not convergence(curve([0.9]), "accuracy")[0]
    assert not convergence([], "accuracy")[0]


@pytest.mark.parametrize(
    "kind,predictions,expected",
    [
        ("classification", [1, 1, 1, 1], True),
        ("classification", [1, 0, 1, 1], False),
        ("multiple_choice", [0, 0, 0], True),
        ("token_classification", [[0, 0], [0], [0, 0, 0]], True),
        ("token_classification", [[0, 1], [0], [0, 0, 0]], False),
        ("generation", ["", " ", ""], True),
        ("generation", ["the cafe", "the cafe"], True),
        ("generation", ["the cafe", "a bar"], False),
        ("classification", [1], False),
    ],
)
def test_a_constant_predictor_is_collapsed(kind: str, predictions: list, expected: bool) -> None:
    assert is_collapsed(kind, predictions) is expected


def test_an_exploding_loss_is_caught_relative_to_the_first_steps() -> None:
    watch = LossWatch()
    losses = [0.70, 0.69, 0.71, 0.68, 0.70, 0.9, 3.0, 8.0, 20.0, 40.0]
    reasons = [watch.update(loss) for loss in losses]
    first = next(i for i, r in enumerate(reasons) if r)
    assert first == 9 and "first-steps loss" in reasons[first]  # mean of last 5 = 14.4 > 10 × 0.70


def test_a_single_spike_is_not_an_explosion_but_an_absolute_bound_is() -> None:
    watch = LossWatch()
    assert all(watch.update(loss) is None for loss in [0.7, 0.7, 0.7, 0.7, 0.7, 9.0, 0.7, 0.7])
    assert "exploded" in LossWatch().update(4.8e14)  # the lr=1e6 run, caught at its first step
    assert "became nan" in LossWatch().update(math.nan)


def test_the_lr_1e6_smoke_run_is_recorded_as_diverged(tmp_path: Path, one_thread) -> None:
    config = OmegaConf.to_container(
        compose(
            ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke", "trainer.lr=1e6"],
            hydra_node=False,
        ),
        resolve=True,
    )
    record = execute(config, tmp_path)
    assert record["status"] == "diverged" and "exploded" in record["error"]
    assert record["diagnostics"]["exploded"] is True and record["diagnostics"]["converged"] is False


def test_an_ok_run_records_every_diagnostic(tmp_path: Path, one_thread) -> None:
    config = OmegaConf.to_container(
        compose(["method=p_tuning_v2", "model=tiny_bert", "task=synth_cls", "trainer=smoke"], hydra_node=False),
        resolve=True,
    )
    record = execute(config, tmp_path)
    found = record["diagnostics"]
    assert record["status"] == "ok"
    assert set(found) >= {
        "converged",
        "converged_reason",
        "collapsed",
        "exploded",
        "prefix_key_norm_ratio",
        "prefix_attention_share",
    }
    assert found["prefix_key_norm_ratio"] > 0 and 0 < found["prefix_attention_share"] < 1


def _probe_layer(query, key, mask, n_prefix) -> dict:
    probe = PrefixProbe(layers=1)
    probe.observe(torch.nn.Module(), query, key, mask, n_prefix)
    return probe.summary()


def test_the_probe_measures_key_norms_and_attention_share_exactly() -> None:
    # 1 head, head_dim 1: prefix key 3, real keys 1 and 1 (and one padded key 100 that must not count)
    query = torch.ones(1, 1, 3, 1)
    key = torch.tensor([3.0, 1.0, 1.0, 100.0]).view(1, 1, 4, 1)
    mask = torch.tensor([True, True, True, False]).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    found = _probe_layer(query, key, mask, n_prefix=1)
    assert found["prefix_key_norm_ratio"] == pytest.approx(3.0)
    # scores q·k/sqrt(1): 3, 1, 1 -> share e^3 / (e^3 + 2e) over the two real queries (the padded one is left out)
    assert found["prefix_attention_share"] == pytest.approx(math.exp(3) / (math.exp(3) + 2 * math.e))


def test_the_probe_sees_the_prefix_through_the_attention_function(one_thread) -> None:
    from bench.models import load_model
    from methods import get_method
    from methods.model import AdaptedModel

    loaded = load_model({"name": "tiny_bert", "source": "tiny", "family": "bert"}, "classification")
    method = get_method("prefix_tuning").from_dict({"num_virtual_tokens": 4})
    model = AdaptedModel(loaded.backbone, method, "classification", num_labels=2, seed=0).eval()
    batch = loaded.tokenizer(["a short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    with PrefixProbe(len(model.attention_modules)) as probe, torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # ignored: one batch
    assert len(probe.shares) == 2 and len(probe.key_ratios) == 2
    assert all(0 < s < 1 for s in probe.shares)
    with torch.no_grad():  # scaling the prefix keys up raises both measurements
        model.soft_prompt.mlp[-1].weight.mul_(10)
        model.soft_prompt.mlp[-1].bias.mul_(10)
    with PrefixProbe(len(model.attention_modules)) as bigger, torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert bigger.summary()["prefix_key_norm_ratio"] > 5 * probe.summary()["prefix_key_norm_ratio"]
