"""Wording perturbations (bench.tasks.wording, ``metrics.wording``): each rewrite changes the input a
model reads and never a label, an answer, a reference, a tag or an entity span."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bench.runner import config_hash, execute
from bench.tasks import load_task
from bench.tasks.wording import NEUTRAL_PREFIX, PERTURBATIONS, perturb_example, perturbations_for
from tests.conftest import compose

CLASSIFICATION = {"text": "The cat sat on the mat.", "text_pair": "A cat sat.", "label": 1, "id": 4}
CHOICE = {  # ReCoRD-like: the prediction is a choice index scored against entities/answers
    "pairs": [["Paris is big. Who?", "Paris"], ["Paris is big. Who?", "France"]],
    "label": 0,
    "entities": ["Paris", "France"],
    "answers": ["Paris"],
}
NER = {"tokens": ["EU", "rejects", "German", "call", "."], "tags": [3, 0, 7, 0, 0]}
GENERATION = {"source": "The council met on Monday. It voted.", "references": ["Council votes."]}  # XSum-like
EXAMPLES = {
    "classification": CLASSIFICATION,
    "multiple_choice": CHOICE,
    "token_classification": NER,
    "generation": GENERATION,
}
TARGETS = {"label", "id", "entities", "answers", "tags", "references"}


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in EXAMPLES for name in perturbations_for(kind)])
def test_a_perturbation_keeps_every_target_and_changes_only_the_input(kind, name):
    example = EXAMPLES[kind]
    out = perturb_example(example, kind, name)
    assert {k: out[k] for k in TARGETS & set(example)} == {k: example[k] for k in TARGETS & set(example)}
    assert out != example  # the input did change
    assert set(out) == set(example)
    assert example == EXAMPLES[kind]  # the original is left alone


@pytest.mark.parametrize("name", perturbations_for("token_classification"))
def test_ner_perturbations_keep_every_entity_span(name):
    out = perturb_example(NER, "token_classification", name)
    assert len(out["tokens"]) == len(NER["tokens"]) and out["tags"] == NER["tags"]
    assert [w.lower() for w in out["tokens"]] == [w.lower() for w in NER["tokens"]]  # the same words, one by one


def test_span_moving_rewrites_are_refused_for_ner_and_the_prefix_goes_before_the_first_text_only():
    assert "neutral_prefix" not in perturbations_for("token_classification")
    with pytest.raises(ValueError, match="not defined for token_classification"):
        perturb_example(NER, "token_classification", "neutral_prefix")
    out = perturb_example(CLASSIFICATION, "classification", "neutral_prefix")
    assert out["text"] == NEUTRAL_PREFIX + CLASSIFICATION["text"] and out["text_pair"] == CLASSIFICATION["text_pair"]
    choice = perturb_example(CHOICE, "multiple_choice", "neutral_prefix")
    assert [pair[1] for pair in choice["pairs"]] == ["Paris", "France"]  # the choices themselves unchanged
    assert set(perturbations_for("classification")) == set(PERTURBATIONS)


@pytest.mark.parametrize("task_name", ["synth_cls", "synth_ner", "synth_d2t"])
def test_every_example_of_a_synthetic_task_keeps_its_targets(task_name):
    task = load_task(OmegaConf.to_container(compose([f"task={task_name}"], hydra_node=False)["task"], resolve=True))
    for name in perturbations_for(task.kind):
        for example in task.splits["validation"]:
            out = perturb_example(example, task.kind, name)
            assert {k: v for k, v in out.items() if k in TARGETS} == {k: v for k, v in example.items() if k in TARGETS}
            if task.kind == "token_classification":
                assert len(out["tokens"]) == len(example["tokens"])


def _config(*overrides: str) -> dict:
    base = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke", *overrides]
    return OmegaConf.to_container(compose(base, hydra_node=False), resolve=True)


def test_a_run_records_each_perturbations_score_outside_its_identity(tmp_path):
    assert config_hash(_config()) == config_hash(_config("trainer.wording_perturbations=true"))
    record = execute(_config("trainer.wording_perturbations=true"), tmp_path)
    assert record["status"] == "ok", record["error"]
    wording = record["metrics"]["wording"]["test"]
    assert wording["clean"] == record["metrics"]["test"]
    assert set(wording) == {"clean", *perturbations_for("classification")}
    assert all(0.0 <= scores["accuracy"] <= 1.0 for scores in wording.values())
    off = execute(_config(), tmp_path / "off")
    assert off["metrics"]["wording"] is None
    assert off["metrics"]["test"] == record["metrics"]["test"]  # the perturbed passes change no score
