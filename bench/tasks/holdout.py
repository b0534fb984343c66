"""``task.holdout: {fraction, seed}``: validate on a held-out part of the training file.

For data that ships one labeled file where two are needed (the E2E dev set, used by the
``cpu_generation`` preset), a seeded ``fraction`` of the train split's examples becomes the
validation split and the rest stays for training. Generation tasks are grouped by input before
this point (one example per meaning representation with all its references), so the split is by
input: no input is in both parts.
"""

from __future__ import annotations

import random
from typing import Any


def apply_holdout(cfg: dict[str, Any], splits: dict[str, list[dict] | None], error: type[Exception]) -> int:
    """Move the held-out examples from ``splits['train']`` to ``splits['validation']`` in place.

    Returns how many were held out (0 when ``cfg['holdout']`` is unset). Raises ``error`` (one
    line naming the field) for a fraction outside (0, 1), a missing train split, or a validation
    split that already exists (it would be silently replaced).
    """
    spec = cfg.get("holdout")
    if not spec:
        return 0
    name = cfg.get("name", "?")
    try:
        fraction, seed = float(spec.get("fraction")), int(spec.get("seed", 0))
    except (AttributeError, TypeError, ValueError):
        raise error(f"task {name}: holdout must be {{fraction: 0<f<1, seed: int}}, got {spec!r}") from None
    if not 0.0 < fraction < 1.0:
        raise error(f"task {name}: holdout.fraction must be in (0, 1), got {fraction}")
    train = splits.get("train")
    if not train or len(train) < 2:
        raise error(f"task {name}: holdout needs a train split of at least 2 examples")
    if splits.get("validation"):
        raise error(
            f"task {name}: holdout with a validation file too; set task.files.validation=[] "
            "to validate on the held-out part"
        )
    held = set(random.Random(seed).sample(range(len(train)), max(1, min(len(train) - 1, round(len(train) * fraction)))))
    splits["validation"] = [example for i, example in enumerate(train) if i in held]
    splits["train"] = [example for i, example in enumerate(train) if i not in held]
    return len(held)
