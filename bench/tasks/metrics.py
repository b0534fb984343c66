"""Official task metrics as small pure functions over maintained libraries (no network).

scikit-learn (accuracy, F1), seqeval (entity-level F1), sacrebleu (corpus BLEU) and rouge-score
(ROUGE) are called directly: ``evaluate.load`` would fetch the metric scripts from the Hub.
Every value is a float in [0, 1]; BLEU is sacrebleu's score / 100.

The registry (:data:`METRICS`) is the one place a metric's direction is declared: checkpoint selection,
convergence stopping, the protocol's choice, the Optuna objective and the report all ask
:func:`metric_direction` / :func:`orient` which way is better.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

_PUNCTUATION = frozenset(string.punctuation)


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of exact matches (sklearn's ``accuracy_score`` to the last bit; counted here because importing
    sklearn.metrics costs a run process about a second, and most runs need nothing else from it)."""
    if len(predictions) != len(labels):
        raise ValueError(f"accuracy: {len(predictions)} predictions for {len(labels)} labels")
    return sum(int(p == g) for p, g in zip(predictions, labels)) / len(labels)


def f1_macro(predictions: Sequence[int], labels: Sequence[int], invalid: int | None = None) -> float:
    """Unweighted mean of per-class F1 (CB), over the classes present in labels or predictions.

    ``invalid`` (a text-to-text generation naming no label) is not a class: as in T5's scoring, the
    mean runs over the task's classes only, so an invalid prediction costs its gold class recall
    and adds no fourth class of F1 0.
    """
    from sklearn.metrics import f1_score

    classes = sorted({*labels, *predictions} - {invalid})
    return float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0))


def multirc_f1a_em(predictions: Sequence[int], labels: Sequence[int], groups: Sequence[Hashable]) -> dict[str, float]:
    """MultiRC: F1a = binary F1 over all answer-options; EM = share of questions all right.

    A prediction other than 0 or 1 (a text-to-text generation naming no label) does not say "true":
    for F1a it is a negative answer; for EM it is wrong.
    """
    from sklearn.metrics import f1_score

    said_true = [int(pred == 1) for pred in predictions]
    f1a = f1_score(labels, said_true, average="binary", pos_label=1, zero_division=0)
    right: dict[Hashable, bool] = defaultdict(lambda: True)
    for pred, label, group in zip(predictions, labels, groups):
        right[group] &= pred == label
    return {"f1a": float(f1a), "em": sum(right.values()) / len(right)}


def normalize_answer(text: str) -> str:
    """SQuAD/ReCoRD answer normalisation: lower case, drop punctuation, articles, extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def record_f1_em(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """ReCoRD (official script): token F1 / exact match after normalisation, max over golds."""
    f1 = em = 0.0
    for prediction, golds in zip(predictions, answers):
        f1 += max(_token_f1(prediction, g) for g in golds)
        em += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
    return {"f1": f1 / len(predictions), "em": em / len(predictions)}


def seqeval_f1(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision / recall / F1 (seqeval default = conlleval) over BIO tags."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    pred, gold = [list(p) for p in predictions], [list(r) for r in references]
    return {
        "f1": float(f1_score(gold, pred, zero_division=0)),
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
    }


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu corpus BLEU against all references of each input (variable count) / 100."""
    import sacrebleu

    width = max(len(refs) for refs in references)
    # sacrebleu takes reference *streams*; None pads inputs that have fewer references.
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    return float(sacrebleu.corpus_bleu(list(predictions), streams).score / 100.0)


