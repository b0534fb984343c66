"""The timing sections: classification step, LM step, generation, model load, data pipeline.

Each returns a plain dict (shapes, per-contender statistics, ratios) that goes into the record.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.models import load_model, model_config
from bench.speed.config import SpeedConfig, frozen_method, full_method, soft_methods, step_methods
from bench.speed.contenders import (
    build_ours,
    build_peft_classifier,
    build_peft_lm,
    generate_kwargs,
    generation_call,
    peft_methods,
    prefix_computations,
    synthetic_batch,
    train_step,
)
from bench.speed.memory import measure_memory, memory_ratios
from bench.speed.timing import (
    Contender,
    add_tokens_per_s,
    guarded,
    overhead_key,
    overhead_ratio,
    paired_ratio,
    round_robin,
    timed,
    timing_results,
)


def cls_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Classification training step on the same batch: every registered method and PEFT's equivalents."""
    model_cfg = model_config(cfg.cls_model)
    vocab = load_model(model_cfg, "classification").backbone.config.vocab_size
    batch = synthetic_batch(vocab, cfg.batch, cfg.length, device)

    def ours(method: str) -> Callable[[], float]:
        model = build_ours(load_model(model_cfg, "classification"), method, "classification", cfg, device)
        return train_step(model, batch, device, dtype)

    def peft(method: str) -> Callable[[], float]:
        return train_step(build_peft_classifier(cfg.cls_model, method, cfg, device), batch, device, dtype)

    contenders = [guarded(m, lambda m=m: ours(m)) for m in step_methods()]
    contenders += [guarded(f"peft_{m}", lambda m=m: peft(m)) for m in peft_methods()]
    shapes = {"model": cfg.cls_model, "batch": cfg.batch, "length": cfg.length, "virtual": cfg.virtual}
    return step_section(contenders, cfg, device, shapes, cls_ratios, cls_pairs())


def step_section(
    contenders: list[Contender],
    cfg: SpeedConfig,
    device: torch.device,
    shapes: dict[str, Any],
    ratios: Callable[[dict, dict[str, str]], dict[str, dict[str, Any]]],
    pairs: list[tuple[str, str]],
) -> dict[str, Any]:
    """Time training-step contenders round-robin, then measure each one's step memory: per contender the
    median step, tokens/s (``shapes``' batch x length real tokens) and peak memory; ``ratios(times, errors)``
    of the step times and the peak-memory ratios of ``pairs``."""
    times = round_robin(contenders, cfg.warmup, cfg.steps, cfg.repeats, device)
    measure_memory(contenders, device)
    results, errors = timing_results(contenders, times)
    add_tokens_per_s(results, shapes["batch"] * shapes["length"])
    body = {"shapes": shapes, "methods": results, "ratios": ratios(times, errors)}
    body["memory_ratios"] = memory_ratios(results, pairs)
    return body


def cls_pairs() -> list[tuple[str, str]]:
    """(a, b) pairs of the cls section's ``a/b`` ratios: each soft method against PEFT and the references,
    every other baseline (head-only, LoRA) and PEFT against full fine-tuning."""
    full, frozen = full_method(), frozen_method()
    pairs = [(m, f"peft_{m}") for m in peft_methods()]
    pairs += [(m, reference) for m in soft_methods() for reference in (full, frozen)]
    pairs += [(m, full) for m in step_methods() if m not in soft_methods() and m != full]
    return pairs + [(f"peft_{m}", full) for m in peft_methods()]


