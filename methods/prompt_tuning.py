"""Prompt Tuning (Lester et al., 2021).

Trainable virtual-token embeddings E ∈ R^{N×d_model} prepended to the input embeddings.
Backbone frozen; touches the input only.  Parameters: N·d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.registry import register
from methods.virtual import SoftPromptConfig


@register
@dataclass
class PromptTuningConfig(SoftPromptConfig):
    """N trainable input embeddings (N·d parameters), nothing else."""

    name = "prompt_tuning"
    input_tokens = True
    peft_counterpart = "PROMPT_TUNING"
    description = "N virtual token embeddings prepended to the input"
    lr: float = 3e-2  # soft prompts need learning rates far above fine-tuning's (Lester et al. use 0.3 with Adafactor)
    virtual_positions: str = "shift"  # shift | keep (methods.virtual.VIRTUAL_POSITIONS)
