"""Whether a run can be trusted: convergence, collapse, loss explosion, prefix health.

Every rule and threshold is a constant here and documented in the README ("Diagnostics").
The record's ``diagnostics`` section is built by :func:`run_diagnostics`; the loss check
(:class:`LossWatch`) runs inside the training loop so an exploding run stops early and is
recorded as ``diverged``, like a NaN loss.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch

from bench.tasks.metrics import MAXIMIZE, metric_direction, orient

CONVERGENCE_TAIL = 0.25
"""The "last quarter": validation passes at steps > (1 − this) × the last step."""
CONVERGENCE_METRIC_MARGIN = 0.01
"""Converged only if the last quarter raised the best primary metric (in [0, 1]) by at most this …"""
CONVERGENCE_LOSS_MARGIN = 0.02
"""… and lowered the best validation loss (nats, where recorded) by at most this."""
METRIC_CEILING = 1.0
"""A run whose best score before the last quarter is already this is converged (cannot improve)."""

EXPLOSION_FACTOR = 10.0
"""Exploded: the mean loss of the last :data:`EXPLOSION_WINDOW` steps exceeds this × the reference …"""
EXPLOSION_ABSOLUTE = 1e4
"""… or any single step's loss exceeds this (nats)."""
EXPLOSION_REFERENCE_STEPS = 5
"""The reference is the median loss of the first this-many steps (of the steps before, early on)."""
EXPLOSION_WINDOW = 5
"""Steps averaged into the loss compared with the reference (one batch may spike)."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def convergence(history: Sequence[Mapping[str, Any]], metric: str) -> tuple[bool, str]:
    """(converged, reason) from the validation curve of ``metric`` (and ``eval_loss`` if recorded); a gain
    is a step in the metric's direction (bench.tasks.metrics.orient).

    Rule: split the validation passes at 75 % of the last step.  Converged when at least one pass
    lies before the split and the passes after it improve the best earlier ``metric`` by at most
    :data:`CONVERGENCE_METRIC_MARGIN` and the best earlier validation loss by at most
    :data:`CONVERGENCE_LOSS_MARGIN` — unless the best earlier score already is
    :data:`METRIC_CEILING`.  A run still climbing at its last step is therefore not converged.
    """
    passes = [
        h
        for h in history
        if str(h.get("split", "validation")) == "validation" and _finite(h.get(metric)) and _finite(h.get("step"))
    ]
    if len(passes) < 2:
        return False, f"{len(passes)} validation pass(es): too few to tell"
    last = max(h["step"] for h in passes)
    cut = (1 - CONVERGENCE_TAIL) * last
    early = [h for h in passes if h["step"] <= cut]
    tail = [h for h in passes if h["step"] > cut]
    if not early:
        return False, f"no validation pass before step {cut:g} (the last quarter)"
    higher = metric_direction(metric) == MAXIMIZE  # a lower-is-better metric converges by no longer falling
    best_early = max(orient(metric, h[metric]) for h in early)
    if higher and best_early >= METRIC_CEILING:
        return True, f"{metric} reached {best_early:.3f} before the last quarter"
    gain = max(orient(metric, h[metric]) for h in tail) - best_early
    if gain > CONVERGENCE_METRIC_MARGIN:
        moving = "rising: +" if higher else "falling: −"
        return False, f"{metric} still {moving}{gain:.3f} in the last quarter (> {CONVERGENCE_METRIC_MARGIN})"
    losses = [(h["step"], h["eval_loss"]) for h in passes if _finite(h.get("eval_loss"))]
    early_loss = [v for s, v in losses if s <= cut]
    tail_loss = [v for s, v in losses if s > cut]
    if early_loss and tail_loss and min(early_loss) - min(tail_loss) > CONVERGENCE_LOSS_MARGIN:
        drop = min(early_loss) - min(tail_loss)
        return False, f"validation loss still falling: −{drop:.3f} in the last quarter (> {CONVERGENCE_LOSS_MARGIN})"
    return True, f"{metric} +{max(gain, 0.0):.3f} in the last quarter (≤ {CONVERGENCE_METRIC_MARGIN})"


def _hashable(value: Any) -> Hashable:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def is_collapsed(kind: str, predictions: Sequence[Any]) -> bool:
    """True when every prediction is the same: one class / choice, one tag for every word, or one
    (possibly empty) generated text; any empty-only generation counts too.  Needs ≥ 2 predictions."""
    if kind == "generation":
        texts = [str(p).strip() for p in predictions]
        if texts and all(not t for t in texts):
            return True
        return len(texts) >= 2 and len(set(texts)) == 1
    if len(predictions) < 2:
        return False
    if kind == "token_classification":
        tags = {tag for sentence in predictions for tag in sentence}
        return len(tags) <= 1
    return len({_hashable(p) for p in predictions}) == 1


class LossWatch:
    """Watches the training loss step by step; :meth:`update` returns why it exploded, or None."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def update(self, loss: float) -> str | None:
        """Record one step's loss; a reason string when the loss has exploded (see the constants)."""
        self.losses.append(loss)
        step = len(self.losses)
        if not math.isfinite(loss):
            return f"training loss became {loss} at step {step}"
        if loss > EXPLOSION_ABSOLUTE:
            return f"training loss exploded: {loss:.3g} > {EXPLOSION_ABSOLUTE:g} at step {step}"
        if step < 2:
            return None
        reference = statistics.median(self.losses[: min(step - 1, EXPLOSION_REFERENCE_STEPS)])
        window = self.losses[-EXPLOSION_WINDOW:]
        smoothed = sum(window) / len(window)
        if reference > 0 and smoothed > EXPLOSION_FACTOR * reference:
            return (
                f"training loss exploded: mean of last {len(window)} steps {smoothed:.3g} > "
                f"{EXPLOSION_FACTOR:g} × first-steps loss {reference:.3g} at step {step}"
            )
        return None


