"""The ``eval`` section: evaluation as the trainer runs it, against head-only training on the same data.

* MiniLM token classification on a realistic length mix (CoNLL-2003 dev, or generated sentences with
  its length histogram): one evaluation pass (``bench.train.predict``, sorted batches) vs one epoch of
  head-only training steps (the trainer's step and batching) over the same sentences.  Both see the
  same real tokens, so the per-round wall ratio is the ratio of tokens per second.
* SmolLM2 greedy generation over mixed-length prompts, sorted by length vs in file order (``predict``
  both ways): tokens per second.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from bench.data import Encoded, batch_indices, collate, encode_split, eval_batch_indices, padded_and_real, padding_waste
from bench.models import load_model, model_config, model_spec
from bench.record import PROJECT_ROOT
from bench.speed.config import SpeedConfig, frozen_method
from bench.speed.contenders import build_ours, speed_runtime, trainer_step
from bench.speed.timing import Contender, paired_ratio, round_robin, timing_results
from bench.train import Splits, TrainResult, predict

CONLL_DIR = PROJECT_ROOT.parent / "shared" / "data" / "ner" / "conll2003"  # the data folder beside the repo
# words per sentence in CoNLL-2003 dev.txt (3,250 sentences; counted by this project): (from, to, sentences)
CONLL_DEV_WORDS = (
    (1, 2, 15),
    (2, 3, 265),
    (3, 5, 269),
    (5, 8, 564),
    (8, 12, 581),
    (12, 17, 296),
    (17, 23, 353),
    (23, 30, 356),
    (30, 40, 399),
    (40, 60, 144),
    (60, 110, 8),
)


def eval_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Evaluation vs head-only training (encoder), then sorted vs file-order generation (decoder)."""
    body = eval_vs_training(cfg, device, dtype)
    if cfg.lm_model and model_spec(cfg.lm_model).decoder:
        generation = sorted_generation(cfg, device, dtype)
        body["ratios"].update(generation.pop("ratios"))
        body["methods"].update(generation.pop("methods"))
        body.update(generation)
    return body


def ner_sentences(cfg: SpeedConfig) -> tuple[Any, str]:
    """CoNLL-2003 dev (first ``eval_examples`` sentences) when the folder exists, else a generated mix."""
    from bench.tasks import load_task, task_config

    folder = Path(cfg.eval_data) if cfg.eval_data else CONLL_DIR
    if folder.is_dir():
        task = load_task(task_config("conll2003", data_dir=str(folder)))
        task.splits = {"validation": task.splits["validation"][: cfg.eval_examples]}
        return task, f"conll2003 dev ({folder})"
    task = load_task(task_config("synth_ner", n_train=4, n_validation=4, n_test=4))
    task.splits = {"validation": generated_sentences(cfg.eval_examples, task.label_names)}
    return task, "generated (CoNLL-2003 dev length histogram)"


def generated_sentences(count: int, label_names: list[str], seed: int = 0) -> list[dict]:
    """Sentences of common English-like words whose lengths follow :data:`CONLL_DEV_WORDS`."""
    rng = random.Random(seed)
    words = [
        "the",
        "of",
        "said",
        "in",
        "on",
        "for",
        "market",
        "London",
        "Monday",
        "1996-08-30",
        "shares",
        "percent",
        "government",
        "Clinton",
        "rose",
        "(",
        ")",
        ",",
        ".",
        "million",
        "Reuters",
        "officials",
    ]
    bins = [(low, high) for low, high, n in CONLL_DEV_WORDS for _ in range(n)]
    out = []
    for _ in range(count):
        low, high = rng.choice(bins)
        length = rng.randrange(low, high)
        out.append(
            {
                "tokens": [rng.choice(words) for _ in range(length)],
                "tags": [rng.randrange(len(label_names)) for _ in range(length)],
            }
        )
    return out


