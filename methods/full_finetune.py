"""Full fine-tuning baseline: every backbone weight trains (the 'quality ceiling')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from methods.registry import MethodConfig, register


@register
@dataclass
class FullFinetuneConfig(MethodConfig):
    """Every backbone weight trains; the checkpoint is the whole backbone plus the head."""

    name = "full_finetune"
    trains_backbone = True
    baseline = True
    reference = "ceiling"  # the quality every other method is measured against
    attention_weights = True
    description = "all backbone weights and the head train"
    lr: float = 5e-5

    def prepare_backbone(self, backbone: Any) -> None:
        for parameter in backbone.parameters():
            parameter.requires_grad_(True)

    def adapter_state(self, backbone: Any) -> dict[str, Any]:
        return {name: tensor.detach() for name, tensor in backbone.state_dict().items()}
