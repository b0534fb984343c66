"""The analysis API: typed ``hp.<key>`` columns, the long-format history, and the notebook on a fresh clone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.report import history_frame, load_runs, tuned_data
from tests.test_report import HISTORY_STEPS, REPO, make_record, write_record


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """An LR × prompt-length grid of prompt tuning (2 seeds), one default run of LoRA, one failed run."""
    root = tmp_path / "runs"
    for lr, tokens, score in ((0.01, 10, 0.6), (0.1, 10, 0.7), (0.1, 20, 0.8)):
        for seed in (0, 1):
            hparams = {"trainer.lr": lr, "method.num_virtual_tokens": tokens, "trainer": "smoke"}
            write_record(root, make_record("prompt_tuning", "tiny_bert", "rte", seed, score, hparams=hparams))
    write_record(root, make_record("lora", "tiny_bert", "rte", 0, 0.75, hparams={}))
    failed = make_record("lora", "tiny_bert", "rte", 1, 0.0, status="failed", error="RuntimeError: boom", final={})
    write_record(root, failed)
    return root


def test_hp_columns_are_typed(sweep: Path) -> None:
    df = load_runs(sweep)
    hp = [c for c in df.columns if c.startswith("hp.")]
    assert hp == ["hp.method.num_virtual_tokens", "hp.trainer", "hp.trainer.lr"]
    assert df["hp.trainer.lr"].dtype == float and pd.api.types.is_numeric_dtype(df["hp.method.num_virtual_tokens"])
    lora = df[df["method"] == "lora"]
    assert lora["hp.trainer.lr"].isna().all() and lora["hp.trainer"].isna().all()  # ran the composed defaults
    prompt = df[df["method"] == "prompt_tuning"]
    assert sorted(prompt["hp.trainer.lr"].unique()) == [0.01, 0.1] and set(prompt["hp.trainer"]) == {"smoke"}
    # the numbers sort and filter as numbers, and the display label is still there for the tables
    best = prompt.sort_values(["hp.trainer.lr", "hp.method.num_virtual_tokens"]).iloc[-1]
    assert best["hparams"] == "lr=0.1, num_virtual_tokens=20, trainer=smoke" and best["score_final"] == 0.8
    # columns come right after the identity columns, before the record's sections
    assert df.columns.get_loc("score_sign") < df.columns.get_loc("hp.method.num_virtual_tokens")
    assert df.columns.get_loc("hp.trainer.lr") < df.columns.get_loc("metrics.best.accuracy")


def test_history_frame_long_form(sweep: Path) -> None:
    df = load_runs(sweep)
    primary = history_frame(df)
    usable = int(df["usable"].sum())
    assert len(primary) == usable * len(HISTORY_STEPS) and set(primary["metric"]) == {"accuracy"}
    assert list(primary.columns[:6]) == ["method", "model", "task", "seed", "hparams", "path"]
    assert primary["time_s"].isna().all()  # these records give no time_s
    # the train-split entry (loss) is not validation history, and the failed run has none
    every = history_frame(df, metrics="all")
    assert set(every["metric"]) == {"accuracy"} and "lora/tiny_bert/rte/seed=1/result.json" not in set(every["path"])
    # joined to the runs on path, the typed hyperparameters come along
    joined = primary.merge(df[["path", "hp.trainer.lr"]], on="path")
    last = joined[joined["step"] == max(HISTORY_STEPS)]
    means = last.groupby("hp.trainer.lr")["value"].mean()
    assert means.index.tolist() == [0.01, 0.1] and means[0.1] > means[0.01]


def test_history_frame_all_metrics_on_a_real_record() -> None:
    df = load_runs(REPO / "results" / "demo" / "records")
    every = history_frame(df, metrics="all")
    assert {"f1", "precision", "recall", "eval_loss", "train_loss"} <= set(every["metric"])
    assert not {"step", "epoch", "time_s", "split"} & set(every["metric"])
    assert every["time_s"].notna().all() and set(every["task"]) == {"synth_ner"}
    f1 = every[every["metric"] == "f1"].reset_index(drop=True)  # f1 is the demo's primary metric
    assert f1.equals(history_frame(df))


def test_tuned_data_documented_columns(sweep: Path) -> None:
    data = tuned_data(load_runs(sweep))
    prompt = data[data["method"] == "prompt_tuning"].iloc[0]
    assert prompt["hparams"] == "lr=0.1, num_virtual_tokens=20, trainer=smoke" and prompt["candidates"] == 3
    assert prompt["n"] == 2 and prompt["split"] == "test" and not prompt["same_split"]
    lora = data[data["method"] == "lora"].iloc[0]
    assert lora["n"] == 1 and lora["not_ok"] == 1 and lora["not_ok_detail"] == "1 failed"


def _fresh_clone(target: Path) -> Path:
    """The checkout's tracked files as they are now (what `git clone` of this tree would hold), nothing else:
    no results/runs, no .venv, no installed package data."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell what a fresh clone holds")
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


@pytest.mark.slow  # 48 s on the 2 shared cores: a kernel, every table and figure of the demo records
def test_notebook_runs_on_a_fresh_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    clone = _fresh_clone(tmp_path / "clone")
    assert not (clone / "results" / "runs").exists()
    monkeypatch.delenv("SOFTPROMPT_RUNS_DIR", raising=False)
    monkeypatch.setenv("SOFTPROMPT_REPORT_OUT", "nb-out")  # relative: read from the clone's root
    notebook = nbformat.read(clone / "notebooks" / "report.ipynb", as_version=4)
    # started where Jupyter starts it, in notebooks/
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(clone / "notebooks")}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "12 records from results/demo/records" in text and "12 usable" in text
    assert "no hp.* columns" in text and "eval_loss" in text  # the DataFrame section ran on the demo records
    figures = clone / "nb-out" / "figures"
    assert (figures / "validation_curves.png").stat().st_size > 0
    assert not (clone / "notebooks" / "results").exists()  # nothing resolved from notebooks/
