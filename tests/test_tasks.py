"""Task loaders on small fixtures written in the original formats (tmp_path), Hub path mocked."""

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.tasks import TASK_KINDS, TaskDataError, available_tasks, cap_eval_splits, load_task, task_config

DESIGN_TASKS = (
    "boolq cb copa rte wic wsc multirc record conll2003 conll2004 ontonotes e2e "
    "webnlg xsum synth_cls synth_ner synth_d2t"
).split()


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load(name: str, **overrides):
    return load_task(task_config(name, **overrides))


# ---------------------------------------------------------------- configs
def test_every_design_task_has_a_config():
    assert sorted(DESIGN_TASKS) == available_tasks()
    for name in DESIGN_TASKS:
        cfg = task_config(name)
        assert cfg["name"] == name and cfg["kind"] in TASK_KINDS
        for key in (
            "loader",
            "metric",
            "primary_metric",
            "max_train_samples",
            "k_shot",
            "max_length",
            "seed",
            "data_dir",
        ):
            assert key in cfg, (name, key)
        assert "max_eval_samples" not in cfg, name  # the one eval cap is trainer.max_eval_samples
        if cfg["kind"] == "generation":
            assert {"num_beams", "max_new_tokens"} <= set(cfg["generation"])
        if cfg["loader"] != "synthetic":
            assert cfg["hub"]["path"], name


def test_config_errors_are_one_line():
    # the same declaration (bench.tasks.config.TaskConfig) and wording a run's settings check uses
    with pytest.raises(TaskDataError, match="task config rte: task.primary_metric='f1' is not allowed"):
        load("rte", primary_metric="f1")
    with pytest.raises(TaskDataError, match="task.loader='nope' is not allowed; allowed: one of conll"):
        load("rte", loader="nope")
    with pytest.raises(TaskDataError, match="task config x: task.kind is missing"):
        load_task({"name": "x", "loader": "synthetic", "metric": "accuracy", "primary_metric": "accuracy"})


def test_accepts_a_dictconfig():
    data = load_task(OmegaConf.create(task_config("synth_cls", n_train=30, n_validation=9, n_test=0)))
    assert data.counts["train"] == 30 and data.absent_splits == ["test"]
    assert isinstance(data.config, dict)


# ---------------------------------------------------------------- SuperGLUE from jsonl
def test_rte_jsonl_string_labels_and_unlabeled_test(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"premise": "A cat sat.", "hypothesis": "An animal sat.", "label": "entailment", "idx": 0},
            {"premise": "A cat sat.", "hypothesis": "A dog sat.", "label": "not_entailment", "idx": 1},
        ],
    )
    write_jsonl(tmp_path / "val.jsonl", [{"premise": "P", "hypothesis": "H", "label": "not_entailment", "idx": 0}])
    write_jsonl(tmp_path / "test.jsonl", [{"premise": "P", "hypothesis": "H", "idx": 0}])
    data = load("rte", data_dir=str(tmp_path))
    assert data.kind == "classification" and data.label_names == ["entailment", "not_entailment"]
    assert data.splits["train"][1] == {"text": "A cat sat.", "text_pair": "A dog sat.", "label": 1, "id": 1}
    assert data.counts["train"] == 2 and data.counts["validation"] == 1
    assert data.absent_splits == ["test"] and "test" not in data.splits
    assert data.compute_metrics([1], "validation") == {"accuracy": 1.0}


def test_train32_is_used_when_train_is_absent(tmp_path):
    write_jsonl(
        tmp_path / "train32.jsonl",
        [
            {"question": "is it?", "passage": "It is.", "label": True, "idx": 3},
            {"question": "is it not?", "passage": "It is.", "label": False, "idx": 4},
        ],
    )
    data = load("boolq", data_dir=str(tmp_path))
    assert [ex["label"] for ex in data.splits["train"]] == [1, 0]
    assert data.absent_splits == ["validation", "test"]
    assert data.counts["rows_train"] == 2


def test_cb_three_labels_and_metrics(tmp_path):
    rows = [
        {"premise": "p", "hypothesis": h, "label": h, "idx": i}
        for i, h in enumerate(["entailment", "contradiction", "neutral"])
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "val.jsonl", rows)
    data = load("cb", data_dir=str(tmp_path))
    assert [ex["label"] for ex in data.splits["validation"]] == [0, 1, 2] and data.num_labels == 3
    assert data.compute_metrics([0, 1, 2], "validation") == {"accuracy": 1.0, "f1_macro": 1.0}
    assert data.compute_metrics([0, 1, 1], "validation")["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_copa_multiple_choice_with_connectives(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "premise": "The glass broke.",
                "choice1": "It fell.",
                "choice2": "It was new.",
                "question": "cause",
                "label": 0,
                "idx": 1,
            },
            {
                "premise": "I was cold.",
                "choice1": "I ate.",
                "choice2": "I wore a coat.",
                "question": "effect",
                "label": 1,
                "idx": 2,
            },
        ],
    )
    data = load("copa", data_dir=str(tmp_path))
    first, second = data.splits["train"]
    assert first["pairs"] == [["The glass broke.", "because It fell."], ["The glass broke.", "because It was new."]]
    assert second["pairs"][1] == ["I was cold.", "so I wore a coat."] and second["label"] == 1
    assert data.kind == "multiple_choice" and data.label_names is None
    assert data.num_labels == 2  # the most choices an example offers: text-to-text's choice1, choice2


