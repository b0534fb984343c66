"""Metric functions: perfect predictions score 1.0, hand-checked cases match the official definitions."""

import math
import random
from pathlib import Path

import pytest

from bench.tasks import metrics


def test_accuracy_hand_checked():
    assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    assert metrics.accuracy([2, 1, 0], [2, 1, 0]) == 1.0


@pytest.mark.parametrize("n", [1, 7, 277, 3250])
def test_accuracy_equals_sklearn_to_the_bit(n: int) -> None:
    from sklearn.metrics import accuracy_score

    rng = random.Random(n)
    labels = [rng.randrange(3) for _ in range(n)]
    predictions = [label if rng.random() < 0.7 else rng.randrange(3) for label in labels]
    assert metrics.accuracy(predictions, labels) == float(accuracy_score(labels, predictions))
    with pytest.raises(ValueError, match="predictions for"):
        metrics.accuracy(predictions[:-1], labels)


def test_f1_macro_hand_checked():
    labels = [0, 0, 1, 2, 2, 2]
    preds = [0, 1, 1, 2, 2, 0]
    # class 0: P=1/2 R=1/2 F=1/2; class 1: P=1/2 R=1 F=2/3; class 2: P=1 R=2/3 F=4/5
    assert metrics.f1_macro(preds, labels) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert metrics.f1_macro(labels, labels) == 1.0


def test_multirc_f1a_and_exact_match():
    groups = ["q1", "q1", "q1", "q2", "q2", "q3"]
    labels = [1, 0, 1, 0, 1, 1]
    preds = [1, 0, 1, 1, 1, 0]
    # tp=3 fp=1 fn=1 -> F1a = 3/4; only q1 has every answer-option right -> EM = 1/3
    out = metrics.multirc_f1a_em(preds, labels, groups)
    assert out["f1a"] == pytest.approx(0.75)
    assert out["em"] == pytest.approx(1 / 3)
    assert metrics.multirc_f1a_em(labels, labels, groups) == {"f1a": 1.0, "em": 1.0}


def test_record_normalisation_and_max_over_golds():
    assert metrics.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    out = metrics.record_f1_em(
        ["the Eiffel Tower!", "Paris France", "London"], [["Eiffel Tower"], ["Paris", "France"], ["Paris"]]
    )
    # "Paris France" vs "Paris": P=1/2 R=1 -> F1=2/3 (same for "France"); EM 0
    assert out["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["em"] == pytest.approx(1 / 3)
    assert metrics.record_f1_em(["Paris"], [["London", "paris."]]) == {"f1": 1.0, "em": 1.0}


def test_seqeval_entity_level_micro():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # entities: gold PER, LOC, ORG; pred PER, ORG(wrong type), ORG -> tp=2 of 3 and 3
    out = metrics.seqeval_f1(pred, gold)
    assert out == pytest.approx({"f1": 2 / 3, "precision": 2 / 3, "recall": 2 / 3})
    # a boundary error is a whole miss, not partial credit
    assert metrics.seqeval_f1([["B-PER", "O"]], [["B-PER", "I-PER"]])["f1"] == 0.0
    assert metrics.seqeval_f1(gold, gold)["f1"] == 1.0


def test_bleu_hand_checked():
    # 1-4gram precisions 5/6, 3/5, 1/4, 0/3 -> sacrebleu 'exp' smoothing gives 1/(2*3); BP = 1
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    got = metrics.bleu(["the cat sat on the mat"], [["the cat is on the mat"]])
    assert got == pytest.approx(expected, abs=1e-6)
    assert math.isclose(got, 0.37996, abs_tol=1e-4)


def test_bleu_uses_all_references_with_variable_counts():
    hyps = ["the cat sat on the mat", "a dog ran in the big park"]
    refs = [["the cat is on the mat", "the cat sat on the mat"], ["a dog ran in the big park"]]
    assert metrics.bleu(hyps, refs) == pytest.approx(1.0)
    assert metrics.bleu(hyps[:1], refs[:1]) == pytest.approx(1.0)


def test_rouge_hand_checked_and_multi_reference():
    out = metrics.rouge(["the cat sat on the mat"], [["the cat is on the mat"]], ("rouge1", "rouge2", "rougeL"))
    # unigram overlap 5/6; bigram overlap 3/5; LCS "the cat on the mat" = 5 of 6
    assert out == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})
    best = metrics.rouge(["the cat sat on the mat"], [["completely different words", "the cat is on the mat"]])
    assert best["rougeL"] == pytest.approx(5 / 6)
    assert metrics.rouge(["a b c"], [["a b c"]])["rougeL"] == 1.0


