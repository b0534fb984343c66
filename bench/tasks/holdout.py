"""``task.holdout: {fraction, seed}``: validate on a held-out part of the training file;
``task.split_validation: {fraction, seed}``: select on one part of the validation file, report on the other.

For data that ships one labeled file where two are needed (the E2E dev set, used by the
``cpu_generation`` preset), a seeded ``fraction`` of the train split's examples becomes the
validation split and the rest stays for training. Generation tasks are grouped by input before
this point (one example per meaning representation with all its references), so the split is by
input: no input is in both parts.
"""

from __future__ import annotations

import random
from typing import Any


def _fraction_and_seed(cfg: dict[str, Any], key: str, error: type[Exception]) -> tuple[float, int]:
    spec, name = cfg.get(key), cfg.get("name", "?")
    try:
        fraction, seed = float(spec.get("fraction")), int(spec.get("seed", 0))
    except (AttributeError, TypeError, ValueError):
        raise error(f"task {name}: {key} must be {{fraction: 0<f<1, seed: int}}, got {spec!r}") from None
    if not 0.0 < fraction < 1.0:
        raise error(f"task {name}: {key}.fraction must be in (0, 1), got {fraction}")
    return fraction, seed


def _seeded_part(examples: list[dict], fraction: float, seed: int) -> set[int]:
    """Indices of a seeded ``fraction`` of ``examples`` (at least one, never all)."""
    count = max(1, min(len(examples) - 1, round(len(examples) * fraction)))
    return set(random.Random(seed).sample(range(len(examples)), count))


def split_validation(cfg: dict[str, Any], splits: dict[str, list[dict] | None], error: type[Exception]) -> int:
    """Move a seeded ``fraction`` of ``splits['validation']`` to ``splits['validation_heldout']`` in place.

    Hyperparameters and checkpoints are then chosen on the rest, and the held-out part is scored once,
    at the chosen checkpoint: a score on data nothing was selected on, where no test split is at hand
    (CoNLL-2003's shared copy has train and dev only). Returns how many were moved (0 when unset)."""
    if not cfg.get("split_validation"):
        return 0
    fraction, seed = _fraction_and_seed(cfg, "split_validation", error)
    validation = splits.get("validation")
    if not validation or len(validation) < 2:
        raise error(f"task {cfg.get('name', '?')}: split_validation needs a validation split of at least 2 examples")
    held = _seeded_part(validation, fraction, seed)
    splits["validation_heldout"] = [example for i, example in enumerate(validation) if i in held]
    splits["validation"] = [example for i, example in enumerate(validation) if i not in held]
    return len(held)


def apply_holdout(cfg: dict[str, Any], splits: dict[str, list[dict] | None], error: type[Exception]) -> int:
    """Move the held-out examples from ``splits['train']`` to ``splits['validation']`` in place.

    Returns how many were held out (0 when ``cfg['holdout']`` is unset). Raises ``error`` (one
    line naming the field) for a fraction outside (0, 1), a missing train split, or a validation
    split that already exists (it would be silently replaced).
    """
    if not cfg.get("holdout"):
        return 0
    name = cfg.get("name", "?")
    fraction, seed = _fraction_and_seed(cfg, "holdout", error)
    train = splits.get("train")
    if not train or len(train) < 2:
        raise error(f"task {name}: holdout needs a train split of at least 2 examples")
    if splits.get("validation"):
        raise error(
            f"task {name}: holdout with a validation file too; set task.files.validation=[] "
            "to validate on the held-out part"
        )
    held = _seeded_part(train, fraction, seed)
    splits["validation"] = [example for i, example in enumerate(train) if i in held]
    splits["train"] = [example for i, example in enumerate(train) if i not in held]
    return len(held)
