"""Shared building blocks of the soft-prompt family: the virtual-token table and the prefix MLP.

Prompt tuning, prefix tuning and P-Tuning v2 differ only in which of these they switch on,
so all three are one module, :class:`SoftPrompt`, configured by their method files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from methods.registry import MethodConfig, MethodConfigError

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


def initial_embeddings(
    spec: BackboneSpec, n: int, init: str, init_text: str | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """N × hidden starting values: random at the vocabulary's scale, sampled vocabulary rows, or a text."""
    if init not in INIT_CHOICES:
        raise MethodConfigError(f"method.init={init!r}; choices: {list(INIT_CHOICES)}")
    if init == "random":
        return torch.randn(n, spec.hidden_size, generator=generator) * spec.embedding_std
    if init == "unit_normal":
        return torch.randn(n, spec.hidden_size, generator=generator)
    if init == "uniform":  # prompt_tuning/configs/models/t5_1_1_prompt.gin: linen.initializers.uniform(scale=0.5)
        return torch.rand(n, spec.hidden_size, generator=generator) * 0.5
    if spec.embed is None:
        raise MethodConfigError(f"method.init={init!r} needs the backbone's embeddings")
    if init == "vocab":
        pool = spec.vocab_ids() if spec.vocab_ids is not None else None
        pool = pool if pool is not None else torch.arange(min(5000, spec.vocab_size))
        ids = pool[torch.randint(len(pool), (n,), generator=generator)]
    else:
        text_ids = spec.tokenize(init_text) if init_text and spec.tokenize is not None else []
        if not text_ids:
            raise MethodConfigError("method.init='text' needs a method.init_text that tokenizes to >= 1 token")
        ids = torch.tensor((text_ids * (n // len(text_ids) + 1))[:n])  # repeated cyclically up to N
    with torch.no_grad():
        return spec.embed(ids).detach().float().clone()


def _prefix_mlp(spec: BackboneSpec, hidden: int, layers: int) -> nn.Sequential:
    """Linear(d, h) → Tanh → Linear(h, 2·layers·kv_heads·head_dim)."""
    width = 2 * layers * spec.num_kv_heads * spec.head_dim
    return nn.Sequential(nn.Linear(spec.hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, width))


class _KindGenerator(nn.Module):
    """One attention kind's own prefix generator: Embedding(N, d) → MLP (Li & Liang's per-kind form)."""

    def __init__(self, spec: BackboneSpec, start: torch.Tensor, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(*start.shape)
        self.embedding.weight.data.copy_(start)
        self.mlp = _prefix_mlp(spec, hidden, layers)

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding.weight)


class SoftPrompt(nn.Module):
    """Virtual tokens for the input and/or K/V prefixes for every attention layer.

    ``input_tokens``: the table E (N × hidden) is prepended to the input embeddings.
    ``attention_prefix``: per-layer keys/values, generated from E by
    Embedding → Linear → Tanh → Linear (``projection=True``) or read from a flat
    N × (2·layers·kv_heads·head_dim) table (``projection=False``). ``per_kind`` (with ``projection``, on a
    model with more than one attention kind, no input tokens): one Embedding → MLP per attention kind,
    each generating its own layers' rows of the same table.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_virtual_tokens: int,
        input_tokens: bool,
        attention_prefix: bool,
        projection: bool = True,
        hidden: int = 512,
        dropout: float = 0.1,
        init: str = "random",
        init_text: str | None = None,
        seed: int | None = None,
        per_kind: bool = False,
    ) -> None:
        super().__init__()
        self.spec, self.n = spec, num_virtual_tokens
        self.input_tokens, self.attention_prefix, self.projection = input_tokens, attention_prefix, projection
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        start = lambda: initial_embeddings(spec, num_virtual_tokens, init, init_text, generator)  # noqa: E731
        self.embedding: nn.Embedding | None = None
        self.mlp: nn.Sequential | None = None
        self.flat: nn.Parameter | None = None
        # per kind only where there is more than one kind: with one, it is the shared generator (same names)
        split = per_kind and attention_prefix and projection and not input_tokens and len(spec.kind_layers()) > 1
        self.generators = nn.ModuleDict(
            {kind: _KindGenerator(spec, start(), hidden, len(rows)) for kind, rows in spec.kind_layers().items()}
            if split
            else {}
        )
        if not split and (input_tokens or (attention_prefix and projection)):
            self.embedding = nn.Embedding(num_virtual_tokens, spec.hidden_size)
            self.embedding.weight.data.copy_(start())
        if attention_prefix and projection and not split:
            self.mlp = _prefix_mlp(spec, hidden, spec.num_layers)
        elif attention_prefix and not projection:
            flat = torch.randn(num_virtual_tokens, spec.prefix_width, generator=generator) * spec.embedding_std
            self.flat = nn.Parameter(flat)
        self.prefix_dropout = nn.Dropout(dropout)
        # set by fold()/load of a stored adapter: the MLP's output, computed once
        self.register_buffer("folded", None, persistent=False)

    def prompt(self) -> torch.Tensor | None:
        """The N × hidden virtual input embeddings, or None when the method leaves the input alone."""
        return self.embedding.weight if self.input_tokens else None

    def prefix_table(self) -> torch.Tensor:
        """N × prefix_width: every layer's keys and values for every virtual token."""
        if self.folded is not None:
            return self.folded
        if self.generators:
            return self._per_kind_table()
        if self.mlp is not None:
            return self.mlp(self.embedding.weight)
        return self.flat

    def _per_kind_table(self) -> torch.Tensor:
        """Each kind's MLP output put back at its layers' rows: N × prefix_width, the shared layout."""
        rows: list[torch.Tensor | None] = [None] * self.spec.num_layers
        for kind, layers in self.spec.kind_layers().items():
            out = self.generators[kind]().view(self.n, len(layers), -1)
            for position, layer in enumerate(layers):
                rows[layer] = out[:, position]
        return torch.stack(rows, dim=1).reshape(self.n, self.spec.prefix_width)

    def prefixes(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per layer (key, value), each (1, kv_heads, N, head_dim); None without attention prefixes."""
        if not self.attention_prefix:
            return None
        spec = self.spec
        table = self.prefix_dropout(self.prefix_table())
        table = table.view(self.n, spec.num_layers, 2, spec.num_kv_heads, spec.head_dim)
        table = table.permute(1, 2, 3, 0, 4).unsqueeze(2)  # layers, 2, 1, kv, N, head_dim
        return [(layer[0], layer[1]) for layer in table]

    def stored_state(self) -> dict[str, torch.Tensor]:
        """What inference needs: the prompt table and the prefix table with the MLP folded in."""
        state: dict[str, torch.Tensor] = {}
        if self.input_tokens:
            state["prompt"] = self.embedding.weight.detach().clone()
        if self.attention_prefix:
            with torch.no_grad():
                state["prefix"] = self.prefix_table().detach().clone()
        return state

    def load_stored_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`stored_state` output; a folded prefix replaces the MLP for inference."""
        if "prompt" in state:
            self.embedding.weight.data.copy_(state["prompt"])
        if "prefix" in state and self.flat is not None:
            self.flat.data.copy_(state["prefix"])  # a flat table is its own stored form: it stays trainable
        elif "prefix" in state:
            self.folded = state["prefix"].to(next(self.parameters()).device)

    def stored_count(self) -> int:
        """Numbers kept per task for inference (the MLP is not: its output is folded)."""
        return self.n * (
            (self.spec.hidden_size if self.input_tokens else 0)
            + (self.spec.prefix_width if self.attention_prefix else 0)
        )


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
    # relative-position-bias models (T5): the bias of prefix keys, zero | past (methods.injection.POSITION_BIASES)
    prefix_position_bias: str = "zero"

    def validate(self) -> None:
        super().validate()
        from methods.injection import PLACEMENTS, POSITION_BIASES

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
