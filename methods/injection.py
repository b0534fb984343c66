"""Key/value prefixes injected at the attention function, not through ``past_key_values``.

Why not ``past_key_values`` (what PEFT does): encoders such as BERT refuse a cache in
transformers 5, and a cache shifts the positions of real tokens by N on BERT and GPT-2.
Instead we register an attention implementation that concatenates the per-layer prefix
to the keys/values that the model has already computed (after RoPE, after its own KV
cache) and extends the mask with N always-visible columns.  Positions, padding and the
model's own cache are untouched, so one code path serves encoders and decoders alike.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

IMPLEMENTATION = "softprompt_prefix"
_PREFIX_ATTR = "_softprompt_prefix"
# observers (module, query, key with prefix, extended mask, n_prefix) -> None; bench.diagnostics
# measures prefix-key norms and attention shares through them without a second attention path
_PROBES: list[Callable[..., None]] = []


def add_probe(probe: Callable[..., None]) -> None:
    """Call ``probe(module, query, key, mask, n_prefix)`` in every attention call that has a prefix."""
    _PROBES.append(probe)


def remove_probe(probe: Callable[..., None]) -> None:
    """Stop calling ``probe``."""
    if probe in _PROBES:
        _PROBES.remove(probe)


class UnsupportedArchitectureError(ValueError):
    """The backbone does not route attention through transformers' attention interface."""


def check_supported(model: nn.Module) -> None:
    """Refuse encoder-decoder backbones (T5, BART) in one line: they are out of scope for now."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} (model_type '{config.model_type}') is an encoder-decoder model; "
            "encoder-decoder backbones (T5) are not supported yet, use an encoder (BERT, RoBERTa) or a decoder "
            "(GPT-2, Llama)")


def _extend_mask(mask: torch.Tensor | None, query: torch.Tensor, key_len: int, n_prefix: int,
                 causal: bool, visible: bool) -> torch.Tensor:
    """Prepend ``n_prefix`` columns to a (B,1,Q,K) mask; build the real part when it is None."""
    batch, q_len, device = query.shape[0], query.shape[2], query.device
    if mask is None:
        if causal and q_len > 1:
            # queries are the last q_len of key_len positions (the model's own cache may hold the rest)
            rows = torch.arange(q_len, device=device)[:, None] + (key_len - q_len)
            real = torch.arange(key_len, device=device)[None, :] <= rows
        else:
            real = torch.ones(q_len, key_len, dtype=torch.bool, device=device)
        mask = real.expand(batch, 1, q_len, key_len)
    mask = mask[..., -key_len:] if mask.shape[-1] != key_len else mask
    if mask.dtype == torch.bool:
        cols = torch.full((*mask.shape[:-1], n_prefix), visible, dtype=torch.bool, device=device)
    else:  # additive float mask (eager attention): 0 = attend
        fill = 0.0 if visible else torch.finfo(mask.dtype).min
        cols = torch.full((*mask.shape[:-1], n_prefix), fill, dtype=mask.dtype, device=device)
    return torch.cat([cols, mask], dim=-1)


def prefix_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA attention with this module's prefix (if any) in front of its keys and values."""
    prefix = getattr(module, _PREFIX_ATTR, None)
    if prefix is not None:
        prefix_key, prefix_value, visible = prefix
        batch = key.shape[0]
        n_prefix = prefix_key.shape[2]
        attention_mask = _extend_mask(attention_mask, query, key.shape[2], n_prefix,
                                      getattr(module, "is_causal", False), visible)
        key = torch.cat([prefix_key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
        kwargs["is_causal"] = False  # the explicit mask carries causality now
        for probe in _PROBES:
            probe(module, query, key, attention_mask, n_prefix)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, prefix_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)


def _set_implementation(model: nn.Module, name: str) -> None:
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = name


def find_attention_modules(model: nn.Module, dummy_inputs: dict[str, torch.Tensor],
                           expected_layers: int) -> list[nn.Module]:
    """Route ``model`` through our attention function and return its attention modules in call order.

    A dry forward records which modules call the attention interface, so no per-architecture
    list of module names is needed.
    """
    _set_implementation(model, IMPLEMENTATION)
    seen: list[nn.Module] = []

    def recorder(module, query, key, value, attention_mask, **kwargs):
        if all(module is not m for m in seen):
            seen.append(module)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, recorder)
    try:
        with torch.no_grad():
            model(**dummy_inputs)
    finally:
        ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, prefix_attention_forward)
    if len(seen) != expected_layers:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: found {len(seen)} attention calls for {expected_layers} layers; "
            "attention prefixes need a model that uses transformers' AttentionInterface"
        )
    return seen


def set_prefixes(modules: list[nn.Module],
                 prefixes: list[tuple[torch.Tensor, torch.Tensor]] | None,
                 visible: bool = True) -> None:
    """Attach one (key, value) prefix of shape (1|B, kv_heads, N, head_dim) per attention module."""
    for index, module in enumerate(modules):
        value = None if prefixes is None else (*prefixes[index], visible)
        setattr(module, _PREFIX_ATTR, value)
