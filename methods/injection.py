"""Key/value prefixes injected at the attention function, not through ``past_key_values``.

Why not ``past_key_values`` (what PEFT does): encoders such as BERT refuse a cache in
transformers 5, and a cache shifts the positions of real tokens by N on BERT and GPT-2.
Instead we register an attention implementation that concatenates the per-layer prefix
to the keys/values that the model has already computed (after RoPE, after its own KV
cache) and extends the mask with N always-visible columns.  Positions, padding and the
model's own cache are untouched, so one code path serves encoders and decoders alike.

Encoder-decoder models (T5, BART) route encoder self-attention, decoder self-attention and
decoder cross-attention through the same interface, so the same function serves all three
attention kinds; :func:`find_attention_sites` tells them apart by their shapes in a dry run.
T5's relative position bias arrives as a ``position_bias`` argument computed for the real keys
only; prefix keys are position-less by default: their bias columns are zero, and every real query-key
pair keeps its bias.  ``prefix_position_bias=past`` gives them instead the bias of N tokens before the
real ones, as T5 computes it when the prefix arrives as N cached past tokens (PEFT's route).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from methods.registry import MethodConfigError
from methods.virtual import PLACEMENTS, POSITION_BIASES  # declared with the method configs that check them

IMPLEMENTATION = "softprompt_prefix"
_PREFIX_ATTR = "_softprompt_prefix"
_BIAS_ATTR = "_softprompt_bias_table"  # the stack's relative-bias module, when prefix keys take the 'past' bias
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


def _extend_mask(
    mask: torch.Tensor | None, query: torch.Tensor, key_len: int, n_prefix: int, causal: bool, visible: bool
) -> torch.Tensor:
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


def prefix_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA attention with this module's prefix (if any) in front of its keys and values."""
    prefix = getattr(module, _PREFIX_ATTR, None)
    if prefix is not None:
        prefix_key, prefix_value, visible = prefix
        batch = key.shape[0]
        n_prefix = prefix_key.shape[2]
        attention_mask = _extend_mask(
            attention_mask, query, key.shape[2], n_prefix, getattr(module, "is_causal", False), visible
        )
        key = torch.cat([prefix_key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
        kwargs["is_causal"] = False  # the explicit mask carries causality now
        bias = kwargs.get("position_bias")
        if bias is not None:  # T5: bias columns for the prefix keys (zero, or the 'past' positions' bias)
            kwargs["position_bias"] = torch.cat(
                [_prefix_bias(module, bias, n_prefix, key.shape[2] - n_prefix), bias], -1
            )
        for probe in _PROBES:
            probe(module, query, key, attention_mask, n_prefix)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _prefix_bias(module: nn.Module, bias: torch.Tensor, n_prefix: int, key_len: int) -> torch.Tensor:
    """(…, Q, N) bias for the prefix keys: zeros, or with a bias table attached (``past``) T5's bias for keys
    at positions 0..N-1 seen from queries moved to N + their own position, as a cache of N tokens puts them."""
    table = getattr(module, _BIAS_ATTR, None)
    shape = (*bias.shape[:-1], n_prefix)
    if table is None:
        return bias.new_zeros(shape)
    q_len, device = bias.shape[-2], bias.device
    queries = torch.arange(q_len, device=device)[:, None] + (key_len - q_len) + n_prefix
    offsets = torch.arange(n_prefix, device=device)[None, :] - queries  # (Q, N), all negative
    buckets = table._relative_position_bucket(
        offsets,
        bidirectional=not table.is_decoder,
        num_buckets=table.relative_attention_num_buckets,
        max_distance=table.relative_attention_max_distance,
    )
    values = table.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, heads, Q, N)
    return values.to(bias.dtype).expand(shape)


def set_bias_tables(sites: list[AttentionSite], modules: list[nn.Module], mode: str) -> None:
    """``past``: attach to each prefixed self-attention module its stack's relative-bias module (T5 keeps the
    table in the first layer's attention); ``zero`` detaches them. Refused on a model with no such table."""
    if mode not in POSITION_BIASES:
        raise MethodConfigError(f"method.prefix_position_bias={mode!r}; choices: {list(POSITION_BIASES)}")
    tables = {}
    for site in sites:
        if getattr(site.module, "has_relative_attention_bias", False):
            tables.setdefault(site.role, site.module)
    if mode == "past" and not tables:
        raise MethodConfigError(
            "method.prefix_position_bias=past needs a relative position bias (T5); this model has none: use zero"
        )
    roles = {id(site.module): site.role for site in sites}
    for module in modules:
        table = tables.get(roles[id(module)]) if mode == "past" else None  # cross-attention has no bias
        # a plain attribute, not a registered submodule: the table belongs to its own layer (no cycle, no
        # second copy in the state dict)
        object.__setattr__(module, _BIAS_ATTR, table)


ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, prefix_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)


