"""The soft-prompt family's configs: the fields, choices and checks prompt tuning, prefix tuning and
P-Tuning v2 share, and :class:`BackboneSpec`, what sizing their parameters needs to know.

All three build one module, :class:`methods.soft_prompt.SoftPrompt`, switching on different parts of it.
This module imports no torch (only ``build()`` imports :mod:`methods.soft_prompt`), so the registry, and
everything that only reads it (reports, the speed benchmark's method lists), loads without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from methods.registry import MethodConfig, MethodConfigError

if TYPE_CHECKING:  # annotations only: importing torch here would load it with the registry
    import torch

    from methods.soft_prompt import SoftPrompt

INIT_CHOICES = ("random", "vocab", "text", "unit_normal", "uniform")
"""``method.init``: ``random`` N(0, std of the vocabulary embeddings) (the default); ``vocab`` / ``text`` rows of
the embedding table; ``unit_normal`` N(0, 1), PyTorch's ``nn.Embedding`` default that PEFT, P-Tuning v2 and Li &
Liang's code start from; ``uniform`` U[0, 0.5), the prompt-tuning repository's default (Lester et al.;
JAX's ``uniform(scale)`` draws from [0, scale))."""
PREFIX_MLPS = ("per_kind", "shared")
"""``method.prefix_mlp`` of prefix tuning: ``per_kind`` gives every attention kind that receives a prefix
(encoder self-, decoder self-, decoder cross-attention) its own embedding and MLP, as Li & Liang's seq2seq
code does; ``shared`` generates all of them from one. A model with one attention kind (every encoder-only
or decoder-only model) has one generator either way, so the two are the same computation there."""
VIRTUAL_POSITIONS = ("shift", "keep")
"""``method.virtual_positions`` of the input-token methods on absolute-position models: ``shift`` (PEFT's
behaviour) numbers virtual and real tokens together, so real tokens move to positions N..N+L-1;
``keep`` leaves real tokens at 0..L-1 and gives virtual tokens no position embedding (as the
P-Tuning v2 repository's prompt baseline)."""
POSITION_BIASES = ("zero", "past")
"""``method.prefix_position_bias`` on relative-position-bias models (T5): ``zero`` (prefix keys get no bias) or
``past`` (the bias of the N positions before the real tokens: PEFT's ``past_key_values`` behaviour)."""
# where prefixes go: Li & Liang put them everywhere ("all"); PEFT (0.21) puts a seq2seq model's prefix in the
# decoder self-attention only ("decoder": it empties the cross-attention part of its prefix cache)
PLACEMENTS = {
    "all": ("encoder", "decoder", "cross"),
    "encoder": ("encoder",),
    "decoder": ("decoder",),
    "decoder_cross": ("decoder", "cross"),
}


@dataclass(frozen=True)
class BackboneSpec:
    """What a method needs to know about a backbone to size its parameters."""

    hidden_size: int
    num_layers: int  # attention layers that receive a prefix (encoder-decoder: self + cross, by placement)
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    embedding_std: float = 0.02
    # ids that 'vocab' initialisation samples from (ordinary, frequent tokens; None = the first 5,000);
    # a callable because finding them walks the whole vocabulary, which only 'vocab' needs
    vocab_ids: Callable[[], torch.Tensor | None] | None = None
    # token ids -> frozen input embeddings (N, hidden); used by vocab/text initialisation
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None
    # text -> token ids, used by text initialisation
    tokenize: Callable[[str], list[int]] | None = None
    # the attention kind (encoder / decoder / cross) of each prefixed layer, in prefix order; () = one kind
    layer_kinds: tuple[str, ...] = ()

    @property
    def prefix_width(self) -> int:
        """Numbers per virtual token in a K/V prefix: 2 · layers · kv_heads · head_dim."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim

    def kind_layers(self) -> dict[str, list[int]]:
        """Attention kind -> the indices of its prefixed layers, kinds in order of first appearance."""
        kinds = self.layer_kinds or ("any",) * self.num_layers
        out: dict[str, list[int]] = {}
        for index, kind in enumerate(kinds):
            out.setdefault(kind, []).append(index)
        return out


@dataclass
class SoftPromptConfig(MethodConfig):
    """Fields shared by the soft-prompt methods (not registered itself)."""

    num_virtual_tokens: int = 20
    init: str = "random"  # random | vocab | text
    init_text: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.num_virtual_tokens < 1:
            raise MethodConfigError(f"method.num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.init not in INIT_CHOICES:
            raise MethodConfigError(f"method.init={self.init!r}; choices: {list(INIT_CHOICES)}")
        if self.init == "text" and not self.init_text:
            raise MethodConfigError("method.init='text' needs method.init_text")
        positions = getattr(self, "virtual_positions", "shift")  # a field of the input-token methods only
        if positions not in VIRTUAL_POSITIONS:
            raise MethodConfigError(f"method.virtual_positions={positions!r}; choices: {list(VIRTUAL_POSITIONS)}")

    def build(self, spec: BackboneSpec, seed: int | None = None) -> SoftPrompt:
        from methods.soft_prompt import SoftPrompt  # torch: loaded when a run builds one, not with the registry

        return SoftPrompt(
            spec,
            self.num_virtual_tokens,
            self.input_tokens,
            self.attention_prefix,
            projection=getattr(self, "prefix_projection", False),
            hidden=getattr(self, "prefix_hidden_size", 0),
            dropout=getattr(self, "prefix_dropout", 0.0),
            init=self.init,
            init_text=self.init_text,
            seed=seed,
            per_kind=getattr(self, "prefix_mlp", "shared") == "per_kind",  # a field of prefix tuning only
        )


@dataclass
class PrefixConfig(SoftPromptConfig):
    """Adds the prefix generator's fields (prefix tuning, P-Tuning v2)."""

    prefix_projection: bool = True  # False: a flat N x (2*layers*kv_heads*head_dim) table
    prefix_hidden_size: int = 512
    prefix_dropout: float = 0.1
    # encoder-decoder models: all = encoder self-, decoder self- and cross-attention (Li & Liang);
    # decoder = decoder self-attention (PEFT's placement); decoder_cross = decoder self- and cross-attention;
    # encoder = encoder self-attention
    prefix_placement: str = "all"
    # relative-position-bias models (T5): the bias of prefix keys, zero | past (POSITION_BIASES)
    prefix_position_bias: str = "zero"

    def validate(self) -> None:
        super().validate()
        if self.prefix_placement not in PLACEMENTS:
            raise MethodConfigError(f"method.prefix_placement={self.prefix_placement!r}; choices: {list(PLACEMENTS)}")
        if self.prefix_position_bias not in POSITION_BIASES:
            raise MethodConfigError(
                f"method.prefix_position_bias={self.prefix_position_bias!r}; choices: {list(POSITION_BIASES)}"
            )
        if self.prefix_projection and self.prefix_hidden_size < 1:
            raise MethodConfigError(f"method.prefix_hidden_size must be >= 1, got {self.prefix_hidden_size}")
        if not 0 <= self.prefix_dropout < 1:
            raise MethodConfigError(f"method.prefix_dropout must be in [0, 1), got {self.prefix_dropout}")
        if self.init != "random" and not (self.input_tokens or self.prefix_projection):
            # init sets the embedding E; a flat prefix has no E, so the choice would be silently ignored
            raise MethodConfigError(
                f"method.init={self.init!r} initialises the embedding E, which "
                f"'{self.name}' with prefix_projection=false does not have; use init=random"
            )

    def declared(self) -> dict[str, bool]:
        """A flat prefix (``prefix_projection=False``) is trained directly: not reparameterized."""
        return {**super().declared(), "reparameterized": self.prefix_projection}
