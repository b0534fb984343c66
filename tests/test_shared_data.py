"""The real data files in ../shared/data load with the published counts and label sets."""

import os
from collections import Counter
from pathlib import Path

import pytest

from bench.tasks import load_task, task_config

# beside the checkout as in the project layout; SOFTPROMPT_SHARED_DATA points elsewhere (a git worktree)
SHARED = Path(os.environ.get("SOFTPROMPT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")


def load(name: str, folder: str, **overrides):
    return load_task(task_config(name, data_dir=str(SHARED / folder), **overrides))


@pytest.mark.parametrize(
    "name, folder, train, validation, labels",
    [
        ("rte", "superglue/RTE", 2490, 277, ["entailment", "not_entailment"]),
        ("cb", "superglue/CB", 250, 56, ["entailment", "contradiction", "neutral"]),
    ],
)
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


@pytest.mark.parametrize(
    "name, folder, examples, labels",
    [
        ("boolq", "superglue/BoolQ", 32, {0, 1}),
        ("copa", "superglue/COPA", 32, {0, 1}),
        ("wic", "superglue/WiC", 32, {0, 1}),
        ("wsc", "superglue/WSC", 32, {1}),  # FewGLUE's 32 WSC examples are all positive
        ("multirc", "superglue/MultiRC", 154, {0, 1}),
        ("record", "superglue/ReCoRD", 32, None),
    ],
)
def test_32_example_files(name, folder, examples, labels):
    data = load(name, folder)
    assert data.counts["rows_train"] == 32
    assert data.counts["train"] == examples
    assert data.absent_splits == ["validation", "test"]
    if labels is not None:
        assert {ex["label"] for ex in data.splits["train"]} == labels
    if name in ("wic", "wsc"):
        assert all("*" in ex["text"] for ex in data.splits["train"])
    if name == "record":
        assert all(ex["entities"][ex["label"]] in ex["answers"] for ex in data.splits["train"])


def test_conll2003_train_sentences_two_and_four_columns(tmp_path):
    data = load("conll2003", "ner/conll2003")
    assert data.counts["rows_train"] == data.counts["train"] == 14041
    assert data.splits["train"][0]["tokens"][:3] == ["EU", "rejects", "German"]
    # the same sentences in the original eng.train layout: -DOCSTART-, token POS chunk NER
    lines = (SHARED / "ner/conll2003/train.txt").read_text(encoding="utf-8").splitlines()
    four = ["-DOCSTART- -X- -X- O", ""] + [
        f"{line.split()[0]} NN I-NP {line.split()[1]}" if line.strip() else "" for line in lines
    ]
    (tmp_path / "eng.train").write_text("\n".join(four) + "\n", encoding="utf-8")
    original = load_task(task_config("conll2003", data_dir=str(tmp_path)))
    assert original.counts["train"] == 14041
    assert original.splits["train"] == data.splits["train"]


def test_webnlg_train_and_dev_release(capsys):
    data = load("webnlg", "generation/webnlg")
    counts = data.counts
    assert counts["rows_train"] == 6940 and counts["skipped_train"] == 0
    # entries with the same modified triple set are merged into one input holding all references
    assert counts["train"] == len({ex["source"] for ex in data.splits["train"]}) < 6940
    # two dev entries have only empty <lex>: skipped, counted and named, never fatal
    assert counts["rows_validation"] + counts["skipped_validation"] == 872
    assert counts["skipped_validation"] == 2
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert any("dev/3triples/SportsTeam.xml: entry Id4: no usable reference" in line for line in warned)
    assert any("dev/5triples/Food.xml: entry Id9: no usable reference" in line for line in warned)
    assert all(ref.strip() for split in data.splits.values() for ex in split for ref in ex["references"])
    assert data.absent_splits == ["test"]


def test_conll2003_dev_sentences():
    data = load("conll2003", "ner/conll2003", files={"train": ["dev.txt"], "validation": ["dev.txt"]})
    assert data.counts["validation"] == 3250
    tags = {data.label_names[t] for ex in data.splits["validation"] for t in ex["tags"]}
    assert tags == set(data.label_names)
    gold = [ex["tags"] for ex in data.splits["validation"]]
    assert data.compute_metrics(gold, "validation")["f1"] == 1.0


def test_e2e_dev_inputs():
    data = load("e2e", "generation/e2e", files={"train": ["devset.csv"], "validation": ["devset.csv"]})
    assert data.counts["validation"] == 547 and data.counts["rows_validation"] == 4672
    assert sum(len(ex["references"]) for ex in data.splits["validation"]) <= 4672
    first = data.splits["validation"][0]
    assert first["source"] == "name[Alimentum], area[city centre], familyFriendly[no]"
    assert len(first["references"]) > 1
