"""Evaluation feature cache (bench.eval_cache): head-only reuses the frozen backbone's features.

On the tiny random models: a pass served from stored features gives exactly the predictions, loss
and metrics of a full pass with the same head, for classification, multiple choice and token
classification, without calling the backbone; methods that change the backbone's output, generation,
a zero budget and a budget too small never use it; new weights or a new dtype invalidate it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.eval_cache import SKIP_BUDGET, SKIP_DISABLED, SKIP_GENERATION, SKIP_METHOD, EvalFeatureCache
from bench.settings import TrainerConfig
from bench.train import Runtime, TrainResult, predict
from methods import acts_on_backbone, method_names
from methods.model import AdaptedModel
from tests.test_eval_order import setup

CASES = [
    ("classification", "tiny_bert"),
    ("multiple_choice", "tiny_roberta"),
    ("token_classification", "tiny_bert"),
    ("token_classification", "tiny_llama"),
]


def run_pass(case, cache: EvalFeatureCache | None, dtype: torch.dtype = torch.float32):
    """One evaluation pass (batch 5, sorted) with or without the cache: predictions, loss, metrics."""
    task, model, encoded, splits, tokenizer = case
    runtime = Runtime(TrainerConfig(eval_batch_size=5), torch.device("cpu"), dtype)
    predictions, loss = predict(model, task, encoded, splits, runtime, tokenizer, TrainResult(), feature_cache=cache)
    return predictions, loss, task.compute_metrics(predictions, "validation")


@torch.no_grad()
def move_head(model: AdaptedModel) -> None:
    """What a training step does to head-only: new head weights, the backbone untouched."""
    linear = model.head[-1]
    generator = torch.Generator().manual_seed(7)
    linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator))
    linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator))


def count_backbone_calls(model: AdaptedModel) -> list[int]:
    calls = [0]
    model.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("kind,model_name", CASES, ids=[f"{k}-{m}" for k, m in CASES])
def test_cached_pass_equals_full_pass_after_the_head_moved(kind, model_name, one_thread) -> None:
    case = setup(kind, model_name, "head_only")
    model = case[1]
    assert model.fixed_features
    cache = EvalFeatureCache(budget_mb=64)
    first = run_pass(case, cache)
    assert first == run_pass(case, None)  # the filling pass is an ordinary pass
    move_head(model)
    calls = count_backbone_calls(model)
    cached = run_pass(case, cache)
    assert calls[0] == 0, "a cache hit must not run the backbone"
    full = run_pass(case, None)
    assert calls[0] > 0
    assert cached[0] != first[0] or cached[1] != first[1], "the moved head must change the output"
    assert cached[0] == full[0] and cached[2] == full[2]
    assert cached[1] == pytest.approx(full[1], rel=1e-6)
    summary = cache.summary()
    assert (summary["hits"], summary["misses"], summary["skipped"]) == (1, 1, {})
    assert 0 < summary["stored_bytes"] <= 64 * 2**20


@pytest.mark.parametrize("method", method_names())
def test_only_methods_that_leave_the_backbone_alone_use_the_cache(method, one_thread) -> None:
    case = setup("classification", "tiny_bert", method)  # soft prompts: 3 virtual tokens
    cache = EvalFeatureCache(budget_mb=64)
    run_pass(case, cache)
    run_pass(case, cache)
    if acts_on_backbone(method):  # prompt tuning, prefixes, LoRA, full fine-tuning
        assert not case[1].fixed_features
        assert (cache.hits, cache.misses, cache.skipped) == (0, 0, {SKIP_METHOD: 2})
    else:
        assert (cache.hits, cache.misses, cache.skipped) == (1, 1, {})


def test_zero_or_small_budget_and_generation_never_cache(one_thread) -> None:
    case = setup("token_classification", "tiny_bert", "head_only")
    for budget, reason in ((0, SKIP_DISABLED), (0.001, SKIP_BUDGET)):
        cache = EvalFeatureCache(budget_mb=budget)
        assert run_pass(case, cache) == run_pass(case, cache)
        assert (cache.hits, cache.misses, cache.skipped, cache.stored_bytes) == (0, 0, {reason: 2}, 0)
    generation = setup("generation", "tiny_gpt2", "p_tuning_v2")
    cache = EvalFeatureCache(budget_mb=64)
    run_pass(generation, cache)
    assert cache.skipped == {SKIP_GENERATION: 1} and cache.stored_bytes == 0


def test_new_backbone_weights_or_dtype_invalidate_the_stored_features(one_thread) -> None:
    case = setup("classification", "tiny_bert", "head_only")
    model = case[1]
    cache = EvalFeatureCache(budget_mb=64)
    run_pass(case, cache)
    with torch.no_grad():
        model.backbone.get_input_embeddings().weight.mul_(1.5)  # e.g. another checkpoint loaded in place
    after = run_pass(case, cache)
    assert (cache.hits, cache.misses) == (0, 2)
    assert after == run_pass(case, None)
    run_pass(case, cache, dtype=torch.bfloat16)
    assert (cache.hits, cache.misses) == (0, 3)
    run_pass(case, cache, dtype=torch.bfloat16)
    assert (cache.hits, cache.misses) == (1, 3)


def test_record_counts_the_cache(tmp_path: Path, one_thread) -> None:
    from omegaconf import OmegaConf

    from bench.runner import execute
    from tests.conftest import compose

    overrides = ["method=head_only", "model=tiny_bert", "task=synth_ner", "trainer=smoke"]  # 2 validation passes
    config = OmegaConf.to_container(compose(overrides, hydra_node=False), resolve=True)
    cache = execute(config, tmp_path / "on")["throughput"]["eval_feature_cache"]
    assert (cache["hits"], cache["misses"], cache["skipped"]) == (1, 1, {}) and cache["stored_bytes"] > 0
    config["trainer"]["eval_feature_cache_mb"] = 0
    cache = execute(config, tmp_path / "off")["throughput"]["eval_feature_cache"]
    assert (cache["hits"], cache["misses"], cache["skipped"]) == (0, 0, {SKIP_DISABLED: 2})
