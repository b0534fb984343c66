"""Evaluation batches sorted by length: predictions come back in the split's order, metrics unchanged.

For every task kind, on the tiny random models: sorted evaluation must give exactly the predictions of
evaluating one example at a time in file order (so each prediction sits at its own example), the
same metrics as unsorted evaluation, and less padding.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from bench.data import _length, collate, encode_split, eval_batch_indices, padding_waste, restore_order
from bench.models import load_model
from bench.settings import TrainerConfig
from bench.tasks import load_task, task_config
from bench.tasks.base import TaskData
from bench.train import Runtime, Splits, TrainResult, _generate, predict
from methods import get_method
from methods.model import AdaptedModel

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
SIZES = {"n_train": 4, "n_validation": 24, "n_test": 4}


def model_config(name: str) -> dict:
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())


def choice_task() -> TaskData:
    """Multiple choice built from synth_cls pairs: 2 or 3 choices of different lengths per example."""
    base = load_task(task_config("synth_cls", **SIZES))
    examples = []
    for index, example in enumerate(base.splits["validation"]):
        first, second = example["text"], example.get("text_pair") or example["text"]
        pairs = [[first, second], [second, first]] + ([[first, first + " " + second]] if index % 2 else [])
        examples.append({"pairs": pairs, "label": index % len(pairs)})
    return TaskData(
        "synth_choice",
        "multiple_choice",
        None,
        {"validation": examples},
        {},
        [],
        "accuracy",
        {"metric": ["accuracy"], "max_length": 64},
    )


def task_for(kind: str) -> TaskData:
    if kind == "multiple_choice":
        return choice_task()
    name = {"classification": "synth_cls", "token_classification": "synth_ner", "generation": "synth_d2t"}[kind]
    task = load_task(task_config(name, **SIZES))
    if kind == "generation":
        task.config["generation"] = {"num_beams": 1, "max_new_tokens": 8}
    return task


# tiny_llama's random LM head emits one token whatever the prompt, which could not show a wrong order
CASES = [
    ("classification", "tiny_bert", "head_only"),
    ("classification", "tiny_llama", "p_tuning_v2"),
    ("multiple_choice", "tiny_roberta", "prompt_tuning"),
    ("token_classification", "tiny_bert", "prefix_tuning"),
    ("token_classification", "tiny_llama", "head_only"),
    ("generation", "tiny_gpt2", "p_tuning_v2"),
    ("generation", "tiny_gpt2", "prompt_tuning"),
]


@torch.no_grad()
def spread_head(model: AdaptedModel, encoded, splits: Splits) -> None:
    """Make a random head's predictions vary between examples (a constant one would hide a wrong order).

    A random head on a random backbone predicts one class everywhere: the pooled states share a large
    common component.  The head is redrawn orthogonal to what all examples (or all choice slots) share.
    """
    batch = collate(encoded.features, splits.pad_id, splits.left_pad)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    shape = ids.shape
    ids, mask = ids.reshape(-1, shape[-1]), mask.reshape(-1, shape[-1])
    types = batch.get("token_type_ids")
    states = model.pool(model.encode(ids, mask, None if types is None else types.reshape(ids.shape)), mask)
    shared = states.view(*shape[:-1], -1).mean(0).reshape(-1, states.shape[-1])  # per choice slot, or overall
    basis, _ = torch.linalg.qr(shared.T)
    linear = model.head[-1]
    weight = torch.randn(linear.weight.shape, generator=torch.Generator().manual_seed(0))
    linear.weight.copy_(weight - (weight @ basis) @ basis.T)
    linear.bias.zero_()


def setup(kind: str, model_name: str, method: str):
    task = task_for(kind)
    loaded = load_model(model_config(model_name), kind)
    labels = len(task.label_names or []) or None
    cls = get_method(method)
    config = cls.from_dict({"num_virtual_tokens": 3} if "num_virtual_tokens" in cls.__dataclass_fields__ else {})
    model = AdaptedModel(loaded.backbone, config, kind, num_labels=labels, tokenizer=loaded.tokenizer, seed=1)
    encoded = encode_split(
        task, loaded.tokenizer, "validation", int(task.config.get("max_length") or 64), loaded.decoder
    )
    splits = Splits({"validation": encoded}, loaded.tokenizer.pad_token_id, loaded.tokenizer.padding_side == "left")
    if kind in ("classification", "multiple_choice"):
        spread_head(model.eval(), encoded, splits)
    return task, model, encoded, splits, loaded.tokenizer


def evaluate(case, batch_size: int, sort: bool):
    task, model, encoded, splits, tokenizer = case
    result = TrainResult()
    runtime = Runtime(TrainerConfig(eval_batch_size=batch_size), torch.device("cpu"), torch.float32)
    predictions, loss = predict(model, task, encoded, splits, runtime, tokenizer, result, sort_by_length=sort)
    return predictions, loss, result


@pytest.mark.parametrize("kind,model_name,method", CASES, ids=[f"{k}-{m}-{x}" for k, m, x in CASES])
def test_sorted_predictions_in_split_order_and_metrics_unchanged(kind, model_name, method, one_thread) -> None:
    case = setup(kind, model_name, method)
    task, _, encoded, _, _ = case
    lengths = [_length(f) for f in encoded.features]
    order = [i for batch in eval_batch_indices(encoded.features, 5) for i in batch]
    assert order != list(range(len(lengths))), "the split is already sorted: the test could not fail"
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)

    one_by_one, _, _ = evaluate(case, 1, sort=False)  # no batching at all: each prediction is its example's
    unsorted, unsorted_loss, unsorted_result = evaluate(case, 5, sort=False)
    ordered, sorted_loss, sorted_result = evaluate(case, 5, sort=True)
    assert len({repr(p) for p in one_by_one}) > 1, "identical predictions would hide a wrong order"
    assert ordered == one_by_one
    assert ordered == unsorted
    assert task.compute_metrics(ordered, "validation") == task.compute_metrics(unsorted, "validation")
    if kind == "generation":
        assert sorted_loss is None and sorted_result.generation_tokens == unsorted_result.generation_tokens
    else:
        assert sorted_loss == pytest.approx(unsorted_loss, rel=1e-5)
    assert sorted_result.eval_tokens == unsorted_result.eval_tokens == encoded.real_tokens
    assert sorted_result.eval_padded_tokens < unsorted_result.eval_padded_tokens


def test_generation_stops_when_every_sequence_has_ended(one_thread) -> None:
    """Greedy decoding ends for the whole batch once every row has produced EOS, not at max_new_tokens."""
    task, model, encoded, splits, tokenizer = setup("generation", "tiny_llama", "prompt_tuning")
    batch = collate([encoded.features[0]] * 3, splits.pad_id, splits.left_pad)  # same prompt: same greedy path
    shapes = []
    generate = model.generate
    model.generate = lambda *a, **k: (lambda out: (shapes.append(tuple(out.shape)), out)[1])(generate(*a, **k))
    _generate(model.eval(), batch, task, tokenizer, TrainResult())  # max_new_tokens=8
    first = model.generate(
        batch["input_ids"],
        batch["attention_mask"],
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )[0, 0].item()
    assert first not in (tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert shapes[0] == (3, 8), "the unstopped run must go the full length for the check to mean anything"
    stopping = copy.copy(tokenizer)
    stopping.eos_token = tokenizer.convert_ids_to_tokens(first)  # every row's first new token is now EOS
    result = TrainResult()
    _generate(model, batch, task, stopping, result)
    assert shapes[-1] == (3, 1) and result.generation_tokens == 3


def test_restore_order_and_padding_waste() -> None:
    assert restore_order([[2, 0], [1]], [["c", "a"], ["b"]]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="exactly once"):
        restore_order([[0, 0]], [["a", "b"]])
    with pytest.raises(ValueError, match="gave 1 outputs"):
        restore_order([[0, 1]], [["a"]])
    features = [{"input_ids": [1] * n} for n in (3, 9, 1, 9, 4)]
    assert eval_batch_indices(features, 2) == [[1, 3], [4, 0], [2]]  # ties keep the split's order
    assert eval_batch_indices(features, 2, sort_by_length=False) == [[0, 1], [2, 3], [4]]
    features.append({"input_ids": [1] * 8})  # lengths 3, 9, 1, 9, 4, 8
    # a batch ends at batch_size or before an example that would pad by more than 20 % of the batch's width
    assert eval_batch_indices(features, 4, tolerance=0.2) == [[1, 3, 5], [4], [0], [2]]
    assert eval_batch_indices(features, 2, tolerance=0.2) == [[1, 3], [5], [4], [0], [2]]
    assert padding_waste(10, 9) == pytest.approx(0.1) and padding_waste(0, 0) is None


def test_record_carries_eval_padding_waste(tmp_path: Path, one_thread) -> None:
    from omegaconf import OmegaConf

    from bench.runner import execute
    from tests.conftest import compose

    config = OmegaConf.to_container(
        compose(["method=head_only", "model=tiny_bert", "task=synth_ner", "trainer=smoke"], hydra_node=False),
        resolve=True,
    )
    throughput = execute(config, tmp_path)["throughput"]
    assert 0 <= throughput["eval_padding_waste"] < 0.5 and throughput["eval_tokens_per_s"] > 0