def _set_implementation(model: nn.Module, name: str) -> None:
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = name


@dataclass(frozen=True)
class AttentionSite:
    """One attention module and its kind: ``encoder`` / ``decoder`` self-attention or decoder ``cross``-attention."""

    module: nn.Module
    role: str


def _role(module: nn.Module, query: torch.Tensor, key: torch.Tensor, encoder_decoder: bool, encoder_len: int) -> str:
    """Dry-run shapes name the kind: the encoder's queries span the source, cross-attention's keys do."""
    if not encoder_decoder:  # one stack: causal layers (GPT-2, Llama) are a decoder, the rest an encoder
        return "decoder" if getattr(module, "is_causal", False) else "encoder"
    if query.shape[2] == encoder_len:
        return "encoder"
    return "cross" if key.shape[2] == encoder_len else "decoder"


def find_attention_sites(model: nn.Module, dummy_inputs: dict[str, torch.Tensor], expected: int) -> list[AttentionSite]:
    """Route ``model`` through our attention function and return its attention sites in call order.

    A dry forward records which modules call the attention interface, so no per-architecture
    list of module names is needed.  For encoder-decoder models ``dummy_inputs`` must give the
    encoder and the decoder different lengths, which is how each call's kind is recognised.
    """
    _set_implementation(model, IMPLEMENTATION)
    encoder_decoder = "decoder_input_ids" in dummy_inputs
    encoder_len = dummy_inputs["input_ids"].shape[1]
    seen: list[AttentionSite] = []

    def recorder(module, query, key, value, attention_mask, **kwargs):
        if all(module is not site.module for site in seen):
            seen.append(AttentionSite(module, _role(module, query, key, encoder_decoder, encoder_len)))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, recorder)
    try:  # the dry run must not move the caller's RNG (dropout draws from it in train mode)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(**dummy_inputs)
    finally:
        ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, prefix_attention_forward)
    if len(seen) != expected:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: found {len(seen)} attention calls for {expected} attention layers; "
            "attention prefixes need a model that uses transformers' AttentionInterface"
        )
    return seen


def select_sites(sites: list[AttentionSite], placement: str) -> list[nn.Module]:
    """The modules that receive a prefix under ``placement`` (see PLACEMENTS); never none."""
    if placement not in PLACEMENTS:
        raise MethodConfigError(f"method.prefix_placement={placement!r}; choices: {sorted(PLACEMENTS)}")
    chosen = [site.module for site in sites if site.role in PLACEMENTS[placement]]
    if not chosen:
        present = sorted({site.role for site in sites})
        raise MethodConfigError(
            f"method.prefix_placement={placement!r} selects no attention layer of this model "
            f"(it has {present} attention); use 'all'"
        )
    return chosen


def set_prefixes(
    modules: list[nn.Module], prefixes: list[tuple[torch.Tensor, torch.Tensor]] | None, visible: bool = True
) -> None:
    """Attach one (key, value) prefix of shape (1|B, kv_heads, N, head_dim) per attention module."""
    for index, module in enumerate(modules):
        value = None if prefixes is None else (*prefixes[index], visible)
        setattr(module, _PREFIX_ATTR, value)
