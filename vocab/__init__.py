"""The vocabulary ``bench`` and ``methods`` share, defined here only: the task kinds a model serves, the
pooling choices of a classification head, the label id losses skip, and the words naming the choices of
a multiple-choice example written as text.

It sits below both packages and imports nothing, so ``methods`` needs nothing from ``bench`` and
importing it pulls in no loader, no torch.
"""

from __future__ import annotations

# What a task asks of a model; every head in methods.model serves exactly these kinds.
TASK_KINDS = ("classification", "multiple_choice", "token_classification", "generation")
# How a classification head reads the backbone's outputs (``model.pooling``): auto (the first real
# token; the last one on a decoder), first, last, mean, or pooler (the checkpoint's dense+tanh pooler).
POOLING = ("auto", "first", "last", "mean", "pooler")
# Label id that losses skip (prompt tokens of a generation example, sub-tokens after a word's first).
IGNORE_INDEX = -100


def choice_names(count: int) -> list[str]:
    """The words that name the choices of a multiple-choice example written as text: choice1, choice2, ..."""
    return [f"choice{index}" for index in range(1, count + 1)]


__all__ = ["IGNORE_INDEX", "POOLING", "TASK_KINDS", "choice_names"]