# ---------------------------------------------------------------- the registry
def perfect_input(name: str) -> metrics.ScoringInput:
    """Gold predictions for an example schema that metric ``name`` scores."""
    if name in ("accuracy", "error_rate", "f1_macro", "multirc"):
        examples = [{"label": 1, "group": "q1"}, {"label": 0, "group": "q1"}, {"label": 1, "group": "q2"}]
        return metrics.ScoringInput([1, 0, 1], examples, None, "t")
    if name == "record":
        examples = [{"entities": ["Paris", "London"], "answers": ["London"]}]
        return metrics.ScoringInput([1], examples, None, "t")
    if name == "seqeval":
        return metrics.ScoringInput(
            [[1, 2, 0]], [{"tokens": ["a", "b", "c"], "tags": [1, 2, 0]}], ["O", "B-PER", "I-PER"], "t"
        )
    return metrics.ScoringInput(["the cat sat on the mat"], [{"references": ["the cat sat on the mat"]}], None, "t")


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_each_registered_metric_produces_exactly_its_declared_keys(name):
    result = metrics.score_split([name], perfect_input(name))
    assert tuple(result) == metrics.METRICS[name].keys
    perfect = 1.0 if metrics.METRICS[name].direction == metrics.MAXIMIZE else 0.0  # an error rate's best is 0
    assert all(value == pytest.approx(perfect) for value in result.values())


def test_f1_macro_averages_over_the_task_classes_only():
    labels = [0, 0, 1, 2]
    preds = [0, 3, 1, 2]  # 3 = invalid: a generation naming no label
    # class 0: P=1 R=1/2 F=2/3; classes 1 and 2: F=1. Counting "invalid" as a 4th class would give 5/3 / 4
    assert metrics.f1_macro(preds, labels, invalid=3) == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert metrics.f1_macro(preds, labels) == pytest.approx((2 / 3 + 1 + 1 + 0) / 4)  # no invalid: a class


def test_multirc_invalid_generation_is_a_negative_answer_and_wrong():
    groups = ["q1", "q1", "q2", "q2"]
    labels = [1, 0, 1, 1]
    preds = [1, 0, 2, 1]  # 2 = invalid
    # F1a: tp=2 fp=0 fn=1 -> 4/5; EM: q1 right, q2 not -> 1/2
    assert metrics.multirc_f1a_em(preds, labels, groups) == {"f1a": pytest.approx(0.8), "em": 0.5}


INVALID = 2  # two labels (or two choices per example): index 2 is the invalid generation


def _index_input(predictions: list[int]) -> metrics.ScoringInput:
    """Four examples carrying every column an index-scoring metric reads, two labels / choices each."""
    examples = [
        {"label": label, "group": f"q{i // 2}", "entities": ["Paris", "Rome"], "answers": [["Paris", "Rome"][label]]}
        for i, label in enumerate([0, 1, 1, 0])
    ]
    return metrics.ScoringInput(predictions, examples, ["no", "yes"], "t", invalid=INVALID)


INDEX_METRICS = sorted(name for name, metric in metrics.METRICS.items() if metric.scores_indices)


def test_index_metrics_are_the_ones_text_to_text_tasks_use():
    # every classification / multiple-choice task (text-to-text on T5/BART) names only index-scoring metrics
    from bench.tasks import available_tasks, task_config

    used = set()
    for task in available_tasks():
        cfg = task_config(task)
        if cfg["kind"] in ("classification", "multiple_choice"):
            names = [cfg["metric"]] if isinstance(cfg["metric"], str) else cfg["metric"]
            used |= set(names)
    assert used and used <= set(INDEX_METRICS)


@pytest.mark.parametrize("name", INDEX_METRICS)
def test_invalid_generations_score_as_wrong_in_every_index_metric(name):
    gold = [0, 1, 1, 0]
    perfect = metrics.score_split([name], _index_input(gold))
    none_valid = metrics.score_split([name], _index_input([INVALID] * 4))
    one_invalid = metrics.score_split([name], _index_input([0, INVALID, 1, 0]))
    metric = metrics.METRICS[name]
    for key in metric.keys:
        best, worst = perfect[key], none_valid[key]
        assert best == pytest.approx(1.0 if metric.direction == metrics.MAXIMIZE else 0.0)
        assert worst == pytest.approx(0.0 if metric.direction == metrics.MAXIMIZE else 1.0)
        # one invalid generation in place of a right answer costs something, and never crashes
        assert metrics.orient(key, worst) <= metrics.orient(key, one_invalid[key]) < metrics.orient(key, best)


def test_score_split_errors_name_the_task():
    given = perfect_input("accuracy")
    with pytest.raises(ValueError, match="task t: unknown metric 'nope'"):
        metrics.score_split(["nope"], given)
    with pytest.raises(ValueError, match="task t: 2 predictions for 3 examples"):
        metrics.score_split(["accuracy"], metrics.ScoringInput([1, 0], given.examples, None, "t"))
    with pytest.raises(ValueError, match="prediction 0 = 5 is not a choice index"):
        metrics.score_split(["record"], metrics.ScoringInput([5], perfect_input("record").examples, None, "t"))


def test_every_task_config_names_registered_metrics():
    from bench.tasks import available_tasks, task_config

    for task in available_tasks():
        cfg = task_config(task)
        names = [cfg["metric"]] if isinstance(cfg["metric"], str) else cfg["metric"]
        assert set(names) <= set(metrics.METRICS), task
        assert cfg["primary_metric"] in {k for n in names for k in metrics.METRICS[n].keys}, task


def test_metrics_module_does_not_import_the_task_layer():
    # base.py imports the registry; a reverse import (even under TYPE_CHECKING) was a cycle
    source = Path(metrics.__file__).read_text(encoding="utf-8")
    assert "bench.tasks.base" not in source and "TaskData" not in source