def cls_ratios(times: dict, errors: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each pair of :func:`cls_pairs`; each method declaring an ``overhead_bound`` against the methods it names."""
    from methods import METHODS

    ratios = {f"{a}/{b}": paired_ratio(times, errors, (a, b)) for a, b in cls_pairs()}
    for method, cls in METHODS.items():
        if cls.overhead_bound:
            ratios[overhead_key(method, cls.overhead_bound)] = overhead_ratio(times, errors, method, cls.overhead_bound)
    return ratios


def lm_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """LM-loss training step on the decoder: ``--lm-methods`` (each on its own load: full fine-tuning,
    head-only and LoRA change the backbone they get) vs PEFT, and vs full fine-tuning when it is one of them."""
    model_cfg = model_config(cfg.lm_model)
    vocab = load_model(model_cfg, "generation").backbone.config.vocab_size
    batch = synthetic_batch(vocab, cfg.lm_batch, cfg.lm_length, device, lm=True)
    with_peft = [m for m in cfg.lm_methods if m in peft_methods()]

    def ours(method: str) -> Callable[[], float]:
        model = build_ours(load_model(model_cfg, "generation"), method, "generation", cfg, device)
        return train_step(model, batch, device, dtype)

    def peft(method: str) -> Callable[[], float]:
        return train_step(build_peft_lm(cfg.lm_model, method, cfg, device), batch, device, dtype)

    contenders = [guarded(m, lambda m=m: ours(m)) for m in cfg.lm_methods]
    contenders += [guarded(f"peft_{m}", lambda m=m: peft(m)) for m in with_peft]
    pairs = lm_pairs(cfg.lm_methods, with_peft)
    shapes = {"model": cfg.lm_model, "batch": cfg.lm_batch, "length": cfg.lm_length, "virtual": cfg.virtual}

    def ratios(times: dict, errors: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {f"{a}/{b}": paired_ratio(times, errors, (a, b)) for a, b in pairs}

    return step_section(contenders, cfg, device, shapes, ratios, pairs)


def lm_pairs(methods: tuple[str, ...], with_peft: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs of the LM section's ratios: ours against PEFT, and every contender against full
    fine-tuning when full fine-tuning is among ``methods``."""
    full = full_method()
    pairs = [(m, f"peft_{m}") for m in with_peft]
    if full in methods:
        pairs += [(name, full) for name in (*methods, *(f"peft_{m}" for m in with_peft)) if name != full]
    return pairs


def generation_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Greedy generation with the KV cache: our adapters vs the plain base model (and PEFT), same prompts."""
    base = load_model(model_config(cfg.lm_model), "generation")
    return timed_generation(cfg, base, cfg.lm_model, generation_contenders, device, dtype)


def timed_generation(
    cfg: SpeedConfig, base, model_name: str, build_contenders, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """Time ``build_contenders(cfg, base, batch, kwargs, device, dtype)`` (the base model first) on one
    synthetic prompt batch; tokens/s per contender and each one's paired ratio to the base model."""
    batch = synthetic_batch(base.backbone.config.vocab_size, cfg.gen_batch, cfg.prompt_length, device)
    kwargs = generate_kwargs(cfg, base.tokenizer)
    contenders = build_contenders(cfg, base, batch, kwargs, device, dtype)
    times = round_robin(contenders, 1, cfg.gen_steps, cfg.repeats, device)
    results, errors = timing_results(contenders, times)
    add_tokens_per_s(results, cfg.gen_batch * cfg.new_tokens)
    ratios = {f"{c.name}/base": paired_ratio(times, errors, (c.name, "base")) for c in contenders[1:]}
    shapes = {
        "model": model_name,
        "batch": cfg.gen_batch,
        "prompt_length": cfg.prompt_length,
        "new_tokens": cfg.new_tokens,
        "virtual": cfg.virtual,
    }
    return {"shapes": shapes, "methods": results, "ratios": ratios}


def generation_contenders(
    cfg: SpeedConfig, base, batch: dict, kwargs: dict, device: torch.device, dtype: torch.dtype
) -> list[Contender]:
    """The base model first, then our methods (on one shared frozen backbone), then PEFT's prefix methods."""
    from methods import METHODS

    shared = load_model(model_config(cfg.lm_model), "generation")
    plain = {"returns_prompt": True}
    contenders = [
        guarded("base", lambda: generation_call(base.backbone.to(device), batch, kwargs, device, dtype, False), plain)
    ]
    for method in cfg.generation_methods():
        info: dict[str, Any] = {}
        contenders.append(
            guarded(
                method, lambda m=method, i=info: ours_generation(shared, m, batch, kwargs, cfg, device, dtype, i), info
            )
        )
    for method in peft_methods():
        if not METHODS[method].attention_prefix:  # PEFT's input-token methods generate exactly as ours do
            continue
        build = lambda m=method: build_peft_lm(cfg.lm_model, m, cfg, device)  # noqa: E731
        contenders.append(
            guarded(
                f"peft_{method}", lambda b=build: generation_call(b(), batch, kwargs, device, dtype, False), dict(plain)
            )
        )
    return contenders


def ours_generation(
    loaded,
    method: str,
    batch: dict,
    kwargs: dict,
    cfg: SpeedConfig,
    device: torch.device,
    dtype: torch.dtype,
    info: dict[str, Any],
    overrides: dict[str, Any] | None = None,
) -> Callable[[], torch.Tensor]:
    """Our adapter's ``generate``; fails loudly if the prefix is computed more than once per call."""
    model = build_ours(loaded, method, "generation", cfg, device, overrides=overrides)
    run = generation_call(model, batch, kwargs, device, dtype, True)
    computed, new = prefix_computations(model, run)
    info.update(prefix_computations_per_generate=computed, new_tokens_per_sequence=new)
    if new != cfg.new_tokens:
        raise RuntimeError(f"{method}: generated {new} new tokens, expected {cfg.new_tokens}")
    if model.soft_prompt.attention_prefix and computed != 1:
        raise RuntimeError(f"{method}: prefix computed {computed} times in one generate call, expected once")
    return run


def load_section(cfg: SpeedConfig) -> dict[str, Any]:
    """Two loads of the decoder: the first may dequantise the GGUF, the second must hit the cache."""
    model_cfg = model_config(cfg.lm_model)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        load_model(model_cfg, "generation")
        seconds.append(round(time.perf_counter() - start, 3))
        gc.collect()
    return {"model": cfg.lm_model, "source": model_cfg.get("source"), "first_s": seconds[0], "second_s": seconds[1]}


def data_section(cfg: SpeedConfig) -> dict[str, Any]:
    """Tokenised-split cache cold vs warm, and padding waste of training batches with and without grouping."""
    import bench.cache
    from bench.data import batch_indices, encode_split
    from bench.tasks import load_task, task_config

    sizes = {"n_train": 64, "n_validation": 8, "n_test": 8} if cfg.quick else {}
    task = load_task(task_config("synth_cls", **sizes))
    tokenizer = load_model(model_config(cfg.cls_model), "classification").tokenizer
    length = int(task.config.get("max_length") or cfg.length)
    saved = bench.cache.TOKENIZED_DIR
    with tempfile.TemporaryDirectory() as folder:
        bench.cache.TOKENIZED_DIR = Path(folder)  # a private cache: the first call is truly cold
        try:
            seconds = [
                timed(lambda: bench.cache.cached_encode(task, tokenizer, "train", length, False), torch.device("cpu"))[
                    0
                ]
                for _ in range(2)
            ]
        finally:
            bench.cache.TOKENIZED_DIR = saved
    features = encode_split(task, tokenizer, "train", length, False).features
    waste = {
        ("grouped" if group else "ungrouped"): batches_padding_waste(
            features, batch_indices(features, cfg.batch, True, 0, group)
        )
        for group in (False, True)
    }
    return {
        "task": "synth_cls",
        "examples": len(features),
        "encode_cold_s": round(seconds[0], 4),
        "encode_warm_s": round(seconds[1], 4),
        "cache_disabled": bool(os.environ.get("SOFTPROMPT_NO_CACHE")),
        "padding_waste": waste,
    }


def batches_padding_waste(features: list[dict], batches) -> float:
    """Share of padding in index batches of single-sequence features, each padded to its longest."""
    from bench.data import padding_waste

    padded = real = 0
    for indices in batches:
        lengths = [len(features[i]["input_ids"]) for i in indices]
        padded, real = padded + max(lengths) * len(lengths), real + sum(lengths)
    return padding_waste(padded, real)
