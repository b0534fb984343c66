"""Head-only baseline: frozen backbone, only what reads it trains (a linear probe).

That is the task head (classification, multiple choice, tagging), or on the tasks the backbone's LM
head reads (generation; classification and multiple choice as text-to-text on T5/BART) the LM head,
the output projection hidden -> vocabulary. A method that does not beat this adds nothing over a
linear probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from methods.registry import MethodConfig, NothingToTrainError, register

if TYPE_CHECKING:  # annotations only: the registry loads without torch (a report never needs it)
    from torch import nn


def untie_lm_head(backbone: nn.Module) -> nn.Linear:
    """The backbone's LM head, given a weight of its own when it shares one (tied to the input embeddings).

    GPT-2, SmolLM2/Llama, T5 and BART tie the LM head to the input embeddings: training the shared
    tensor would change the tokens the model reads too, so head-only would no longer leave the backbone
    frozen. A copy keeps the embeddings bit-identical while the LM head trains, and the output equals the
    tied model's until the first step. The config is left alone: in older transformers T5 read
    ``tie_word_embeddings`` at every forward to scale the decoder output by d_model**-0.5.
    """
    from torch import nn  # here, not at the top: importing the registry must not load torch

    head = backbone.get_output_embeddings()
    if head is None:
        raise NothingToTrainError(f"method 'head_only': {type(backbone).__name__} has no LM head to train")
    storage = head.weight.untyped_storage().data_ptr()
    # named_parameters(remove_duplicate=False) lists a tied Parameter once per module holding it
    holders = sum(
        p.untyped_storage().data_ptr() == storage for _, p in backbone.named_parameters(remove_duplicate=False)
    )
    if holders > 1:
        head.weight = nn.Parameter(head.weight.detach().clone())
    return head


@register
@dataclass
class HeadOnlyConfig(MethodConfig):
    """Frozen backbone; only the task head trains, or the LM head where the task reads that."""

    name = "head_only"
    baseline = True
    reference = "floor"  # what the frozen backbone gives with nothing but a trained reader
    description = "frozen backbone, trainable task head (or LM head) only"
    lr: float = 1e-3

    def prepare_lm_head(self, backbone: Any) -> None:
        """Generation and text-to-text: the (untied) LM head is the probe; the rest stays frozen."""
        for parameter in untie_lm_head(backbone).parameters():
            parameter.requires_grad_(True)

    def adapter_state(self, backbone: Any) -> dict[str, Any]:
        """The LM head when it trains (every other backbone tensor is frozen), else nothing."""
        return {name: parameter.detach() for name, parameter in backbone.named_parameters() if parameter.requires_grad}