def eval_vs_training(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """One sorted evaluation pass vs one epoch of head-only training steps, on the same sentences."""
    task, source = ner_sentences(cfg)
    loaded = load_model(model_config(cfg.cls_model), "token_classification")
    encoded = encode_split(
        task, loaded.tokenizer, "validation", int(task.config.get("max_length") or 128), loaded.decoder
    )
    splits = Splits({"validation": encoded}, loaded.tokenizer.pad_token_id, loaded.decoder)
    model = build_ours(loaded, frozen_method(), "token_classification", cfg, device, num_labels=len(task.label_names))
    evaluated = TrainResult()
    runtime = speed_runtime(device, dtype, eval_batch_size=cfg.eval_batch)
    run_eval = lambda: predict(model, task, encoded, splits, runtime, loaded.tokenizer, evaluated)
    contenders = [
        Contender("eval_pass", run_eval),
        Contender("train_epoch", train_epoch(model, encoded, splits, cfg, device, dtype)),
    ]
    times = round_robin(contenders, cfg.warmup, 1, cfg.repeats, device)
    results, errors = timing_results(contenders, times)
    for body in results.values():
        if "median_s" in body:
            body["tokens_per_s"] = round(encoded.real_tokens / body["median_s"], 1)
    return {
        "shapes": {
            "model": cfg.cls_model,
            "data": source,
            "sentences": len(encoded.features),
            "real_tokens": encoded.real_tokens,
            "eval_batch": cfg.eval_batch,
            "train_batch": cfg.eval_train_batch,
        },
        "methods": results,
        "eval_padding_waste": padding_waste(evaluated.eval_padded_tokens, evaluated.eval_tokens),
        "eval_padding_waste_file_order": order_padding_waste(encoded, splits, cfg.eval_batch),
        "ratios": {f"eval/{frozen_method()}_train": paired_ratio(times, errors, ("train_epoch", "eval_pass"))},
    }


def train_epoch(
    model, encoded: Encoded, splits: Splits, cfg: SpeedConfig, device: torch.device, dtype: torch.dtype
) -> Callable[[], None]:
    """One epoch of the trainer's steps, batched as the trainer batches (shuffled, length-grouped)."""
    step, _, _ = trainer_step(model, device, dtype)
    epochs = iter(range(10**9))

    def run() -> None:
        for indices in batch_indices(encoded.features, cfg.eval_train_batch, True, next(epochs), True):
            step(collate([encoded.features[i] for i in indices], splits.pad_id, splits.left_pad))

    return run


def order_padding_waste(encoded: Encoded, splits: Splits, batch_size: int) -> float | None:
    """The padding waste evaluation had before: batches cut in the split's order."""
    padded = real = 0
    for indices in eval_batch_indices(encoded.features, batch_size, sort_by_length=False):
        p, r = padded_and_real(collate([encoded.features[i] for i in indices], splits.pad_id, splits.left_pad))
        padded, real = padded + p, real + r
    return padding_waste(padded, real)


def mixed_prompts(count: int, longest: int, vocab: int, seed: int = 0) -> Encoded:
    """``count`` prompts of random ids, lengths log-uniform in [8, ``longest``], in random order."""
    rng = random.Random(seed)
    low = min(1000, vocab // 2)  # clear of special tokens
    features = []
    for _ in range(count):
        length = int(round(8 * (longest / 8) ** rng.random()))
        ids = [rng.randrange(low, vocab) for _ in range(length)]
        features.append({"input_ids": ids, "labels": [-100] * length})
    return Encoded(features, 0, sum(len(f["input_ids"]) for f in features))


def padded_prompt_ratio(prompts: Encoded, batch_size: int) -> float:
    """Prompt positions (padding included) in file-order batches ÷ in sorted batches: what sorting saves
    in the prompt pass, and to first order the most it can speed generation up (decoding steps are
    the same in both orders and dilute it)."""

    def positions(sort: bool) -> int:
        lengths = [len(f["input_ids"]) for f in prompts.features]
        batches = eval_batch_indices(prompts.features, batch_size, sort, None)
        return sum(len(indices) * max(lengths[i] for i in indices) for indices in batches)

    return round(positions(False) / positions(True), 4)


def sorted_generation(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Greedy generation over mixed-length prompts with ``predict``: sorted batches vs file-order batches."""
    loaded = load_model(model_config(cfg.lm_model), "generation")
    model = build_ours(loaded, cfg.lm_methods[0], "generation", cfg, device)
    prompts = mixed_prompts(cfg.sorted_prompts, 2 * cfg.prompt_length, loaded.backbone.config.vocab_size)
    splits = Splits({"validation": prompts}, loaded.tokenizer.pad_token_id, True)
    task = SimpleNamespace(
        kind="generation", config={"generation": {"num_beams": 1, "max_new_tokens": cfg.sorted_new_tokens}}
    )
    runtime = speed_runtime(device, dtype, eval_batch_size=cfg.sorted_gen_batch)
    generated: dict[str, TrainResult] = {}

    def contender(name: str, sort: bool) -> Contender:
        def run() -> None:
            generated[name] = result = TrainResult()
            predict(model, task, prompts, splits, runtime, loaded.tokenizer, result, sort)

        return Contender(name, run)

    contenders = [contender("generate_sorted", True), contender("generate_file_order", False)]
    times = round_robin(contenders, cfg.warmup, 1, cfg.repeats, device)
    results, errors = timing_results(contenders, times)
    for name, body in results.items():
        if name not in generated or "median_s" not in body:
            continue
        body["tokens_per_s"] = round(generated[name].generation_tokens / body["median_s"], 2)
        body["new_tokens"] = generated[name].generation_tokens
    walls = paired_ratio(times, errors, ("generate_file_order", "generate_sorted"))
    tokens = [
        generated[n].generation_tokens if n in generated else 0 for n in ("generate_sorted", "generate_file_order")
    ]
    if walls.get("value") is not None and all(tokens):  # tokens per call are fixed: tok/s ratio = walls x tokens
        scale = tokens[0] / tokens[1]
        walls = {**walls, "value": round(walls["value"] * scale, 4), "tokens_scale": round(scale, 4)}
    return {
        "generation_prompts": {
            "model": cfg.lm_model,
            "method": cfg.lm_methods[0],
            "prompts": cfg.sorted_prompts,
            "lengths": [len(f["input_ids"]) for f in prompts.features],
            "batch": cfg.sorted_gen_batch,
            "max_new_tokens": cfg.sorted_new_tokens,
            "padded_prompt_ratio": padded_prompt_ratio(prompts, cfg.sorted_gen_batch),
        },
        "methods": results,
        "ratios": {"sorted/file_order_generation": walls},
    }