class PrefixProbe:
    """Measures attention prefixes during the first forward pass it sees (one batch).

    Used as a context manager around an evaluation; methods/injection.py calls :meth:`observe`
    for every layer that has a prefix.  Results: the mean L2 norm of prefix keys over that of real
    keys (padding excluded), and the attention mass real queries put on the prefix.
    """

    def __init__(self, layers: int) -> None:
        self.layers = layers
        self.key_ratios: list[float] = []
        self.shares: list[float] = []

    def __enter__(self) -> PrefixProbe:
        from methods.injection import add_probe

        add_probe(self.observe)
        return self

    def __exit__(self, *exc: Any) -> None:
        from methods.injection import remove_probe

        remove_probe(self.observe)

    @torch.no_grad()
    def observe(
        self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, n_prefix: int
    ) -> None:
        """One layer: ``key`` holds the prefix in its first ``n_prefix`` positions; ``mask`` is the
        extended (B, 1, Q, K) mask (bool: True = attend; float: additive) or None."""
        if len(self.shares) >= self.layers:
            return  # one batch is enough: the probe is a diagnostic, not a second evaluation
        query, key = query.float(), key.float()
        groups = query.shape[1] // key.shape[1]  # grouped-query attention shares K across heads
        key = key.repeat_interleave(groups, dim=1) if groups > 1 else key
        allowed = _allowed(mask, query, key)
        real_keys = allowed[:, 0, :, n_prefix:].any(dim=1)  # (B, K_real): keys some query may see
        norms = key.norm(dim=-1)  # (B, H, K)
        prefix_norm = norms[..., :n_prefix].mean()
        real = norms[..., n_prefix:][real_keys.unsqueeze(1).expand(-1, norms.shape[1], -1)]
        if real.numel():
            self.key_ratios.append(float(prefix_norm / real.mean().clamp_min(1e-12)))
        scale = getattr(module, "scaling", None) or query.shape[-1] ** -0.5
        scores = (query @ key.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        share = probs[..., :n_prefix].sum(-1)  # (B, H, Q)
        queries = allowed.any(-1)  # (B, 1, Q): rows with something to attend to
        if queries.shape[-1] == real_keys.shape[-1]:  # self-attention: padded positions are no queries
            queries = queries & real_keys.unsqueeze(1)
        self.shares.append(float(share.masked_select(queries.expand_as(share)).mean()))

    def summary(self) -> dict[str, float | None]:
        """Means over the observed layers (None when nothing was observed)."""
        mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
        return {"prefix_key_norm_ratio": mean(self.key_ratios), "prefix_attention_share": mean(self.shares)}


def _allowed(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """A (B, 1, Q, K) boolean mask of the key positions each query may attend to."""
    batch, q_len, k_len = query.shape[0], query.shape[2], key.shape[2]
    if mask is None:
        return torch.ones(batch, 1, q_len, k_len, dtype=torch.bool, device=query.device)
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    return allowed[..., -k_len:].expand(batch, 1, q_len, k_len)


def stopped_convergence(stop: Mapping[str, Any], metric: str) -> tuple[bool, str]:
    """(converged, reason) of a run under convergence stopping: converged exactly when it stopped on its
    plateau; a run that reached its step cap had a gain within its last ``patience`` passes."""
    rule = f"no gain > {stop['margin']:g} in {metric} for {stop['patience']} validation passes"
    if stop["reason"] == "plateau":
        return True, f"plateau: {rule} (last gain at step {stop['last_gain_step']}, stopped at {stop['step']})"
    return False, (
        f"cap: reached the {stop['cap']}-step cap with a gain at step {stop['last_gain_step']} "
        f"(needs {rule}; raise the cap)"
    )


def run_diagnostics(
    history: Sequence[Mapping[str, Any]],
    metric: str | None,
    kind: str,
    last_predictions: Sequence[Any] | None,
    prefix: Mapping[str, float | None] | None = None,
    stop: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record's ``diagnostics`` section for a run that finished training.

    ``stop`` (bench.train.StopRule.describe) says why training ended; with convergence stopping on
    (a patience), it alone decides ``converged``; on a fixed budget the validation curve does."""
    if not metric:
        converged, reason = False, "no primary metric"
    elif stop and stop.get("patience") is not None:
        converged, reason = stopped_convergence(stop, metric)
    else:
        converged, reason = convergence(history, metric)
    result: dict[str, Any] = {
        "converged": converged,
        "converged_reason": reason,
        "stop_reason": (stop or {}).get("reason"),
        "stop_step": (stop or {}).get("step"),
        "collapsed": bool(last_predictions is not None and is_collapsed(kind, last_predictions)),
        "exploded": False,
    }
    if prefix is not None:
        result.update(prefix)
    return result


def diverged_diagnostics(reason: str) -> dict[str, Any]:
    """The ``diagnostics`` section of a run stopped by a NaN or exploding loss."""
    return {
        "converged": False,
        "converged_reason": "training diverged",
        "stop_reason": "diverged",
        "collapsed": False,
        "exploded": True,
        "exploded_reason": reason,
    }
