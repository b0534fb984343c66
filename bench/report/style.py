"""Method order, colours and model markers shared by every table and figure.

Both come from the method registry (``methods.METHODS``): its order is the display order, and a
method's colour is the palette entry at its registry position, so a method looks the same in every
figure and a new method gets the next colour without an edit here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

# By registry position.  The first six reproduce the colours the built-ins always had (prompt blue,
# prefix orange, P-Tuning v2 green, LoRA purple, head-only grey, full fine-tuning red); the rest
# serve methods registered after them.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#7f7f7f",
    "#d62728",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
)
# Methods named in records but not registered in this process (e.g. a plugin not loaded): picked by
# a stable hash of the name, from colours the palette does not start with.
_UNREGISTERED_COLORS = PALETTE[6:]
_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_order() -> tuple[str, ...]:
    """Registered methods in registry order: the order of every table's rows and every legend."""
    import methods

    return tuple(methods.method_names())


def method_color(method: str) -> str:
    """The colour of ``method`` in every figure."""
    order = method_order()
    if method in order:
        return PALETTE[order.index(method) % len(PALETTE)]
    return _UNREGISTERED_COLORS[zlib.crc32(method.encode()) % len(_UNREGISTERED_COLORS)]


def order_methods(methods: Iterable[str]) -> list[str]:
    """Registered methods in registry order, unregistered ones after them alphabetically."""
    unique = set(methods)
    known = [m for m in method_order() if m in unique]
    return known + sorted(unique - set(known))


def model_markers(models: Iterable[str]) -> dict[str, str]:
    """A marker per model, assigned in sorted order so it is stable within one report."""
    return {m: _MODEL_MARKERS[i % len(_MODEL_MARKERS)] for i, m in enumerate(sorted(set(models)))}
