"""P-Tuning v2 as our users define it: prompt tuning and prefix tuning from one embedding.

The N virtual tokens E are inserted into the input AND, from the same E, the MLP generates
K/V prefixes for every attention layer.  With ``prefix_projection=False`` the prefixes come
from their own flat table while E still feeds the input.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.registry import register
from methods.virtual import PrefixConfig


@register
@dataclass
class PTuningV2Config(PrefixConfig):
    """Prompt tuning and prefix tuning from the same N embeddings."""

    name = "p_tuning_v2"
    input_tokens = True
    attention_prefix = True
    reparameterized = True
    # deep prompts: input tokens and per-layer prefixes together, so its step should cost no more than both
    overhead_bound = ("prompt_tuning", "prefix_tuning")
    description = "virtual input tokens + K/V prefixes generated from the same embeddings"
    lr: float = 2e-3  # with the MLP; 1e-2 collapsed MiniLM to a constant prediction on synth_cls
    virtual_positions: str = "shift"  # shift | keep (methods.virtual.VIRTUAL_POSITIONS)