def rouge(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    types: Sequence[str] = ("rougeL",),
    use_stemmer: bool = True,
) -> dict[str, float]:
    """Mean ROUGE F-measure (rouge-score), best reference per input."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    totals = dict.fromkeys(types, 0.0)
    for prediction, refs in zip(predictions, references):
        scores = scorer.score_multi(list(refs), prediction)
        for name in types:
            totals[name] += scores[name].fmeasure
    return {name: total / len(predictions) for name, total in totals.items()}


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class ScoringInput:
    """What a metric sees: one split's predictions and examples, the task's names."""

    predictions: list
    examples: list[dict]
    label_names: list[str] | None
    task: str
    invalid: int | None = None  # text-to-text: the prediction for a generation that names no label

    def column(self, key: str) -> list:
        return [example[key] for example in self.examples]


MAXIMIZE, MINIMIZE = "maximize", "minimize"
DIRECTIONS = (MAXIMIZE, MINIMIZE)
"""Which way a metric is better (the words Optuna's ``direction`` takes)."""
AGGREGATIONS = ("mean",)
"""How scores of one metric combine over seeds and tasks: the arithmetic mean (the only one in use)."""


@dataclass(frozen=True)
class Metric:
    """A metric a task config can name: the result keys it produces, how to compute them, which way
    every one of those keys is better and how its scores combine over seeds and tasks."""

    keys: tuple[str, ...]
    score: Callable[[ScoringInput], dict[str, float]]
    direction: str = MAXIMIZE
    aggregation: str = "mean"
    # scores label or choice indices, so a text-to-text run may hand it ScoringInput.invalid
    scores_indices: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS or self.aggregation not in AGGREGATIONS:
            raise ValueError(f"metric {self.keys}: direction {self.direction!r} / aggregation {self.aggregation!r}")


def _choice_texts(given: ScoringInput) -> list[str]:
    """ReCoRD: the candidate entity each predicted choice index points at; an invalid one, no answer."""
    out = []
    for i, (pred, ex) in enumerate(zip(given.predictions, given.examples)):
        if given.invalid is not None and int(pred) == given.invalid:
            out.append("")  # scores 0 F1 and 0 EM against any answer: counted wrong
            continue
        if not 0 <= int(pred) < len(ex["entities"]):
            raise ValueError(f"task {given.task}: prediction {i} = {pred} is not a choice index")
        out.append(ex["entities"][int(pred)])
    return out


def _tag_names(given: ScoringInput) -> list[list[str]]:
    """NER: predicted tag ids -> tag names, one per word of each example."""
    out = []
    for i, (pred, ex) in enumerate(zip(given.predictions, given.examples)):
        if len(pred) != len(ex["tokens"]):
            raise ValueError(f"task {given.task}: prediction {i} has {len(pred)} tags for {len(ex['tokens'])} tokens")
        out.append([given.label_names[int(t)] for t in pred])
    return out


def _seqeval(given: ScoringInput) -> dict[str, float]:
    gold = [[given.label_names[t] for t in tags] for tags in given.column("tags")]
    return seqeval_f1(_tag_names(given), gold)


def _rouge_metric(name: str) -> Metric:
    return Metric((name,), lambda g: rouge(g.predictions, g.column("references"), (name,)))


# The only list of metrics: a task config's ``metric`` entries are keys of this registry.
METRICS: dict[str, Metric] = {
    "accuracy": Metric(
        ("accuracy",), lambda g: {"accuracy": accuracy(g.predictions, g.column("label"))}, scores_indices=True
    ),
    # 1 - accuracy: the error rate some papers report; lower is better
    "error_rate": Metric(
        ("error_rate",),
        lambda g: {"error_rate": 1 - accuracy(g.predictions, g.column("label"))},
        MINIMIZE,
        scores_indices=True,
    ),
    "f1_macro": Metric(
        ("f1_macro",),
        lambda g: {"f1_macro": f1_macro(g.predictions, g.column("label"), g.invalid)},
        scores_indices=True,
    ),
    "multirc": Metric(
        ("f1a", "em"),
        lambda g: multirc_f1a_em(g.predictions, g.column("label"), g.column("group")),
        scores_indices=True,
    ),
    "record": Metric(("f1", "em"), lambda g: record_f1_em(_choice_texts(g), g.column("answers")), scores_indices=True),
    "seqeval": Metric(("f1", "precision", "recall"), _seqeval),
    "bleu": Metric(("bleu",), lambda g: {"bleu": bleu(g.predictions, g.column("references"))}),
    **{name: _rouge_metric(name) for name in ("rouge1", "rouge2", "rougeL")},
}


def metric_of(key: str) -> Metric:
    """The registered metric producing result key ``key`` (e.g. ``"f1"``, ``"rougeL"``).

    Raises ValueError naming the known keys when none does, or when two metrics that produce it
    disagree on its direction or aggregation (the registry must declare each key one way).
    """
    owners = [metric for metric in METRICS.values() if key in metric.keys]
    if not owners:
        known = sorted({k for metric in METRICS.values() for k in metric.keys})
        raise ValueError(f"unknown metric key {key!r} (known: {known})")
    if len({(m.direction, m.aggregation) for m in owners}) > 1:
        raise ValueError(f"metric key {key!r}: registered with different directions or aggregations")
    return owners[0]


def metric_direction(key: str) -> str:
    """``"maximize"`` or ``"minimize"``: which way result key ``key`` is better (see :func:`metric_of`)."""
    return metric_of(key).direction


def orient(key: str, value: float) -> float:
    """``value`` turned so that larger is better for ``key``: itself, or its negative for a lower-is-better
    key. Every "best" in the harness is the maximum of oriented scores."""
    return value if metric_direction(key) == MAXIMIZE else -value


def score_split(metric_names: Sequence[str], given: ScoringInput) -> dict[str, float]:
    """Compute every metric in ``metric_names`` (keys of METRICS) for one split."""
    if len(given.predictions) != len(given.examples):
        raise ValueError(f"task {given.task}: {len(given.predictions)} predictions for {len(given.examples)} examples")
    if not given.examples:
        raise ValueError(f"task {given.task}: nothing to score")
    result: dict[str, float] = {}
    for name in metric_names:
        if name not in METRICS:
            raise ValueError(f"task {given.task}: unknown metric {name!r} (have {sorted(METRICS)})")
        result.update(METRICS[name].score(given))
    return result
