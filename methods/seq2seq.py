"""Text-to-text pieces for encoder-decoder backbones (T5, BART): label words and their decoding.

Classification on an encoder-decoder model follows Lester et al.: the target is the verbalised
label (its name, ``_`` read as a space, then EOS); the prediction is the greedy generation mapped
back to a label by exact token match.  A generation that matches no label word is *invalid*: it
is predicted as the extra class ``num_labels``, which no gold label equals, so it counts as wrong,
and the evaluation records how many there were.  Multiple choice is the same with the choices
listed in the input and named ``choice1``, ``choice2``... (:func:`vocab.choice_names`): those
names are the label words, and naming a choice the example does not have is invalid too.
"""

from __future__ import annotations

from typing import Any

import torch

from vocab import IGNORE_INDEX


class LabelWordError(ValueError):
    """Label names that cannot serve as text-to-text targets."""


def label_word_ids(tokenizer: Any, label_names: list[str] | None, eos_id: int) -> list[list[int]]:
    """Token ids of each verbalised label, EOS-terminated; distinct labels must tokenize differently."""
    if not label_names or tokenizer is None:
        raise LabelWordError("text-to-text classification needs the task's label names and a tokenizer")
    words = [str(name).replace("_", " ") for name in label_names]
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] + [eos_id] for word in words]
    if len({tuple(i) for i in ids}) != len(ids) or any(len(i) < 2 for i in ids):
        raise LabelWordError(f"label names {label_names} do not give distinct non-empty label words")
    return ids


def label_targets(label_words: list[list[int]], labels: torch.Tensor) -> torch.Tensor:
    """(B,) class indices -> (B, T) decoder targets (the label word + EOS), padded with IGNORE_INDEX."""
    width = max(len(word) for word in label_words)
    table = torch.full((len(label_words), width), IGNORE_INDEX, dtype=torch.long, device=labels.device)
    for index, word in enumerate(label_words):
        table[index, : len(word)] = torch.tensor(word, device=labels.device)
    return table[labels]


def map_generations(tokens: torch.Tensor, label_words: list[list[int]], eos_id: int) -> torch.Tensor:
    """Greedy generations (B, T) -> (B, num_labels + 1) one-hot scores; column num_labels = invalid."""
    lookup = {tuple(word): index for index, word in enumerate(label_words)}
    invalid = len(label_words)
    scores = torch.zeros(tokens.shape[0], invalid + 1, device=tokens.device)
    for row, sequence in enumerate(tokens.tolist()):
        cut = sequence.index(eos_id) + 1 if eos_id in sequence else len(sequence)
        scores[row, lookup.get(tuple(sequence[:cut]), invalid)] = 1.0
    return scores


def invalid_beyond(scores: torch.Tensor, choice_count: torch.Tensor) -> torch.Tensor:
    """Mapped scores (B, K + 1) with a choice past an example's ``choice_count`` moved to the invalid column."""
    columns = torch.arange(scores.shape[1], device=scores.device)
    beyond = (columns >= choice_count.unsqueeze(-1)) & (columns < scores.shape[1] - 1)
    moved = (scores * beyond).sum(-1)
    kept = scores.masked_fill(beyond, 0.0)
    kept[:, -1] += moved
    return kept


def count_invalid(predictions: list, num_labels: int) -> int:
    """How many text-to-text predictions matched no label word."""
    return sum(1 for prediction in predictions if prediction == num_labels)
