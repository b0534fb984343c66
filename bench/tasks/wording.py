"""Wording perturbations: deterministic, meaning-preserving rewrites of a split's inputs, applied at
evaluation to an already-trained model (``trainer.wording_perturbations``).

Each perturbation rewrites only the text a model reads (``text``/``text_pair``, a choice's strings, a
generation ``source``, a sentence's ``tokens`` one by one) and never what it is scored against: labels,
answers, entity candidates, references and tags stay as they were.  For token classification only
word-internal rewrites are allowed, so no entity span moves (same word count, same tags).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

NEUTRAL_PREFIX = "Read the following. "
"""A sentence that says nothing about any label, put before the input."""


def _strip_final_punctuation(text: str) -> str:
    stripped = text.rstrip()
    return stripped[:-1] if stripped and stripped[-1] in ".!?" else text


PERTURBATIONS: dict[str, Callable[[str], str]] = {
    "lowercase": str.lower,
    "uppercase": str.upper,
    "no_final_punctuation": _strip_final_punctuation,
    "double_spaces": lambda text: text.replace(" ", "  "),
    "neutral_prefix": lambda text: NEUTRAL_PREFIX + text,
}
"""Every perturbation by name: a rewrite of one input string."""

FIRST_STRING_ONLY = ("neutral_prefix",)
"""Perturbations applied to an input's first string only (a pair's first text, not to every choice)."""
WORD_INTERNAL = ("lowercase", "uppercase")
"""The perturbations that keep a word one word (the only ones token classification gets)."""


def perturbations_for(kind: str) -> list[str]:
    """The perturbations a task kind gets: word-internal ones for token classification, all others."""
    return list(WORD_INTERNAL) if kind == "token_classification" else list(PERTURBATIONS)


def _rewrite(value: object, rewrite: Callable[[str], str]) -> object:
    return rewrite(value) if isinstance(value, str) and value else value


def perturb_example(example: dict, kind: str, name: str) -> dict:
    """A copy of ``example`` with its input rewritten by perturbation ``name`` (targets untouched)."""
    if name not in perturbations_for(kind):
        raise ValueError(f"perturbation {name!r} is not defined for {kind} (have {perturbations_for(kind)})")
    rewrite, out = PERTURBATIONS[name], copy.deepcopy(example)
    later = (lambda text: text) if name in FIRST_STRING_ONLY else rewrite  # the strings after the first
    if kind == "token_classification":
        out["tokens"] = [rewrite(word) or word for word in example["tokens"]]  # never an empty word
    elif kind == "generation":
        out["source"] = _rewrite(example["source"], rewrite)
    elif kind == "multiple_choice":
        out["pairs"] = [
            [_rewrite(p, rewrite if i == 0 else later) for i, p in enumerate(pair)] for pair in example["pairs"]
        ]
    else:
        out["text"] = _rewrite(example["text"], rewrite)
        if "text_pair" in example:
            out["text_pair"] = _rewrite(example["text_pair"], later)
    return out


def perturb_split(examples: list[dict], kind: str, name: str) -> list[dict]:
    """Every example of a split under perturbation ``name``, in the same order."""
    return [perturb_example(example, kind, name) for example in examples]