def test_wic_marks_the_target_word_from_offsets(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "word": "feel",
                "sentence1": "You make me feel naked.",
                "sentence2": "She felt small.",
                "start1": 12,
                "end1": 16,
                "start2": 4,
                "end2": 8,
                "label": True,
                "idx": 0,
            }
        ],
    )
    ex = load("wic", data_dir=str(tmp_path)).splits["train"][0]
    assert ex["text"] == "You make me *feel* naked."
    assert ex["text_pair"] == "She *felt* small."
    assert ex["label"] == 1


def test_wsc_marks_both_spans_from_word_indices(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "text": "The city councilmen refused the demonstrators a permit because they advocated violence.",
                "target": {"span1_index": 4, "span1_text": "The demonstrators", "span2_index": 9, "span2_text": "they"},
                "label": True,
                "idx": 16,
            },
            {
                "text": 'The pony threw him over. "Good for him," he said.',
                "target": {"span1_index": 1, "span1_text": "pony", "span2_index": 7, "span2_text": "him"},
                "label": False,
                "idx": 2,
            },
        ],
    )
    first, second = load("wsc", data_dir=str(tmp_path)).splits["train"]
    assert first["text"] == (
        "The city councilmen refused *the demonstrators* a permit because #they# advocated violence."
    )
    assert second["text"] == 'The *pony* threw him over. "Good for #him#," he said.'
    assert (first["label"], second["label"]) == (1, 0)


def test_wsc_span_that_does_not_match_is_an_error(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "text": "Anna met Paul and she smiled.",
                "target": {"span1_index": 0, "span1_text": "Mary", "span2_index": 4, "span2_text": "she"},
                "label": True,
                "idx": 0,
            }
        ],
    )
    with pytest.raises(TaskDataError, match=r"train.jsonl:1: field 'span1_text'"):
        load("wsc", data_dir=str(tmp_path))


MULTIRC_ROW = {
    "idx": 6,
    "passage": {
        "text": "Jason objects.",
        "questions": [
            {
                "question": "What does Jason do?",
                "idx": 0,
                "answers": [{"text": "He objects", "idx": 0, "label": 1}, {"text": "He sings", "idx": 1, "label": 0}],
            },
            {"question": "Who objects?", "idx": 1, "answers": [{"text": "Jason", "idx": 2, "label": 1}]},
        ],
    },
}


def test_multirc_one_example_per_answer_option_grouped_by_question(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [MULTIRC_ROW])
    write_jsonl(tmp_path / "val.jsonl", [MULTIRC_ROW])
    data = load("multirc", data_dir=str(tmp_path))
    examples = data.splits["validation"]
    assert [ex["group"] for ex in examples] == ["6-0", "6-0", "6-1"]
    assert examples[0]["text"] == "Jason objects." and examples[0]["text_pair"] == "What does Jason do? He objects"
    assert data.counts["rows_validation"] == 1 and data.counts["validation"] == 3
    assert data.compute_metrics([1, 0, 1], "validation") == {"f1a": 1.0, "em": 1.0}
    assert data.compute_metrics([1, 1, 1], "validation") == pytest.approx({"f1a": 0.8, "em": 0.5})
    # the eval cap never cuts a question in half: 1 or 2 keep question 6-0 whole
    for limit, kept in ((1, 2), (2, 2), (3, 3)):
        capped = load("multirc", data_dir=str(tmp_path))
        cap_eval_splits(capped, limit)
        assert [ex["group"] for ex in capped.splits["validation"]] == ["6-0", "6-0", "6-1"][:kept]
        assert capped.counts["validation"] == kept


RECORD_TEXT = "Chelsea beat Olimpija 2-1.\n@highlight\nCosta scored for Chelsea"


def record_row(answers=True):
    qa = {"query": "@placeholder won the game.", "idx": 7}
    if answers:
        qa["answers"] = [{"start": 0, "end": 6, "text": "Chelsea"}]
    return {
        "idx": 1,
        "passage": {
            "text": RECORD_TEXT,
            "entities": [
                {"start": 0, "end": 6},
                {"start": 13, "end": 20},
                {"start": 38, "end": 42},
                {"start": 55, "end": 61},
            ],
        },
        "qas": [qa],
    }


