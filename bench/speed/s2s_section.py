"""The encoder-decoder sections: a text-to-text training step and greedy generation on one seq2seq model.

``s2s``: the trainer's step with an LM loss on decoder targets, for every soft method (prefixes in all
three attention kinds), prefix tuning at PEFT's placement (``<method>@decoder``), full fine-tuning
and PEFT's ``SEQ_2_SEQ_LM`` prompt and prefix tuning.  ``s2s_generation``: one greedy ``generate`` with
the KV cache per contender against the plain base model.  The model is ``--s2s-model`` (default the
tiny random T5: the only encoder-decoder that loads offline; on a machine with the Hub, ``t5_base``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.models import load_model, model_config
from bench.speed.config import SpeedConfig, full_method, s2s_contenders, s2s_peft_pairs
from bench.speed.contenders import (
    build_ours,
    build_peft_lm,
    generation_call,
    seq2seq_batch,
    train_step,
)
from bench.speed.sections import ours_generation, step_section, timed_generation
from bench.speed.timing import Contender, guarded, paired_ratio

SEQ2SEQ_PEFT_TASK = "SEQ_2_SEQ_LM"


def _loaded(cfg: SpeedConfig):
    """A fresh load of the seq2seq model (full fine-tuning and LoRA change the backbone they get)."""
    return load_model(model_config(cfg.s2s_model), "generation")


def s2s_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Text-to-text training step on the same batch: ours, full fine-tuning, PEFT where it has the pair."""
    vocab = _loaded(cfg).backbone.config.vocab_size
    batch = seq2seq_batch(vocab, cfg.batch, cfg.length, cfg.s2s_target_length, device)

    def ours(method: str, overrides: dict[str, Any]) -> Callable[[], float]:
        model = build_ours(_loaded(cfg), method, "generation", cfg, device, overrides=overrides)
        return train_step(model, batch, device, dtype)

    def peft(method: str) -> Callable[[], float]:
        return train_step(build_peft_lm(cfg.s2s_model, method, cfg, device, SEQ2SEQ_PEFT_TASK), batch, device, dtype)

    soft, full = s2s_contenders(), full_method()
    contenders = [guarded(name, lambda m=m, o=o: ours(m, o)) for name, (m, o) in {**soft, full: (full, {})}.items()]
    contenders += [guarded(f"peft_{m}", lambda m=m: peft(m)) for m in sorted(set(s2s_peft_pairs().values()))]
    pairs = [(ours_name, f"peft_{m}") for ours_name, m in s2s_peft_pairs().items()]
    pairs += [(name, full) for name in soft]
    shapes = {
        "model": cfg.s2s_model,
        "batch": cfg.batch,
        "length": cfg.length,
        "target_length": cfg.s2s_target_length,
        "virtual": cfg.virtual,
    }

    def ratios(times: dict, errors: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {f"{a}/{b}": paired_ratio(times, errors, (a, b)) for a, b in pairs}

    return step_section(contenders, cfg, device, shapes, ratios, pairs)


def s2s_generation_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Greedy generation with the KV cache on the seq2seq model: ours and PEFT's vs the plain base model."""
    return timed_generation(cfg, _loaded(cfg), cfg.s2s_model, s2s_generation_contenders, device, dtype)


def s2s_generation_contenders(
    cfg: SpeedConfig, base, batch: dict, kwargs: dict, device: torch.device, dtype: torch.dtype
) -> list[Contender]:
    """The base model first, then ours (one shared frozen backbone), then PEFT's seq2seq prompt and prefix."""
    shared = _loaded(cfg)
    contenders = [
        guarded("base", lambda: generation_call(base.backbone.to(device), batch, kwargs, device, dtype, False))
    ]
    for name, (method, overrides) in s2s_contenders().items():
        info: dict[str, Any] = {}
        contenders.append(
            guarded(
                name,
                lambda m=method, o=overrides, i=info: ours_generation(
                    shared, m, batch, kwargs, cfg, device, dtype, i, o
                ),
                info,
            )
        )
    for method in sorted(set(s2s_peft_pairs().values())):
        build = lambda m=method: build_peft_lm(cfg.s2s_model, m, cfg, device, SEQ2SEQ_PEFT_TASK)  # noqa: E731
        contenders.append(
            guarded(f"peft_{method}", lambda b=build: generation_call(b(), batch, kwargs, device, dtype, False))
        )
    return contenders
