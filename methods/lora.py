"""LoRA baseline (Hu et al., 2021) through the ``peft`` library: low-rank updates of attention projections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from methods.registry import MethodConfig, MethodConfigError, register

# peft's own default targets per model_type; our tiny/offline models reuse these names
_FALLBACK_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
}


def default_targets(model_type: str) -> list[str]:
    """LoRA target module names for a transformers ``model_type``."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as mapping
    except ImportError:  # peft moved it; our fallback covers the models we ship configs for
        mapping = {}
    targets = mapping.get(model_type) or _FALLBACK_TARGETS.get(model_type)
    if not targets:
        raise MethodConfigError(
            f"lora: no default target modules for model_type '{model_type}'; set method.target_modules"
        )
    return list(targets)


@register
@dataclass
class LoraConfig(MethodConfig):
    """Rank-``r`` updates B·A (scaled by alpha/r) of the attention projections; B starts at 0."""

    name = "lora"
    baseline = True
    peft_counterpart = "LORA"
    attention_weights = True
    description = "rank-r updates of the attention projections (peft)"
    lr: float = (
        3e-3  # small backbones need more than the LoRA paper's 5e-4 (MiniLM: 5e-4 stays at chance for 160 steps)
    )
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = field(default=None)

    def validate(self) -> None:
        super().validate()
        if self.r < 1:
            raise MethodConfigError(f"method.r must be >= 1, got {self.r}")

    def prepare_backbone(self, backbone: Any) -> None:
        from peft import LoraConfig as PeftLoraConfig, inject_adapter_in_model
        from transformers.pytorch_utils import Conv1D

        targets = list(self.target_modules or default_targets(backbone.config.model_type))
        # GPT-2's Conv1D stores weights transposed; say so rather than let peft warn and correct it
        transposed = any(
            isinstance(module, Conv1D)
            for name, module in backbone.named_modules()
            if name.rsplit(".", 1)[-1] in targets
        )
        config = PeftLoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            fan_in_fan_out=transposed,
        )
        inject_adapter_in_model(config, backbone)
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_("lora_" in name)

    def adapter_state(self, backbone: Any) -> dict[str, Any]:
        return {name: tensor.detach() for name, tensor in backbone.state_dict().items() if "lora_" in name}