def test_record_candidates_fill_the_placeholder(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [record_row()])
    write_jsonl(tmp_path / "val.jsonl", [record_row()])
    write_jsonl(tmp_path / "test.jsonl", [record_row(answers=False)])
    data = load("record", data_dir=str(tmp_path))
    ex = data.splits["validation"][0]
    assert ex["entities"] == ["Chelsea", "Costa", "Olimpija"]  # deduplicated
    assert ex["pairs"][2] == ["Chelsea beat Olimpija 2-1.\n- Costa scored for Chelsea", "Olimpija won the game."]
    assert ex["label"] == 0 and ex["answers"] == ["Chelsea"]
    assert data.absent_splits == ["test"]
    assert data.compute_metrics([0], "validation") == {"f1": 1.0, "em": 1.0}
    assert data.compute_metrics([1], "validation") == {"f1": 0.0, "em": 0.0}
    # text-to-text: a generation naming no candidate is the invalid index num_labels, scored as no answer
    assert data.num_labels == 3 and data.compute_metrics([3], "validation", invalid=3) == {"f1": 0.0, "em": 0.0}


# ---------------------------------------------------------------- SuperGLUE from the Hub (mocked)
def hub_mock(monkeypatch, splits: dict, features=None, seen=None):
    import datasets

    def fake_load_dataset(path, **kwargs):
        if seen is not None:
            seen.append((path, kwargs))
        return datasets.DatasetDict(
            {name: datasets.Dataset.from_list(rows, features=features) for name, rows in splits.items()}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)


def test_hub_class_ids_map_to_the_same_label_set(monkeypatch, tmp_path):
    import datasets

    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "idx": datasets.Value("int32"),
            "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
        }
    )
    seen = []
    hub_mock(
        monkeypatch,
        {
            "train": [{"premise": "p", "hypothesis": "h", "idx": 0, "label": 1}],
            "validation": [{"premise": "p", "hypothesis": "h", "idx": 0, "label": 0}],
            "test": [{"premise": "p", "hypothesis": "h", "idx": 0, "label": -1}],
        },
        features,
        seen,
    )
    hub = load("rte")
    assert seen == [("aps/super_glue", {"name": "rte"})]
    write_jsonl(tmp_path / "train.jsonl", [{"premise": "p", "hypothesis": "h", "label": "not_entailment", "idx": 0}])
    local = load("rte", data_dir=str(tmp_path))
    assert hub.label_names == local.label_names
    assert hub.splits["train"][0]["label"] == local.splits["train"][0]["label"] == 1
    assert hub.absent_splits == ["test"]


def test_hub_row_schemas_of_nested_tasks(monkeypatch):
    hub_mock(
        monkeypatch,
        {
            "train": [
                {
                    "paragraph": "Jason objects.",
                    "question": "Who?",
                    "answer": "Jason",
                    "idx": {"paragraph": 6, "question": 1, "answer": 2},
                    "label": 1,
                }
            ]
        },
    )
    assert load("multirc").splits["train"][0]["group"] == "6-1"
    hub_mock(
        monkeypatch,
        {
            "train": [
                {
                    "passage": "Costa scored.",
                    "query": "@placeholder scored.",
                    "entities": ["Costa"],
                    "entity_spans": {"text": ["Costa"], "start": [0], "end": [5]},
                    "answers": ["Costa"],
                    "idx": {"passage": 0, "query": 0},
                }
            ]
        },
    )
    assert load("record").splits["train"][0]["pairs"] == [["Costa scored.", "Costa scored."]]
    hub_mock(
        monkeypatch,
        {
            "train": [
                {
                    "text": "Billy cried because Toby would not share his toy.",
                    "span1_index": 3,
                    "span2_index": 7,
                    "span1_text": "Toby",
                    "span2_text": "his",
                    "idx": 9,
                    "label": 1,
                }
            ]
        },
    )
    assert load("wsc").splits["train"][0]["text"] == "Billy cried because *Toby* would not share #his# toy."


