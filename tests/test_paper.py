"""The published reference table (schema, sources) and the paper-vs-measured join."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.reference import COLUMNS, KEY, REFERENCE_CSV, ReferenceError, load_reference, validate_rows
from bench.report import load_records
from bench.report.paper import (
    command_for,
    config_for,
    hub_key,
    model_hub_ids,
    paper_vs_measured,
    paper_vs_measured_data,
)

REPO_SOURCE = re.compile(r"^[\w.-]+/[\w.-]+:[^@\s]+@[0-9a-f]{40}$")


# --- the reference table ---------------------------------------------------------------------


def test_every_reference_row_is_sourced_and_in_range() -> None:
    table = load_reference()
    assert len(table) >= 10
    assert list(table.columns) == [*COLUMNS, "value_text"]
    for _, row in table.iterrows():
        assert float(row["value_text"]) == row["value"]
        assert REPO_SOURCE.match(row["source"]) or row["source"].startswith("https://"), row["source"]
        assert row["locator"], "every number says where in its source it stands"
        assert 0 < row["value"] <= 100
    keys = table[list(KEY)].apply(tuple, axis=1)
    assert keys.is_unique and "split" in KEY


def _rows() -> list[dict]:
    with REFERENCE_CSV.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("source", "", "field 'source' is empty"),
        ("source", "from memory", "field 'source'"),
        ("source", "THUDM/P-tuning-v2:README.md@main", "field 'source'"),
        ("value", "101", "outside 0..100"),
        ("value", "nan", "outside 0..100"),
        ("value", "n/a", "is not a number"),
        ("method", "adapter", "not a registered method"),
        ("task", "squad", "not a task"),
        ("metric", "bleu", "not a metric of task"),
        ("split", "dev", "field 'split'"),
        ("split", "", "field 'split' is empty"),
        ("setting", "", "field 'setting' is empty"),
        ("budget", " ", "field 'budget' is empty"),
        ("measured_by", "", "field 'measured_by' is empty"),
        ("measured_by", "Li & Liang", "field 'measured_by'"),
        ("measured_by", "secondary", "field 'measured_by'"),  # secondary must name who ran it
    ],
)
def test_a_bad_reference_row_is_named_by_line_and_field(field: str, value: str, message: str) -> None:
    rows = _rows()
    rows[2] = {**rows[2], field: value}
    with pytest.raises(ReferenceError, match=re.escape(message)) as caught:
        validate_rows(rows, "papers.csv")
    assert str(caught.value).startswith("papers.csv:4:")  # header is line 1, rows[2] is line 4


def test_every_committed_row_says_what_defines_its_number() -> None:
    table = load_reference()
    for _, row in table.iterrows():
        assert row["setting"].strip() and row["budget"].strip(), row.to_dict()
        assert row["measured_by"] == "primary" or row["measured_by"].startswith("secondary: "), row.to_dict()
    # the one number Li & Liang quote instead of running it is marked so
    quoted = table[table["measured_by"].str.startswith("secondary")]
    assert set(quoted["task"]) == {"xsum"} and set(quoted["method"]) == {"full_finetune"}


def test_duplicate_reference_rows_and_wrong_header_are_refused(tmp_path: Path) -> None:
    rows = _rows()
    with pytest.raises(ReferenceError, match="duplicate of line 2"):
        validate_rows([rows[0], rows[1], rows[0]], "papers.csv")
    dev_and_test = [rows[0], {**rows[0], "split": "test"}]  # one cell's dev and test numbers are two rows
    assert len(validate_rows(dev_and_test, "papers.csv")) == 2
    bad = tmp_path / "papers.csv"
    bad.write_text("paper,value\nx,1\n", encoding="utf-8")
    with pytest.raises(ReferenceError, match=r"papers.csv:1: header"):
        load_reference(bad)


# --- mapping Hub ids to model configs ----------------------------------------------------------


def test_hub_ids_map_to_model_configs() -> None:
    configs = model_hub_ids()
    assert hub_key("FacebookAI/roberta-large") == hub_key("roberta-large") == "roberta-large"
    assert config_for("roberta-large", configs) == ("roberta_large", False)
    assert config_for("bert-large-uncased", configs) == ("bert_large", False)
    assert config_for("bert-large-cased", configs) == ("bert_large", True)  # same size, other vocabulary
    assert config_for("sentence-transformers/all-MiniLM-L6-v2", configs) == ("minilm", False)
    assert config_for("google/t5-base-lm-adapt", configs)[0] in (None, *configs)
    assert config_for("gpt2-medium", configs) == ("gpt2_medium", False)
    assert config_for("openai-community/gpt2-large", configs) == (None, False)  # never another size


def test_every_committed_row_gets_a_runnable_command_or_a_pointer() -> None:
    """A row whose model has no config (Li & Liang's GPT-2 large) names the missing config instead of
    running a different model under the paper's name."""
    configs = model_hub_ids()
    table = load_reference()
    for _, row in table.iterrows():
        name, _ = config_for(row["hub_id"], configs)
        command = command_for(row, configs)
        if name is None:
            hub_id = row["hub_id"]
            assert command == f"no model config for {hub_id}: add conf/model/<name>.yaml with hub_id: {hub_id}"
        else:
            assert f" model={name}" in command and f" task={row['task']} " in command, command
    large = table[table["hub_id"].map(hub_key) == "gpt2-large"]
    assert len(large) and all(command_for(row, configs).startswith("no model config") for _, row in large.iterrows())


# --- the join ----------------------------------------------------------------------------------


def _record(
    method: str,
    model: str,
    hub_id: str,
    task: str,
    seed: int,
    best: float,
    *,
    metric: str = "accuracy",
    status: str = "ok",
    lr: float | None = None,
    test: float | None = None,
) -> dict:
    return {
        "schema": 1,
        "status": status,
        "error": None if status == "ok" else "boom",
        "method": method,
        "model": model,
        "task": task,
        "seed": seed,
        "metrics": {
            "primary": metric,
            "final": {metric: best - 0.01},
            "best": {metric: best},
            "best_step": 10,
            "history": [],
            "data": {},
            **({"test": {metric: test}} if test is not None else {}),
        },
        "params": {},
        "throughput": {},
        "provenance": {"config": {"model": {"name": model, "hub_id": hub_id}, "trainer": {"lr": lr}}},
        **({"hparams": {"trainer.lr": lr}} if lr is not None else {}),
    }


def _write(runs: Path, record: dict) -> None:
    slug = f"lr={record['hparams']['trainer.lr']}/" if "hparams" in record else ""
    path = runs / record["method"] / record["model"] / record["task"] / f"{slug}seed={record['seed']}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


REFERENCE = validate_rows(
    [
        {
            "paper": "p",
            "model": "RoBERTa-large",
            "hub_id": "roberta-large",
            "task": "rte",
            "method": "p_tuning_v2",
            "metric": "accuracy",
            "value": "86.6",
            "split": "validation",
            "source": "https://example.org/t2",
            "locator": "Table 2",
            "setting": "prefix length 8",
            "budget": "100 epochs",
            "measured_by": "primary",
            "note": "",
        },
        {
            "paper": "p",
            "model": "BERT-large",
            "hub_id": "bert-large-cased",
            "task": "rte",
            "method": "p_tuning_v2",
            "metric": "accuracy",
            "value": "80.15",  # two decimals, as some papers print them
            "split": "validation",
            "source": "https://example.org/t2",
            "locator": "Table 2",
            "setting": "prefix length 8",
            "budget": "100 epochs",
            "measured_by": "primary",
            "note": "",
        },
        {
            "paper": "p",
            "model": "MiniLM",
            "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
            "task": "conll2003",
            "method": "lora",
            "metric": "f1",
            "value": "90.0",
            "split": "test",
            "source": "https://example.org/t3",
            "locator": "Table 3",
            "setting": "prefix length 8",
            "budget": "100 epochs",
            "measured_by": "primary",
            "note": "",
        },
        {  # the RoBERTa cell again, on the test split: our runs have only validation scores
            "paper": "p",
            "model": "RoBERTa-large",
            "hub_id": "roberta-large",
            "task": "rte",
            "method": "p_tuning_v2",
            "metric": "accuracy",
            "value": "85.0",
            "split": "test",
            "setting": "prefix length 8",
            "budget": "100 epochs",
            "measured_by": "secondary: q et al.",
            "source": "https://example.org/t4",
            "locator": "Table 4",
            "note": "",
        },
    ],
    "inline",
)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for seed, best in enumerate((0.80, 0.82, 0.84)):  # three seeds of the chosen point: mean 82, std 2
        _write(runs, _record("p_tuning_v2", "roberta_large", "FacebookAI/roberta-large", "rte", seed, best, lr=0.005))
    for seed, best in enumerate((0.70, 0.72)):  # a worse point of the same grid
        _write(runs, _record("p_tuning_v2", "roberta_large", "FacebookAI/roberta-large", "rte", seed, best, lr=0.01))
    _write(
        runs,
        _record("p_tuning_v2", "roberta_large", "FacebookAI/roberta-large", "rte", 3, 0.99, lr=0.005, status="failed"),
    )  # never averaged in
    _write(runs, _record("p_tuning_v2", "minilm", "sentence-transformers/all-MiniLM-L6-v2", "rte", 0, 0.6))
    for seed, test in enumerate((0.90, 0.92)):  # a test-split row reads metrics.test, not the validation score
        _write(
            runs,
            _record(
                "lora",
                "minilm",
                "sentence-transformers/all-MiniLM-L6-v2",
                "conll2003",
                seed,
                0.5,
                metric="f1",
                test=test,
            ),
        )
    return runs


def test_join_averages_seeds_of_the_best_point_and_skips_failed_runs(runs: Path) -> None:
    data = paper_vs_measured_data(load_records(runs), REFERENCE)
    roberta = data.iloc[0]
    assert (roberta["n"], roberta["hparams"], roberta["our_model"]) == (3, "lr=0.005", "roberta_large")
    assert roberta["mean"] == pytest.approx(82.0) and roberta["std"] == pytest.approx(2.0)
    assert roberta["diff"] == pytest.approx(82.0 - 86.6)
    assert roberta["command"] == ""


def test_join_leaves_missing_rows_with_the_command_that_would_fill_them(runs: Path) -> None:
    data = paper_vs_measured_data(load_records(runs), REFERENCE)
    bert = data.iloc[1]  # MiniLM's RTE run must not match a BERT-large row
    assert bert["n"] == 0 and math.isnan(bert["mean"]) and math.isnan(bert["diff"])
    assert bert["command"] == (
        "python -m bench method=p_tuning_v2 model=bert_large model.hub_id=bert-large-cased "
        "task=rte trainer=paper seed=0,1,2 -m"
    )


def test_join_reads_the_test_split_for_test_rows(runs: Path) -> None:
    row = paper_vs_measured_data(load_records(runs), REFERENCE).iloc[2]
    assert row["n"] == 2 and row["mean"] == pytest.approx(91.0) and row["diff"] == pytest.approx(1.0)
    assert (row["our_split"], row["differs"]) == ("test", "")


def test_a_dev_run_is_never_given_a_delta_against_a_test_row(runs: Path) -> None:
    data = paper_vs_measured_data(load_records(runs), REFERENCE)
    dev_row, test_row = data.iloc[0], data.iloc[3]  # the same runs, against the paper's dev and test numbers
    assert dev_row["our_split"] == "validation" and dev_row["diff"] == pytest.approx(82.0 - 86.6)
    assert test_row["n"] == 3 and test_row["mean"] == pytest.approx(82.0)  # both numbers are still shown
    assert test_row["our_split"] == "validation" and math.isnan(test_row["diff"])
    assert test_row["differs"] == "split differs (ours validation, paper test)"
    table = paper_vs_measured(load_records(runs), REFERENCE)
    assert table.loc[3, "Δ"] == "no Δ: split differs (ours validation, paper test)"
    assert table.loc[3, "Ours"] == "82.0 ± 2.0 (3)" and table.loc[3, "Paper value"] == "85.0"


def test_no_delta_where_the_paper_leaves_its_split_unstated(runs: Path) -> None:
    unstated = validate_rows([{**_rows()[0], **REFERENCE.iloc[2][list(COLUMNS)].to_dict(), "split": "unstated"}], "x")
    row = paper_vs_measured_data(load_records(runs), unstated).iloc[0]
    assert row["n"] == 2 and row["our_split"] == "test" and math.isnan(row["diff"])
    assert row["differs"] == "paper's split unstated"


def test_display_table_and_cli_section(runs: Path, tmp_path: Path, capsys) -> None:
    table = paper_vs_measured(load_records(runs), REFERENCE)
    assert table.loc[0, "Ours"] == "82.0 ± 2.0 (3)" and table.loc[0, "Δ"] == "-4.6"
    assert table.loc[1, "Ours"] == "–" and table.loc[1, "Our run / command"].startswith("python -m bench ")
    assert table.loc[1, "Paper value"] == "80.15"  # as published, not rounded to our one decimal
    assert table.loc[2, "Paper value"] == "90.0"  # nor stripped of its trailing zero
    from bench.report.__main__ import main

    assert main([str(runs), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "== Paper vs measured" in out
    written = pd.read_csv(tmp_path / "report" / "paper_vs_measured.csv")
    assert len(written) == len(load_reference())  # the committed reference table, every row
    assert "Paper vs measured" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "== Paper claim" in out and "Paper claim:" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    claim = pd.read_csv(tmp_path / "report" / "paper_claim.csv")
    assert "prefix_tuning < full_finetune" in set(claim["Relation"])


# --- the paper claim ---------------------------------------------------------------------------


def test_claim_pairs_are_the_chain_and_what_it_implies() -> None:
    from bench.report.comparison import claim, claim_pairs

    pairs = claim_pairs()
    assert set(claim()) <= set(pairs)  # the direct links, as declared
    assert ("prefix_tuning", "<", "full_finetune") in pairs  # prefix < P-Tuning v2 ≈ full
    assert ("prompt_tuning", "<", "full_finetune") in pairs
    assert [op for left, op, right in pairs if (left, right) == ("p_tuning_v2", "full_finetune")] == ["≈"]
    assert len(pairs) == 6  # every pair of the four methods, once


def test_published_numbers_decide_by_the_claim_checks_rule() -> None:
    from bench.report.paper_claim import published_verdict

    assert published_verdict("<", 70.3, 68.8, "bleu")[1:] == ("violated", "")  # prefix above full FT
    diff, verdict, _ = published_verdict("<", 36.05, 37.25, "rougeL")
    assert verdict == "holds" and diff == pytest.approx(1.2)
    assert published_verdict("≈", 75.0, 75.8, "accuracy")[1] == "holds"  # within 1 point of full FT
    assert published_verdict("≈", 75.0, 79.0, "accuracy")[1:] == ("violated", "more than 1 point below full_finetune")
    assert published_verdict("<", 70.0, 70.0, "bleu")[1:] == ("within noise", "equal as published")


def _pair_reference(left: tuple[str, str], right: tuple[str, str], split: str = "validation") -> pd.DataFrame:
    rows = []
    for method, value in (left, right):
        rows.append(
            {
                **REFERENCE.iloc[0][list(COLUMNS)].to_dict(),
                "model": "MiniLM",
                "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
                "method": method,
                "value": value,
                "split": split,
            }
        )
    return validate_rows(rows, "inline")


def test_paper_claim_reads_published_pairs_and_puts_our_verdict_beside(tmp_path: Path) -> None:
    from bench.report import load_runs
    from bench.report.comparison import claim_check_data
    from bench.report.paper_claim import paper_claim_data, paper_claim_table

    runs = tmp_path / "runs"
    for seed in range(3):
        _write(runs, _record("prompt_tuning", "minilm", "x/all-MiniLM-L6-v2", "rte", seed, 0.60 + seed / 100))
        _write(runs, _record("prefix_tuning", "minilm", "x/all-MiniLM-L6-v2", "rte", seed, 0.70 + seed / 100))
    df = load_runs(runs)
    reference = _pair_reference(("prompt_tuning", "80.0"), ("prefix_tuning", "78.5"))
    data = paper_claim_data(df, reference)
    published = data[data["paper"].notna()]
    assert list(published["relation"]) == ["prompt_tuning < prefix_tuning"]
    row = published.iloc[0]
    assert row["verdict"] == "violated" and row["diff"] == pytest.approx(-1.5)
    # ours: the same verdict the claim check gives for that model, task and link (one rule, one place)
    ours = claim_check_data(df)
    expected = ours[(ours["task"] == "rte") & (ours["relation"] == "prompt_tuning < prefix_tuning")].iloc[0]
    assert row["ours"].startswith(f"minilm (on validation): {expected['verdict']} (Δ {expected['diff'] * 100:+.1f}")
    # every direct link no paper row covers is listed as such, with no number
    uncovered = data[data["paper"].isna()]
    assert set(uncovered["relation"]) == {"prefix_tuning < p_tuning_v2", "p_tuning_v2 ≈ full_finetune"}
    assert all(v.startswith("n/a (no paper row reports both") for v in uncovered["verdict"])
    table = paper_claim_table(df, reference)
    assert table.loc[0, "Paper's answer"] == "violated (Δ -1.5)"
    assert table.loc[0, "Published"] == "prompt_tuning 80.0 vs prefix_tuning 78.5"


def test_paper_claim_uses_the_primary_metric_only_and_needs_no_runs() -> None:
    from bench.report.paper_claim import paper_claim_data

    reference = load_reference()
    data = paper_claim_data(None, reference)
    published = data[data["paper"].notna()]
    assert len(published) and set(published["ours"]) == {""}
    primary = {"e2e": "bleu", "webnlg": "bleu", "xsum": "rougeL"}
    assert all(primary.get(t, m) == m for t, m in zip(published["task"], published["metric"]))
    # Li & Liang's dev and test numbers are separate pairs, never mixed
    e2e = published[(published["task"] == "e2e") & (published["model"] == "GPT-2 medium")]
    assert sorted(e2e["split"]) == ["test", "validation"]
