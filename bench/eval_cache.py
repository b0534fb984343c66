"""Backbone features of an evaluation split, kept between validation passes when they cannot change.

With a frozen backbone and nothing on its input or in its attention (head-only), every validation pass
computes the same backbone features for the same split: only the head moves. The first pass stores
what the head reads (:meth:`methods.model.AdaptedModel.head_features`), batch by batch, and later
passes run the head on it. A stored split is reused only when the split, its batches, the device,
the dtype and the backbone's weights are unchanged; it is kept only within a memory budget
(``trainer.eval_feature_cache_mb``, 0 disables it). Generation never caches: decoding depends on
what was generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

MIB = 2**20
# bytes per feature value in the budget check: float32, the widest a backbone's output gets here
# (bf16/fp16 runs may store less; what is stored is counted exactly)
FEATURE_ITEMSIZE = 4

# why a pass did not use the cache (the record counts passes per reason)
SKIP_DISABLED = "disabled"  # trainer.eval_feature_cache_mb=0
SKIP_METHOD = "method_changes_features"  # the method (or a trainable backbone) can change the features
SKIP_GENERATION = "generation"  # generation and text-to-text decode; nothing to reuse
SKIP_BUDGET = "over_budget"  # the split's features would exceed the budget


def backbone_version(model: Any) -> int:
    """Sum of the backbone weights' in-place write counters: any write to a weight changes it.

    ``Tensor._version`` is bumped by every in-place operation (``copy_``, ``load_state_dict``, an
    optimizer step), so stored features are dropped if anything rewrites the frozen weights.
    """
    return sum(parameter._version for parameter in model.backbone.parameters())


def feature_bytes(model: Any, features: Sequence[dict], batches: Sequence[Sequence[int]], itemsize: int) -> int:
    """Bytes the head's input would take for ``batches`` of ``features`` (before computing any of it):
    one vector per example (classification), per choice (multiple choice) or per padded position."""
    hidden = model.spec.hidden_size
    total = 0
    for indices in batches:
        rows = [features[i]["input_ids"] for i in indices]
        if model.kind == "multiple_choice":
            total += len(rows) * max(len(choices) for choices in rows) * hidden
        elif model.kind == "token_classification":
            total += len(rows) * max(len(ids) for ids in rows) * hidden
        else:
            total += len(rows) * hidden
    return total * itemsize


@dataclass
class _Entry:
    """One split's stored features and everything they depend on."""

    encoded: Any  # the split itself (an identity check: ids of freed objects are reused)
    batches: list[list[int]]
    device: torch.device
    dtype: torch.dtype
    version: int
    features: list[torch.Tensor]

    def matches(self, other: _Entry) -> bool:
        return (
            self.encoded is other.encoded
            and self.batches == other.batches
            and self.device == other.device
            and self.dtype == other.dtype
            and self.version == other.version
        )


@dataclass
class CachePass:
    """What one evaluation pass does with the cache: reuse stored features, or compute and store them."""

    reuse: list[torch.Tensor] | None = None  # one tensor per batch, to feed the head
    fill: list[torch.Tensor] | None = None  # this pass appends each batch's features here
    entry: _Entry | None = None


@dataclass
class EvalFeatureCache:
    """Stored head inputs of evaluation splits, within ``budget_mb`` (0 disables the cache).

    Counts passes: ``hits`` (served from stored features), ``misses`` (computed and stored) and
    ``skipped`` per reason; :meth:`summary` is the record's ``throughput.eval_feature_cache``.
    """

    budget_mb: float
    hits: int = 0
    misses: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    _entries: dict[int, _Entry] = field(default_factory=dict)

    @property
    def stored_bytes(self) -> int:
        """Bytes of every stored feature tensor."""
        return sum(t.nbytes for entry in self._entries.values() for t in entry.features)

    def begin(self, model: Any, kind: str, encoded: Any, batches: list[list[int]], dtype: torch.dtype) -> CachePass:
        """Decide for one pass over ``encoded`` cut into ``batches``: reuse, fill, or neither (counted)."""
        reason = self._refusal(model, kind)
        if reason:
            return self._skip(reason)
        wanted = _Entry(encoded, batches, model.device, dtype, backbone_version(model), [])
        stored = self._entries.pop(id(encoded), None)
        if stored is not None and stored.matches(wanted) and len(stored.features) == len(batches):
            self._entries[id(encoded)] = stored
            self.hits += 1
            return CachePass(reuse=stored.features)
        needed = self.stored_bytes + feature_bytes(model, encoded.features, batches, FEATURE_ITEMSIZE)
        if needed > self.budget_mb * MIB:
            return self._skip(SKIP_BUDGET)
        return CachePass(fill=[], entry=wanted)

    def finish(self, step: CachePass) -> None:
        """Store what a filling pass computed (only a pass that ran to its end)."""
        if step.entry is not None and step.fill is not None:
            step.entry.features = step.fill
            self._entries[id(step.entry.encoded)] = step.entry
            self.misses += 1

    def summary(self) -> dict[str, Any]:
        """The record's view: passes served, computed and stored, skipped (by reason); bytes kept."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "skipped": dict(self.skipped),
            "stored_bytes": self.stored_bytes,
            "budget_mb": self.budget_mb,
        }

    def _refusal(self, model: Any, kind: str) -> str | None:
        if self.budget_mb <= 0:
            return SKIP_DISABLED
        if kind == "generation" or getattr(model, "label_words", None) is not None:
            return SKIP_GENERATION
        if not getattr(model, "fixed_features", False):
            return SKIP_METHOD
        return None

    def _skip(self, reason: str) -> CachePass:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        return CachePass()
