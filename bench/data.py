"""Tokenisation and batching for every task kind, with dynamic padding and length grouping.

Features are plain lists (cheap to cache); tensors are made per batch, padded to the longest
example on the tokenizer's side (left for decoders, right for encoders).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vocab import IGNORE_INDEX, choice_names

# the encoding code itself is part of a cached split's identity: editing this file invalidates the cache
_ENCODER_SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


@dataclass
class Encoded:
    """A tokenised split: one feature dict per example, plus how many were truncated."""

    features: list[dict[str, Any]]
    truncated: int
    real_tokens: int


def _special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before and after a single sequence ([CLS] … [SEP], <s> …)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    framed = tokenizer("hello")["input_ids"]
    for cut in range(len(framed) - len(plain) + 1):
        if framed[cut : cut + len(plain)] == plain:
            return list(framed[:cut]), list(framed[cut + len(plain) :])
    return [], []


def _encode_pairs(tokenizer, firsts: list[str], seconds: list[str | None], max_length: int):
    """Tokenise (text, text_pair) lists; returns encodings and the per-item truncation flags."""
    has_pair = any(second is not None for second in seconds)
    args = (firsts, [s or "" for s in seconds]) if has_pair else (firsts,)
    full = tokenizer(*args, truncation=False)["input_ids"]
    enc = tokenizer(*args, truncation=True, max_length=max_length)
    flags = [len(f) > max_length for f in full]
    return enc, flags


def encode_classification(tokenizer, examples: Sequence[dict], max_length: int) -> Encoded:
    enc, flags = _encode_pairs(
        tokenizer, [e["text"] for e in examples], [e.get("text_pair") for e in examples], max_length
    )
    features = []
    for i, example in enumerate(examples):
        feature = {"input_ids": enc["input_ids"][i], "labels": int(example["label"])}
        if "token_type_ids" in enc:
            feature["token_type_ids"] = enc["token_type_ids"][i]
        features.append(feature)
    return Encoded(features, sum(flags), sum(len(f["input_ids"]) for f in features))


def encode_multiple_choice(tokenizer, examples: Sequence[dict], max_length: int) -> Encoded:
    pairs = [pair for e in examples for pair in e["pairs"]]
    enc, flags = _encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length)
    features, start = [], 0
    for example in examples:
        count = len(example["pairs"])
        choice = {"input_ids": enc["input_ids"][start : start + count], "labels": int(example["label"])}
        if "token_type_ids" in enc:
            choice["token_type_ids"] = enc["token_type_ids"][start : start + count]
        features.append(choice)
        start += count
    return Encoded(features, sum(flags), sum(len(ids) for f in features for ids in f["input_ids"]))


def choices_as_text(pairs: Sequence[Sequence[str | None]]) -> str:
    """One encoder input listing an example's choices, choices first so truncation cuts the context.

    T5's SuperGLUE format: ``choice1: … choice2: … <context>``; a context shared by every pair
    (COPA's premise, ReCoRD's passage) is written once at the end.
    """
    firsts = {first for first, _ in pairs}
    shared = len(firsts) == 1
    options = [second if shared else " ".join(t for t in (first, second) if t) for first, second in pairs]
    listed = " ".join(f"{name}: {option}" for name, option in zip(choice_names(len(pairs)), options))
    return f"{listed} {next(iter(firsts))}" if shared else listed


def encode_text_to_text_choices(tokenizer, examples: Sequence[dict], max_length: int) -> Encoded:
    """Encoder-decoder multiple choice (Lester et al.'s text-to-text): the choices listed in one input,
    encoded as classification with the choice index as label; ``choice_count`` lets the model call a
    generated choice word past the example's own choices invalid."""
    texts = [{"text": choices_as_text(e["pairs"]), "label": e["label"]} for e in examples]
    encoded = encode_classification(tokenizer, texts, max_length)
    for feature, example in zip(encoded.features, examples):
        feature["choice_count"] = len(example["pairs"])
    return encoded


def encode_token_classification(tokenizer, examples: Sequence[dict], max_length: int, decoder: bool) -> Encoded:
    """Words tokenised one by one; each word's tag sits on its first sub-token, others are ignored."""
    head, tail = _special_frame(tokenizer)
    words = [(" " + w if decoder and j else w) for e in examples for j, w in enumerate(e["tokens"])]
    pieces = iter(tokenizer(words, add_special_tokens=False)["input_ids"] if words else [])
    budget = max_length - len(head) - len(tail)
    features, truncated = [], 0
    for example in examples:
        ids, labels, starts = list(head), [IGNORE_INDEX] * len(head), []
        for tag in example["tags"]:
            piece = next(pieces) or [tokenizer.unk_token_id]
            fits = len(ids) - len(head) + len(piece) <= budget
            starts.append(len(ids) if fits else -1)
            if fits:
                ids += piece
                labels += [int(tag)] + [IGNORE_INDEX] * (len(piece) - 1)
        truncated += int(-1 in starts)
        features.append({"input_ids": ids + tail, "labels": labels + [IGNORE_INDEX] * len(tail), "word_starts": starts})
    return Encoded(features, truncated, sum(len(f["input_ids"]) for f in features))


def encode_generation(tokenizer, examples: Sequence[dict], max_length: int, separator: str, training: bool) -> Encoded:
    """Training: prompt + target + EOS, loss on the target only.  Evaluation: the prompt alone."""
    head, _ = _special_frame(tokenizer)
    sources = tokenizer([e["source"] + separator for e in examples], add_special_tokens=False)["input_ids"]
    features, truncated = [], 0
    for example, source in zip(examples, sources):
        targets = example["references"] if training else [None]
        target_ids = (
            tokenizer([" " + t for t in targets if t is not None], add_special_tokens=False)["input_ids"]
            if training
            else [[]]
        )
        for target in target_ids:
            target = target + [tokenizer.eos_token_id] if training else target
            room = max(max_length - len(head) - len(target), 1)
            truncated += int(len(source) > room)
            prompt = head + source[-room:]  # keep the end of the source: it holds the separator
            features.append({"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target})
    return Encoded(features, truncated, sum(len(f["input_ids"]) for f in features))


def encode_seq2seq_generation(tokenizer, examples: Sequence[dict], max_length: int, training: bool) -> Encoded:
    """Encoder-decoder: the source (with the tokenizer's specials) feeds the encoder, the target + EOS
    is the decoder's label sequence.  Training: one feature per reference; evaluation: the first."""
    sources = tokenizer([e["source"] for e in examples], truncation=False)["input_ids"]
    features, truncated = [], 0
    for example, source in zip(examples, sources):
        references = example["references"] if training else example["references"][:1]
        targets = tokenizer(list(references), add_special_tokens=False)["input_ids"] if references else [[]]
        truncated += int(len(source) > max_length)
        # keep the source's closing special token (T5's </s>, BERT's [SEP]) when cutting it
        cut = source if len(source) <= max_length else source[: max_length - 1] + source[-1:]
        for target in targets:
            features.append({"input_ids": cut, "labels": target[: max_length - 1] + [tokenizer.eos_token_id]})
    return Encoded(features, truncated, sum(len(f["input_ids"]) for f in features))


def encode_split(task, tokenizer, split: str, max_length: int, decoder: bool, seq2seq: bool = False) -> Encoded:
    """Tokenise one split of a task for its kind (``seq2seq``: generation targets go to a decoder, the
    choices of a multiple-choice example are listed in one encoder input)."""
    examples = task.splits[split]
    if seq2seq and task.kind == "generation":
        return encode_seq2seq_generation(tokenizer, examples, max_length, training=split == "train")
    if task.kind == "classification":
        return encode_classification(tokenizer, examples, max_length)
    if task.kind == "multiple_choice":
        if seq2seq:
            return encode_text_to_text_choices(tokenizer, examples, max_length)
        return encode_multiple_choice(tokenizer, examples, max_length)
    if task.kind == "token_classification":
        return encode_token_classification(tokenizer, examples, max_length, decoder)
    separator = task.config.get("separator") or "\n"
    return encode_generation(tokenizer, examples, max_length, separator, training=split == "train")


def cache_key(task, tokenizer, split: str, max_length: int, seq2seq: bool = False) -> str:
    """Stable key for a tokenised split: its examples, tokenizer identity and vocabulary size, length."""
    payload = json.dumps(
        [
            task.kind,
            task.config.get("separator"),
            split,
            max_length,
            seq2seq,
            tokenizer.name_or_path,
            len(tokenizer),
            tokenizer.padding_side,
            tokenizer.all_special_ids,
            tokenizer.model_input_names,
            _ENCODER_SOURCE,
            task.splits[split],
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _pad(rows: list[list[int]], value: int, left: bool, width: int | None = None) -> list[list[int]]:
    width = width or max(len(r) for r in rows)
    return [([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows]


def _mask(rows: list[list[int]], left: bool, width: int) -> list[list[int]]:
    return _pad([[1] * len(r) for r in rows], 0, left, width)


def collate(features: list[dict], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    """Pad a list of features into tensors (multiple choice: (B, choices, L) plus ``choice_mask``;
    text-to-text multiple choice: (B, L) plus each example's ``choice_count``)."""
    if isinstance(features[0]["input_ids"][0], list):
        return _collate_choices(features, pad_id, left)
    rows = [f["input_ids"] for f in features]
    width = max(len(r) for r in rows)
    batch = {
        "input_ids": torch.tensor(_pad(rows, pad_id, left, width)),
        "attention_mask": torch.tensor(_mask(rows, left, width)),
    }
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = torch.tensor(_pad([f["token_type_ids"] for f in features], 0, left, width))
    labels = [f["labels"] for f in features]
    if isinstance(labels[0], list):  # per-token labels; an encoder-decoder's targets have their own length
        batch["labels"] = torch.tensor(_pad(labels, IGNORE_INDEX, left, max(len(row) for row in labels)))
    else:
        batch["labels"] = torch.tensor(labels)
    if "choice_count" in features[0]:
        batch["choice_count"] = torch.tensor([f["choice_count"] for f in features])
    return batch


def _collate_choices(features: list[dict], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    choices = max(len(f["input_ids"]) for f in features)
    width = max(len(ids) for f in features for ids in f["input_ids"])
    empty = [pad_id]  # a padded-out choice: one pad token, masked by choice_mask

    def grid(key: str, fill: int) -> list[list[list[int]]]:
        return [_pad(f[key] + [empty] * (choices - len(f[key])), fill, left, width) for f in features]

    masks = [_mask(f["input_ids"] + [empty] * (choices - len(f["input_ids"])), left, width) for f in features]
    batch = {
        "input_ids": torch.tensor(grid("input_ids", pad_id)),
        "attention_mask": torch.tensor(masks),
        "choice_mask": torch.tensor(
            [[1] * len(f["input_ids"]) + [0] * (choices - len(f["input_ids"])) for f in features]
        ),
        "labels": torch.tensor([f["labels"] for f in features]),
    }
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = torch.tensor(grid("token_type_ids", 0))
    return batch


def _length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(len(i) for i in ids) if ids and isinstance(ids[0], list) else len(ids)


def batch_indices(
    features: list[dict], batch_size: int, shuffle: bool, seed: int, group_by_length: bool
) -> Iterator[list[int]]:
    """Index batches; length grouping sorts within shuffled mega-batches so padding stays small."""
    order = list(range(len(features)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 50
        order = [
            i
            for start in range(0, len(order), mega)
            for i in sorted(order[start : start + mega], key=lambda j: -_length(features[j]))
        ]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle and group_by_length:
        rng.shuffle(batches)  # sorted mega-batches would otherwise feed long batches first
    yield from batches


# evaluation batches close a batch when the next (shorter) example would pad by more than this share of
# the batch's width: padding waste stays under 2 % (issue #16's target) however wide the length mix
EVAL_PADDING_TOLERANCE = 0.02


def eval_batch_indices(
    features: list[dict], batch_size: int, sort_by_length: bool = True, tolerance: float | None = None
) -> list[list[int]]:
    """Evaluation batches, longest examples first, so each pads little and the first shows the memory peak.

    With ``tolerance``, a batch also ends before an example shorter than ``(1 - tolerance)`` x the batch's
    longest, so no example pads by more than that share (batches get smaller, never larger).  Unsorted,
    batches are cut in the split's order.  Ties keep the split's order, so equal inputs always batch alike;
    callers put predictions back in the split's order (:func:`restore_order`).
    """
    order = list(range(len(features)))
    if not sort_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order.sort(key=lambda i: -_length(features[i]))
    batches: list[list[int]] = []
    width = 0
    for index in order:
        length = _length(features[index])
        if not batches or len(batches[-1]) == batch_size or (tolerance and length < width * (1 - tolerance)):
            batches.append([])
            width = length
        batches[-1].append(index)
    return batches


def restore_order(batches: Sequence[Sequence[int]], outputs: Sequence[Sequence[Any]]) -> list[Any]:
    """Per-batch outputs (one per index) back in index order 0..n-1; every index must appear once."""
    by_index: dict[int, Any] = {}
    for indices, values in zip(batches, outputs, strict=True):
        if len(indices) != len(values):
            raise ValueError(f"a batch of {len(indices)} examples gave {len(values)} outputs")
        by_index.update(zip(indices, values))
    if sum(map(len, batches)) != len(by_index) or sorted(by_index) != list(range(len(by_index))):
        raise ValueError("batches do not cover every example exactly once")
    return [by_index[i] for i in range(len(by_index))]


def padded_and_real(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(positions computed, real tokens) of a collated batch; padded-out choices count as padding."""
    mask = batch["attention_mask"]
    if "choice_mask" in batch:  # a padded-out choice is one masked-in pad token: computed, not real
        mask = mask * batch["choice_mask"].unsqueeze(-1)
    return batch["attention_mask"].numel(), int(mask.sum())


def padding_waste(padded: int, real: int) -> float | None:
    """Share of computed positions that were padding (None when nothing was computed)."""
    return round(1 - real / padded, 6) if padded else None
