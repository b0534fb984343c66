"""The real data files in ../shared/data load with the published counts and label sets."""
from collections import Counter
from pathlib import Path

import pytest

from bench.tasks import load_task, task_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")


def load(name: str, folder: str, **overrides):
    return load_task(task_config(name, data_dir=str(SHARED / folder), **overrides))


@pytest.mark.parametrize("name, folder, train, validation, labels", [
    ("rte", "superglue/RTE", 2490, 277, ["entailment", "not_entailment"]),
    ("cb", "superglue/CB", 250, 56, ["entailment", "contradiction", "neutral"]),
])
def test_full_superglue_files(name, folder, train, validation, labels):
    data = load(name, folder)
    assert (data.counts["train"], data.counts["validation"]) == (train, validation)
    assert data.label_names == labels
    assert data.absent_splits == ["test"]  # test.jsonl is not shipped (and is unlabeled)
    for split in ("train", "validation"):
        assert {ex["label"] for ex in data.splits[split]} == set(range(len(labels)))
    gold = [ex["label"] for ex in data.splits["validation"]]
    assert data.compute_metrics(gold, "validation")["accuracy"] == 1.0


def test_cb_validation_label_distribution():
    counts = Counter(ex["label"] for ex in load("cb", "superglue/CB").splits["validation"])
    assert counts == {0: 23, 1: 28, 2: 5}  # entailment / contradiction / neutral


@pytest.mark.parametrize("name, folder, examples, labels", [
    ("boolq", "superglue/BoolQ", 32, {0, 1}),
    ("copa", "superglue/COPA", 32, {0, 1}),
    ("wic", "superglue/WiC", 32, {0, 1}),
    ("wsc", "superglue/WSC", 32, {1}),          # FewGLUE's 32 WSC examples are all positive
    ("multirc", "superglue/MultiRC", 154, {0, 1}),
    ("record", "superglue/ReCoRD", 32, None),
])
def test_32_example_files(name, folder, examples, labels):
    data = load(name, folder)
    assert data.counts["records_train"] == 32
    assert data.counts["train"] == examples
    assert data.absent_splits == ["validation", "test"]
    if labels is not None:
        assert {ex["label"] for ex in data.splits["train"]} == labels
    if name in ("wic", "wsc"):
        assert all("*" in ex["text"] for ex in data.splits["train"])
    if name == "record":
        assert all(ex["entities"][ex["label"]] in ex["answers"] for ex in data.splits["train"])


def test_conll2003_dev_sentences():
    data = load("conll2003", "ner/conll2003", files={"train": ["dev.txt"], "validation": ["dev.txt"]})
    assert data.counts["validation"] == 3250
    tags = {data.label_names[t] for ex in data.splits["validation"] for t in ex["tags"]}
    assert tags == set(data.label_names)
    gold = [ex["tags"] for ex in data.splits["validation"]]
    assert data.compute_metrics(gold, "validation")["f1"] == 1.0


def test_e2e_dev_inputs():
    data = load("e2e", "generation/e2e", files={"train": ["devset.csv"], "validation": ["devset.csv"]})
    assert data.counts["validation"] == 547 and data.counts["records_validation"] == 4672
    assert sum(len(ex["references"]) for ex in data.splits["validation"]) <= 4672
    first = data.splits["validation"][0]
    assert first["source"] == "name[Alimentum], area[city centre], familyFriendly[no]"
    assert len(first["references"]) > 1