def test_hub_failure_is_one_line(monkeypatch):
    import datasets

    def boom(path, **kwargs):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(TaskDataError, match="hub aps/super_glue/rte: load_dataset failed") as info:
        load("rte")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n{not json\n',
            r"train.jsonl:2:2: malformed JSON: Expecting property name enclosed in double quotes$",
        ),
        (
            '{"premise": "p", "hypothesis": "h", "label": "entailment"} x\n',
            r"train.jsonl:1:60: malformed JSON: Extra data$",
        ),
        ('{"premise": "p", "label": "entailment"}\n', r"train.jsonl:1: missing field 'hypothesis'"),
        (
            '{"premise": "p", "hypothesis": "h", "label": "maybe"}\n',
            r"train.jsonl:1: field 'label' has unknown label 'maybe'",
        ),
        ("\n", r"train.jsonl: empty split"),
        (
            '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n{"premise": "p", "hypothesis": "h"}\n',
            r"train.jsonl:2: missing field 'label'",
        ),
    ],
)
def test_bad_superglue_input(tmp_path, content, message):
    (tmp_path / "train.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(TaskDataError, match=message) as info:
        load("rte", data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_missing_directory_and_missing_train_file(tmp_path):
    with pytest.raises(TaskDataError, match="does not exist"):
        load("rte", data_dir=str(tmp_path / "nope"))
    with pytest.raises(
        TaskDataError,
        match=r"missing file: none of \['train.jsonl', 'train32.jsonl'\] \(train\) "
        r"nor of \['val.jsonl'\]",
    ):
        load("rte", data_dir=str(tmp_path))
    assert issubclass(TaskDataError, ValueError)


# ---------------------------------------------------------------- options
def synth_rows(n):
    return [
        {"premise": f"p{i}", "hypothesis": "h", "label": ["entailment", "not_entailment"][i % 2], "idx": i}
        for i in range(n)
    ]


def test_k_shot_is_per_class_and_seeded(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", synth_rows(40))
    data = load("rte", data_dir=str(tmp_path), k_shot=4, seed=1)
    labels = [ex["label"] for ex in data.splits["train"]]
    assert sorted(labels) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data.counts["source_train"] == 40 and data.counts["train"] == 8
    again = load("rte", data_dir=str(tmp_path), k_shot=4, seed=1)
    other = load("rte", data_dir=str(tmp_path), k_shot=4, seed=2)
    assert again.splits == data.splits and other.splits != data.splits
    with pytest.raises(TaskDataError, match="k_shot=30 but class 0 has 20"):
        load("rte", data_dir=str(tmp_path), k_shot=30)


def test_max_samples(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", synth_rows(40))
    write_jsonl(tmp_path / "val.jsonl", synth_rows(10))
    data = load("rte", data_dir=str(tmp_path), max_train_samples=7)
    cap_eval_splits(data, 3)
    assert data.counts["train"] == 7 and data.counts["validation"] == 3
    assert [ex["id"] for ex in data.splits["validation"]] == [0, 1, 2]
    assert data.config["max_length"] == 128


# ---------------------------------------------------------------- NER
CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_columns_docstart_and_iob1(tmp_path):
    (tmp_path / "eng.train").write_text(CONLL_IOB1, encoding="utf-8")
    (tmp_path / "eng.testa").write_text("Paris\tB-LOC\nis\tO\n\n", encoding="utf-8")
    data = load("conll2003", data_dir=str(tmp_path))
    names = data.label_names
    first, second = data.splits["train"]
    assert first["tokens"] == ["EU", "rejects", "German", "call", "."]
    assert [names[t] for t in first["tags"]] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert [names[t] for t in second["tags"]] == ["B-PER", "I-PER"]
    assert data.counts["validation"] == 1 and data.absent_splits == ["test"]
    assert data.compute_metrics([[5, 0]], "validation") == {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    with pytest.raises(ValueError, match="1 tags for 2 tokens"):
        data.compute_metrics([[5]], "validation")


@pytest.mark.parametrize(
    "content, message",
    [
        ("EU B-ORG\nrejects\n", r"train.txt:2: 1 columns, expected 2 like the file's first word line .*'rejects'"),
        ("EU B-ORG\n\nPeter B-PER\nBlackburn I-PER x\n", r"train.txt:4: 3 columns, expected 2 .*'Blackburn I-PER x'"),
        ("EU\n", r"train.txt:1: 1 columns, but task.tag_column only knows files with \[2, 4\] columns"),
        ("EU B-ORG\nsays O\nhi B-XYZ\n", r"train.txt:3: tag 'B-XYZ' is not one of \['O'"),
        ("-DOCSTART- O\n\n", r"train.txt: empty split"),
    ],
)
def test_bad_conll_input(tmp_path, content, message):
    (tmp_path / "train.txt").write_text(content, encoding="utf-8")
    with pytest.raises(TaskDataError, match=message) as info:
        load("conll2003", data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_conll_four_columns_a_line_that_lost_its_tag_is_named(tmp_path):
    # `. . O` (3 columns) in a 4-column file lost its NER tag: reading the chunk tag as NER
    # would train on a wrong label, so it is an error naming the exact line and its content.
    broken = CONLL_IOB1.replace(". . O O", ". . O")
    (tmp_path / "eng.train").write_text(broken, encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"eng.train:7: 3 columns, expected 4 .*'\. \. O'"):
        load("conll2003", data_dir=str(tmp_path))
    # a chunk tag in the NER column: the error names its own line and the value as written (I-NP)
    (tmp_path / "eng.train").write_text(CONLL_IOB1.replace("B-NP I-MISC", "B-NP I-NP"), encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"eng.train:5: tag 'I-NP' is not one of"):
        load("conll2003", data_dir=str(tmp_path))


def test_conll_tag_column_override(tmp_path):
    # token POS NER chunk: a three-column file whose tag sits in the middle
    (tmp_path / "train.txt").write_text("Paris NNP B-LOC B-NP\nis VBZ O B-VP\n", encoding="utf-8")
    data = load("conll2003", data_dir=str(tmp_path), tag_column={4: 2})
    assert [data.label_names[t] for t in data.splits["train"][0]["tags"]] == ["B-LOC", "O"]
    with pytest.raises(TaskDataError, match=r"train.txt:1: task.tag_column=5 is not a tag column of a 4-column"):
        load("conll2003", data_dir=str(tmp_path), tag_column=5)
    assert load("conll2003", data_dir=str(tmp_path), tag_column=-2).splits["train"][0]["tags"] == [5, 0]


def test_conll2004_and_ontonotes_files(tmp_path):
    (tmp_path / "train.txt").write_text("John B-Peop\nSmith I-Peop\nleft O\n", encoding="utf-8")
    assert load("conll2004", data_dir=str(tmp_path)).splits["train"][0]["tags"] == [1, 2, 0]
    (tmp_path / "onto.train.ner").write_text("Boston NNP * B-GPE\n", encoding="utf-8")
    (tmp_path / "train.txt").unlink()
    assert load("ontonotes", data_dir=str(tmp_path)).splits["train"][0]["tags"] == [7]


def test_ner_hub_class_names_and_spans(monkeypatch):
    import datasets

    shuffled = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=shuffled)),
        }
    )
    hub_mock(monkeypatch, {"train": [{"tokens": ["Paris", "Hilton"], "ner_tags": [3, 4]}]}, features)
    data = load("conll2003")
    assert [data.label_names[t] for t in data.splits["train"][0]["tags"]] == ["B-PER", "I-PER"]
    hub_mock(
        monkeypatch,
        {
            "train": [
                {
                    "tokens": ["John", "Smith", "works", "in", "Boston"],
                    "entities": [{"type": "Peop", "start": 0, "end": 2}, {"type": "Loc", "start": 4, "end": 5}],
                    "relations": [],
                    "orig_id": 1,
                }
            ]
        },
    )
    data = load("conll2004")
    assert [data.label_names[t] for t in data.splits["train"][0]["tags"]] == ["B-Peop", "I-Peop", "O", "O", "B-Loc"]


# ---------------------------------------------------------------- generation
def test_e2e_csv_groups_references_by_mr(tmp_path):
    (tmp_path / "trainset.csv").write_text(
        'mr,ref\n"name[A], food[Thai]",A serves Thai food.\n"name[A], food[Thai]","A, a Thai place."\n'
        '"name[B], area[riverside]",B is by the river.\n',
        encoding="utf-8",
    )
    (tmp_path / "devset.csv").write_text('mr,ref\n"name[B], area[riverside]",B is by the river.\n', encoding="utf-8")
    data = load("e2e", data_dir=str(tmp_path))
    assert data.splits["train"][0] == {
        "source": "name[A], food[Thai]",
        "references": ["A serves Thai food.", "A, a Thai place."],
    }
    assert data.counts["train"] == 2 and data.counts["rows_train"] == 3
    assert data.absent_splits == ["test"]
    scores = data.compute_metrics(["B is by the river."], "validation")
    assert scores["bleu"] == pytest.approx(1.0) and scores["rougeL"] == pytest.approx(1.0)
    assert data.config["generation"] == {"num_beams": 5, "max_new_tokens": 64}


@pytest.mark.parametrize(
    "content, message",
    [
        ("meaning,ref\nx,y\n", r"trainset.csv:1: missing column 'mr'"),
        ('mr,ref\n"name[A]",\n', r"trainset.csv:2: field 'ref' is empty"),
    ],
)
def test_bad_e2e_input(tmp_path, content, message):
    (tmp_path / "trainset.csv").write_text(content, encoding="utf-8")
    with pytest.raises(TaskDataError, match=message):
        load("e2e", data_dir=str(tmp_path))


WEBNLG_2017 = """<?xml version="1.0" ?>
<benchmark><entries>
<entry category="Airport" eid="Id1" size="1">
  <originaltripleset><otriple>Aarhus | cityServed | Aarhus</otriple></originaltripleset>
  <modifiedtripleset><mtriple>Aarhus_Airport | cityServed | "Aarhus, Denmark"</mtriple></modifiedtripleset>
  <lex comment="good" lid="Id1">The Aarhus is the airport of Aarhus, Denmark.</lex>
  <lex comment="good" lid="Id2">Aarhus Airport serves the city of Aarhus, Denmark.</lex>
</entry>
</entries></benchmark>
"""
WEBNLG_3 = """<?xml version="1.0" ?>
<benchmark><entries>
<entry category="Food" eid="Id9" size="2">
  <modifiedtripleset><mtriple>Bread | country | France</mtriple>
    <mtriple>France | capital | Paris</mtriple></modifiedtripleset>
  <lex comment="good" lid="Id1"><sortedtripleset/><text>Bread comes from France, whose capital is Paris.</text></lex>
</entry>
</entries></benchmark>
"""


def test_webnlg_xml_release(tmp_path):
    for split, text in (("train", WEBNLG_2017), ("dev", WEBNLG_3), ("test", WEBNLG_3)):
        folder = tmp_path / split / ("1triples" if split != "test" else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}.xml").write_text(text, encoding="utf-8")
    data = load("webnlg", data_dir=str(tmp_path))
    assert data.splits["train"][0] == {
        "source": 'Aarhus Airport : cityServed : "Aarhus, Denmark"',
        "references": [
            "The Aarhus is the airport of Aarhus, Denmark.",
            "Aarhus Airport serves the city of Aarhus, Denmark.",
        ],
    }
    assert data.splits["test"][0]["source"] == "Bread : country : France | France : capital : Paris"
    assert data.absent_splits == []
    # the 2017 release ships an input-only test file next to the one with references
    no_lex = WEBNLG_3.replace(
        '<lex comment="good" lid="Id1"><sortedtripleset/><text>Bread comes from '
        "France, whose capital is Paris.</text></lex>",
        "",
    )
    (tmp_path / "test" / "testdata_no_lex.xml").write_text(no_lex, encoding="utf-8")
    data = load("webnlg", data_dir=str(tmp_path))
    assert data.counts["test"] == 1 and data.counts["unlabeled_files_test"] == 1
    (tmp_path / "test" / "test.xml").unlink()
    assert load("webnlg", data_dir=str(tmp_path)).absent_splits == ["test"]
    (tmp_path / "train" / "1triples" / "train.xml").write_text("<benchmark>\n<entries>\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"train.xml:3:1: malformed XML: no element found$"):
        load("webnlg", data_dir=str(tmp_path))


def test_xsum_original_release(tmp_path):
    (tmp_path / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text(
        json.dumps({"train": ["1", "2"], "validation": ["3"], "test": []}), encoding="utf-8"
    )
    docs = tmp_path / "bbc-summary-data"
    docs.mkdir()
    for i in ("1", "2", "3"):
        (docs / f"{i}.summary").write_text(
            f"[SN]URL[SN]\nhttp://bbc/{i}\n\n[SN]TITLE[SN]\nTitle {i}\n\n[SN]FIRST-SENTENCE[SN]\n"
            f"Summary {i}.\n\n[SN]RESTBODY[SN]\nBody line one.\nBody line two.\n",
            encoding="utf-8",
        )
    data = load("xsum", data_dir=str(tmp_path))
    assert data.splits["validation"] == [{"source": "Body line one.\nBody line two.", "references": ["Summary 3."]}]
    assert data.absent_splits == ["test"]
    assert set(data.compute_metrics(["Summary 3."], "validation")) == {"rouge1", "rouge2", "rougeL", "bleu"}
    (docs / "2.summary").unlink()
    with pytest.raises(TaskDataError, match=r"2.summary: missing file"):
        load("xsum", data_dir=str(tmp_path))
    skipped = load("xsum", data_dir=str(tmp_path), skip_missing_documents=True)
    assert skipped.counts["train"] == 1 and skipped.counts["skipped_train"] == 1


def test_generation_hub_rows(monkeypatch):
    hub_mock(
        monkeypatch,
        {
            "train": [
                {"gem_id": "a", "input": ["A_B | p | C"], "target": "t1", "references": []},
                {"gem_id": "b", "input": ["A_B | p | C"], "target": "t2", "references": []},
            ],
            "validation": [{"gem_id": "c", "input": ["X | p | Y"], "target": "r1", "references": ["r1", "r2"]}],
            "challenge_train_sample": [{"gem_id": "d", "input": ["Q | p | R"], "target": "z", "references": []}],
        },
    )
    data = load("webnlg")
    assert data.splits["train"] == [{"source": "A B : p : C", "references": ["t1", "t2"]}]
    assert data.splits["validation"][0]["references"] == ["r1", "r2"]
    assert data.absent_splits == ["test"]


# ---------------------------------------------------------------- synthetic
@pytest.mark.parametrize("name", ["synth_cls", "synth_ner", "synth_d2t"])
def test_synthetic_is_deterministic_unique_and_sized(name):
    data = load(name, n_train=64, n_validation=32, n_test=16)
    assert [data.counts[s] for s in ("train", "validation", "test")] == [64, 32, 16]
    assert load(name, n_train=64, n_validation=32, n_test=16).splits == data.splits
    assert load(name, n_train=64, n_validation=32, n_test=16, seed=1).splits != data.splits
    keys = [json.dumps(ex, sort_keys=True) for split in data.splits.values() for ex in split]
    assert len(keys) == len(set(keys))


def test_synth_cls_is_balanced_and_relational():
    data = load("synth_cls", n_train=300, n_classes=3)
    labels = [ex["label"] for ex in data.splits["train"]]
    assert [labels.count(i) for i in range(3)] == [100, 100, 100]
    assert data.label_names == ["entailment", "contradiction", "neutral"]
    two = load("synth_cls")
    assert two.label_names == ["entailment", "contradiction"]
    assert [ex["label"] for ex in two.splits["train"]].count(0) == 256
    # entailment and contradiction pairs use the same words: only who-did-what differs
    for ex in two.splits["train"][:50]:
        first = sorted(ex["text"].rstrip(".").split()[:-3])  # drop "at the <place>"
        assert first == sorted(ex["text_pair"].rstrip(".").split())
    perfect = [ex["label"] for ex in data.splits["validation"]]
    assert data.compute_metrics(perfect, "validation") == {"accuracy": 1.0, "f1_macro": 1.0}


def test_synth_ner_and_d2t_metrics():
    ner = load("synth_ner")
    gold = [ex["tags"] for ex in ner.splits["validation"]]
    assert ner.compute_metrics(gold, "validation")["f1"] == 1.0
    assert {ner.label_names[t][2:] for ex in ner.splits["train"] for t in ex["tags"]} == {"", "PER", "ORG", "LOC"}
    d2t = load("synth_d2t")
    refs = [ex["references"][0] for ex in d2t.splits["validation"]]
    assert all(len(ex["references"]) == 2 for ex in d2t.splits["validation"])
    assert d2t.compute_metrics(refs, "validation") == pytest.approx({"bleu": 1.0, "rougeL": 1.0})


def test_configs_compose_under_hydra():
    from hydra import compose, initialize_config_dir

    from bench.tasks import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR.parent), version_base=None):
        cfg = compose(
            overrides=[
                "+task=synth_cls",
                "task.n_train=12",
                "task.n_validation=6",
                "task.n_test=0",
                "task.k_shot=2",
                "task.data_dir=null",
            ]
        )
    data = load_task(cfg.task)
    assert data.counts["source_train"] == 12 and data.counts["train"] == 4  # 2 per class


# ---------------------------------------------------------------- hostile and partial input
WEBNLG_EMPTY_LEX = """<?xml version="1.0" ?>
<benchmark><entries>
<entry category="SportsTeam" eid="Id3" size="1">
  <modifiedtripleset><mtriple>A | league | B</mtriple></modifiedtripleset>
  <lex comment="good" lid="Id1">A plays in B.</lex>
  <lex comment="good" lid="Id2"></lex>
</entry>
<entry category="SportsTeam" eid="Id4" size="1">
  <modifiedtripleset><mtriple>C | league | D</mtriple></modifiedtripleset>
  <lex comment="good" lid="Id1"><text></text></lex>
  <lex comment="good" lid="Id2"> </lex>
</entry>
<entry category="SportsTeam" eid="Id5" size="1">
  <modifiedtripleset><mtriple>A | league | B</mtriple></modifiedtripleset>
  <lex comment="good" lid="Id1">B is the league of A.</lex>
</entry>
</entries></benchmark>
"""


def test_webnlg_entry_without_usable_reference_is_skipped_counted_and_named(tmp_path, capsys):
    for split in ("train", "dev"):
        (tmp_path / split / "1triples").mkdir(parents=True)
        (tmp_path / split / "1triples" / "SportsTeam.xml").write_text(WEBNLG_EMPTY_LEX, encoding="utf-8")
    data = load("webnlg", data_dir=str(tmp_path))
    # Id4 (every <lex> empty) is skipped; Id3 and Id5 share a triple set and merge into one input
    assert data.splits["validation"] == [
        {"source": "A : league : B", "references": ["A plays in B.", "B is the league of A."]}
    ]
    counts = data.counts
    assert (counts["rows_validation"], counts["skipped_validation"], counts["empty_lex_validation"]) == (2, 1, 3)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "Id4" in line]
    assert len(warnings) == 2  # one per split
    assert warnings[1] == (
        f"warning: {tmp_path / 'dev' / '1triples' / 'SportsTeam.xml'}: entry Id4: "
        "no usable reference (2 <lex>, all empty); entry skipped"
    )


def test_generation_evaluation_only_layout(tmp_path):
    evaluation, training = tmp_path / "eval", tmp_path / "elsewhere"
    evaluation.mkdir()
    training.mkdir()
    (evaluation / "devset.csv").write_text('mr,ref\n"name[B]",B is here.\n"name[B]",It is B.\n', encoding="utf-8")
    (evaluation / "testset_w_refs.csv").write_text('mr,ref\n"name[C]",C is here.\n', encoding="utf-8")
    data = load("e2e", data_dir=str(evaluation))
    assert data.absent_splits == ["train"] and "train" not in data.splits
    assert data.splits["validation"] == [{"source": "name[B]", "references": ["B is here.", "It is B."]}]
    assert data.compute_metrics(["C is here."], "test")["bleu"] == pytest.approx(1.0)
    # the documented recipe: evaluate on this folder, train from a file elsewhere (absolute path)
    (training / "trainset.csv").write_text('mr,ref\n"name[A]",A is here.\n', encoding="utf-8")
    files = {"train": [str(training / "trainset.csv")], "validation": ["devset.csv"], "test": ["testset_w_refs.csv"]}
    both = load("e2e", data_dir=str(evaluation), files=files)
    assert both.absent_splits == [] and both.splits["train"][0]["source"] == "name[A]"
    (evaluation / "devset.csv").unlink()
    (evaluation / "testset_w_refs.csv").unlink()
    with pytest.raises(TaskDataError, match=r"missing file: none of \['trainset.csv'\] \(train\)"):
        load("e2e", data_dir=str(evaluation))


def test_wsc_overlapping_spans_nest(tmp_path):
    # val idx 95 of the release: the pronoun "their" is the first word of the noun phrase
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "text": "The girls met their mothers, who waved.",
                "target": {"span1_index": 3, "span1_text": "their mothers", "span2_index": 3, "span2_text": "their"},
                "label": True,
                "idx": 95,
            },
            {
                "text": "Tom saw the dog of his.",
                "target": {"span1_index": 2, "span1_text": "the dog of his", "span2_index": 5, "span2_text": "his"},
                "label": False,
                "idx": 96,
            },
        ],
    )
    first, second = load("wsc", data_dir=str(tmp_path)).splits["train"]
    assert first["text"] == "The girls met *#their# mothers*, who waved."
    assert second["text"] == "Tom saw *the dog of #his#*."


