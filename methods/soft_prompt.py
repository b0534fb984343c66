"""The soft-prompt module itself (torch): the virtual-token table and the prefix generator.

Prompt tuning, prefix tuning and P-Tuning v2 differ only in which parts of :class:`SoftPrompt` they
switch on. Their configs (:mod:`methods.virtual`) import no torch, so the method registry loads without
it (a report needs the registry, never torch); ``build()`` imports this module when a run builds one.
"""

from __future__ import annotations

import torch
from torch import nn

from methods.registry import MethodConfigError
from methods.virtual import INIT_CHOICES, BackboneSpec


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
