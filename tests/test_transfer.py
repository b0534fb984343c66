"""Transfer ("zero-shot" for an adapter, issue #28 item 3): the declared label mappings, the command end to
end on a tiny model and the built-in pair task, and the claims row that reads the transfer records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.report as report
from bench import transfer
from bench.report import claims
from bench.transfer import TransferError, find_mapping, fold_examples, fold_predictions, load_mappings
from tests.test_report_claims import THREE, _cell, _row, _verdicts

RTE, CB = ["entailment", "not_entailment"], ["entailment", "contradiction", "neutral"]
CONLL03 = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
CONLL04 = ["O", "B-Peop", "I-Peop", "B-Org", "I-Org", "B-Loc", "I-Loc", "B-Other", "I-Other"]


def test_rte_adapter_on_cb_folds_contradiction_and_neutral_into_not_entailment():
    pair = find_mapping("rte", "cb")
    ids = pair.target_ids(RTE, CB)
    assert ids == [0, 1, 1]
    examples = [{"text": "p", "text_pair": "h", "label": label} for label in (0, 1, 2)]
    folded = fold_examples(examples, "classification", ids)
    assert [e["label"] for e in folded] == [0, 1, 1] and [e["label"] for e in examples] == [0, 1, 2]
    assert folded[2]["text"] == "p" and "not follow" in pair.why


def test_conll2003_adapter_on_conll2004_scores_the_shared_types_only():
    pair = find_mapping("conll2003", "conll2004")
    ids = pair.target_ids(CONLL03, CONLL04)
    tags = [CONLL04.index(t) for t in ("B-Peop", "I-Peop", "O", "B-Other", "B-Loc")]
    assert [
        CONLL03[i]
        for i in fold_examples([{"tokens": list("abcde"), "tags": tags}], "token_classification", ids)[0]["tags"]
    ] == [
        "B-PER",
        "I-PER",
        "O",
        "O",
        "B-LOC",
    ]
    predicted = [[CONLL03.index(t) for t in ("B-MISC", "I-MISC", "B-ORG")]]
    folded = fold_predictions(predicted, "token_classification", pair.prediction_ids(CONLL03))
    assert [CONLL03[i] for i in folded[0]] == ["O", "O", "B-ORG"]


def _mapping_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "transfer.yaml"
    path.write_text(body)
    return path


def test_an_unmapped_target_label_is_refused_in_one_line_naming_file_and_label(tmp_path):
    path = _mapping_file(
        tmp_path,
        "pairs:\n  - {source: rte, target: cb, labels: {entailment: entailment, contradiction: not_entailment}}\n",
    )
    with pytest.raises(TransferError) as error:
        find_mapping("rte", "cb", path).target_ids(RTE, CB)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "'neutral' is not mapped" in message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            "pairs:\n  - {source: rte, target: cb, labels: {entailment: entailment, contradiction: no, neutral: x}}\n",
            "'contradiction': False is not a pair of label names (quote them",
        ),
        (
            "pairs:\n  - {source: rte, target: cb, labels: {entailment: entailment, contradiction: x, neutral: x}}\n",
            "'contradiction' maps to 'x', not a rte label ['entailment', 'not_entailment']",
        ),
        ("pairs: {}\n", "top-level 'pairs' list"),
        (
            "pairs:\n  - {source: rte, target: cb, labels: {entailment: entailment}, extra: 1}\n",
            "unknown field(s) ['extra']",
        ),
        (
            "pairs:\n  - {source: rte, target: cb, labels: {a: b}}\n  - {source: rte, target: cb, labels: {a: b}}\n",
            "declared twice",
        ),
        ("pairs: [\n", "cannot read"),
    ],
)
def test_bad_mapping_files_say_what_is_wrong_in_one_line(tmp_path, body, words):
    path = _mapping_file(tmp_path, body)
    with pytest.raises(TransferError) as error:
        find_mapping("rte", "cb", path).target_ids(RTE, CB)
    assert words in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_the_target_must_be_read_as_the_run_read_its_inputs():
    with pytest.raises(
        TransferError, match="run read its inputs as input_format=t5, task cb as plain: add task.input_format=t5"
    ):
        transfer._same_reading({"name": "rte", "input_format": "t5"}, {"name": "cb", "input_format": "plain"})
    transfer._same_reading({"name": "rte"}, {"name": "cb", "input_format": "plain"})  # plain is the default


def test_an_undeclared_pair_lists_the_declared_ones():
    with pytest.raises(TransferError, match=r"no label mapping for rte -> boolq \(declared: .*rte -> cb"):
        find_mapping("rte", "boolq")
    assert ("rte", "cb") in load_mappings()


# ---- the command, end to end --------------------------------------------------------------------------

SOURCE = ["method=p_tuning_v2", "model=tiny_bert", "task=synth_cls", "save_adapter=true"]
SMALL = ["task.n_train=16", "task.n_validation=8", "task.n_test=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> Path:
    """A finished tiny run with its adapter saved (trainer=smoke: test scored on 8 examples)."""
    from bench.runner import execute
    from tests.test_runner import run_config

    run_dir = tmp_path_factory.mktemp("run") / "lr=0.1" / "seed=0"  # the layout of a sweep's run folders
    record = execute(run_config(SOURCE + SMALL), run_dir)
    assert record["status"] == "ok", record["error"]
    return run_dir


def test_transferring_an_adapter_to_its_own_task_reproduces_the_runs_test_score(trained, capsys):
    before = (trained / "result.json").read_bytes()
    code = transfer.main([str(trained), "task=synth_cls", *SMALL, "trainer.max_eval_samples=8", "device=cpu"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((trained / "transfer" / "synth_cls.json").read_text())
    run = json.loads(before)
    assert record["metrics"] == pytest.approx(run["metrics"]["test"])  # same adapter, same examples, same scores
    assert record["target"] == {**record["target"], "split": "test", "examples": 8}
    assert record["source"]["config_hash"] == run["provenance"]["config_hash"]
    assert (trained / "result.json").read_bytes() == before  # the finished run's record is never rewritten
    assert "synth_cls/seed=0 -> synth_cls [test, 8 examples]: accuracy=" in capsys.readouterr().out


def test_transfer_to_the_three_class_task_folds_neutral(trained):
    out, path = transfer.run_transfer(
        transfer.Request.parse([str(trained), "task=synth_cls", "task.n_classes=3", "task.n_test=12", "device=cpu"])
    )
    assert path == trained / "transfer" / "synth_cls.json" and json.loads(path.read_text()) == json.loads(
        json.dumps(out)
    )
    assert out["mapping"]["labels"]["neutral"] == "contradiction" and out["mapping"]["source_labels"] == RTE[:1] + [
        "contradiction"
    ]
    assert out["mapping"]["file"] == "conf/transfer.yaml" and out["mapping"]["why"].startswith("The built-in pair")
    assert out["target"]["examples"] == 12 and out["target"]["config"]["n_classes"] == 3
    assert 0.0 <= out["metrics"]["accuracy"] <= 1.0 and "f1_macro" in out["metrics"]
    assert transfer.read_transfers(trained)["synth_cls"]["metrics"] == out["metrics"]


def test_the_command_refuses_bad_requests_in_one_line(trained, tmp_path, capsys):
    unmapped = _mapping_file(
        tmp_path, "pairs:\n  - {source: synth_cls, target: synth_cls, labels: {entailment: entailment}}\n"
    )
    cases = [
        (
            [str(trained), "task=synth_cls", f"mapping={unmapped}"],
            f"{unmapped}: pair synth_cls -> synth_cls: target label 'contradiction'",
        ),
        ([str(tmp_path), "task=synth_cls"], "no run record"),
        ([str(trained), "task=synth_ner"], "task synth_ner is token_classification"),
        ([str(trained), "task=synth_cls", "epochs=3"], "unknown setting 'epochs'"),
        ([str(trained)], "missing task=NAME"),
        (["task=synth_cls", str(trained)], "usage: python -m bench.transfer RUN_DIR task=NAME"),
    ]
    for argv, words in cases:
        assert transfer.main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


# ---- the claims row -----------------------------------------------------------------------------------


def _transfer(runs: Path, method: str, source: str, target: str, scores, primary: str = "accuracy") -> None:
    """A hand-made transfer record beside each seed's run (as bench.transfer writes them)."""
    for seed, score in enumerate(scores):
        run_dir = runs / method / "m" / source / f"seed={seed}"
        record = {"kind": "transfer", "primary": primary, "metrics": {primary: score}, "target": {"task": target}}
        (run_dir / "transfer").mkdir(parents=True, exist_ok=True)
        (run_dir / "transfer" / f"{target}.json").write_text(json.dumps(record))


