"""Method order, colours and model markers shared by every table and figure.

One dict maps each method to one colour so a method looks the same in every figure.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable

# The soft-prompt families first (in the order of the usual claim), then the baselines.
METHOD_ORDER: tuple[str, ...] = (
    "prompt_tuning", "prefix_tuning", "p_tuning_v2", "lora", "head_only", "full_finetune",
)

METHOD_COLORS: dict[str, str] = {
    "prompt_tuning": "#1f77b4",  # blue
    "prefix_tuning": "#ff7f0e",  # orange
    "p_tuning_v2": "#2ca02c",  # green
    "lora": "#9467bd",  # purple
    "head_only": "#7f7f7f",  # grey: the floor
    "full_finetune": "#d62728",  # red: the ceiling
}

# Colours for methods added later; picked by a stable hash so a new method keeps its colour.
_FALLBACK_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a")
_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_color(method: str) -> str:
    """The colour of ``method`` in every figure."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK_COLORS[zlib.crc32(method.encode()) % len(_FALLBACK_COLORS)]


def order_methods(methods: Iterable[str]) -> list[str]:
    """Known methods in :data:`METHOD_ORDER`, unknown ones after them alphabetically."""
    unique = set(methods)
    known = [m for m in METHOD_ORDER if m in unique]
    return known + sorted(unique - set(METHOD_ORDER))


def model_markers(models: Iterable[str]) -> dict[str, str]:
    """A marker per model, assigned in sorted order so it is stable within one report."""
    return {m: _MODEL_MARKERS[i % len(_MODEL_MARKERS)] for i, m in enumerate(sorted(set(models)))}