def test_single_class_k_shot_warns_in_one_line(tmp_path, capsys):
    rows = [
        {
            "text": f"Anna met Paul {i} times.",
            "target": {"span1_index": 0, "span1_text": "Anna", "span2_index": 1, "span2_text": "met"},
            "label": True,
            "idx": i,
        }
        for i in range(6)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    data = load("wsc", data_dir=str(tmp_path), k_shot=2)
    assert [ex["label"] for ex in data.splits["train"]] == [1, 1]
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        ("warning: task wsc: k_shot=2: the train split holds one class only (label 1), so the sample has one class")
    ]
    write_jsonl(tmp_path / "train.jsonl", rows + [{**rows[0], "label": False, "idx": 9}])
    load("wsc", data_dir=str(tmp_path), k_shot=1)
    assert capsys.readouterr().err == ""


def test_task_max_eval_samples_is_gone(tmp_path):
    with pytest.raises(TaskDataError, match="field 'max_eval_samples' was removed; use trainer.max_eval_samples"):
        load("synth_cls", max_eval_samples=3)


def test_xsum_split_file_json_error_is_complete(tmp_path):
    (tmp_path / "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json").write_text('{"train": ["1",\n  "2" "3"]}', encoding="utf-8")
    (tmp_path / "bbc-summary-data").mkdir()
    with pytest.raises(TaskDataError, match=r"SPLIT-90-5-5.json:2:7: malformed JSON: Expecting ',' delimiter$"):
        load("xsum", data_dir=str(tmp_path))


def test_shared_constants_are_defined_once():
    import bench.data
    import methods.model
    import vocab
    from bench.tasks import IGNORE_INDEX

    assert bench.data.IGNORE_INDEX is methods.model.IGNORE_INDEX is IGNORE_INDEX is vocab.IGNORE_INDEX == -100
    assert methods.model.TASK_KINDS is TASK_KINDS is vocab.TASK_KINDS
    assert bench.data.choice_names is methods.model.choice_names is vocab.choice_names
    root = Path(__file__).resolve().parents[1]
    sources = [p.relative_to(root).as_posix() for d in ("bench", "methods", "vocab") for p in (root / d).rglob("*.py")]
    for name in ("IGNORE_INDEX", "TASK_KINDS", "HEAD_KINDS", "def choice_names"):
        # an assignment at the start of a line (module level), not a mention in a docstring
        assignment = re.compile(rf"^{name}\s*(:[^=]*)?[=(]", re.MULTILINE)
        defined = [p for p in sources if assignment.search((root / p).read_text(encoding="utf-8"))]
        assert defined == (["vocab/__init__.py"] if name != "HEAD_KINDS" else []), name