def _seeds(base: float) -> list[float]:
    return [base + offset for offset in THREE]


@pytest.mark.parametrize(("pt2", "verdict"), [(0.695, "holds"), (0.55, "violated")])
def test_the_zero_shot_row_compares_transfer_scores_with_full_finetunings(tmp_path, pt2, verdict):
    for method, score in {"head_only": 0.6, "p_tuning_v2": 0.78, "full_finetune": 0.8}.items():
        _cell(tmp_path, method, "rte", score)
    for method, score in {"head_only": 0.5, "p_tuning_v2": pt2, "full_finetune": 0.7}.items():
        _transfer(tmp_path, method, "rte", "cb", _seeds(score))
    row = _row(_verdicts(tmp_path), "p_tuning_v2", "transfer")
    assert row["verdict"] == verdict
    assert f"rte→cb: p_tuning_v2 {pt2 * 100:.1f} ± 0.5 vs full_finetune 70.0 ± 0.5 (n 3/3)" in row["evidence"]


def test_the_zero_shot_row_follows_the_seed_and_convergence_rules(tmp_path):
    _cell(tmp_path, "full_finetune", "rte", 0.8)
    _cell(tmp_path, "p_tuning_v2", "rte", 0.78, converged=[True, False, True])
    _transfer(tmp_path, "full_finetune", "rte", "cb", _seeds(0.7))
    _transfer(tmp_path, "p_tuning_v2", "rte", "cb", _seeds(0.7))
    row = _row(_verdicts(tmp_path), "p_tuning_v2", "transfer")
    assert row["verdict"] == "inconclusive" and "1/3 run(s) not converged" in row["reason"]
    one = tmp_path / "one"
    _cell(one, "full_finetune", "rte", 0.8)
    _cell(one, "p_tuning_v2", "rte", 0.78)
    _transfer(one, "full_finetune", "rte", "cb", _seeds(0.7))
    _transfer(one, "p_tuning_v2", "rte", "cb", [0.7])
    assert "p_tuning_v2 has 1 seed" in _row(_verdicts(one), "p_tuning_v2", "transfer")["reason"]


def test_without_transfer_records_the_zero_shot_row_says_how_to_measure(tmp_path):
    _cell(tmp_path, "full_finetune", "rte", 0.8)
    _cell(tmp_path, "p_tuning_v2", "rte", 0.78)
    row = _row(_verdicts(tmp_path), "p_tuning_v2", "transfer")
    assert row["verdict"] == "inconclusive" and "python -m bench.transfer" in row["reason"]
    assert "transfer" not in report.load_records(tmp_path)  # no column for runs without transfer records
    assert [s for s in claims.STATEMENTS if s.check == "transfer"]
