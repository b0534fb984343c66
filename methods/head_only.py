"""Head-only baseline: frozen backbone, only the task head trains.

A method that does not beat this adds nothing over a linear probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.registry import MethodConfig, register


@register
@dataclass
class HeadOnlyConfig(MethodConfig):
    """Frozen backbone; only the task head trains (nothing to train for generation)."""

    name = "head_only"
    baseline = True
    description = "frozen backbone, trainable task head only"
    lr: float = 1e-3
