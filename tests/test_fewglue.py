"""The FewGLUE protocol (task.protocol=fewglue): train on train32, select on dev32, report on val."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import bench.report as report
from bench.runner import execute
from bench.tasks import load_task
from tests.conftest import SHARED_DATA, compose

SIZES = {"train.jsonl": 10, "train32.jsonl": 8, "dev32.jsonl": 6, "val.jsonl": 4}


def rte_folder(root: Path) -> Path:
    """An RTE-format folder with every file of a full + FewGLUE download (no test.jsonl)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, size in SIZES.items():
        rows = [
            {
                "premise": f"{name} premise {i} about a cat.",
                "hypothesis": f"A cat {i}.",
                "idx": i,
                "label": "entailment" if i % 2 else "not_entailment",
            }
            for i in range(size)
        ]
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def task_cfg(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(["task=rte", *overrides], hydra_node=False).task, resolve=True)


def test_the_protocol_picks_the_files_of_each_split(tmp_path: Path) -> None:
    folder = rte_folder(tmp_path / "RTE")
    full = load_task(task_cfg([f"task.data_dir={folder}"]))
    assert {s: len(e) for s, e in full.splits.items()} == {"train": 10, "validation": 4}
    few = load_task(task_cfg([f"task.data_dir={folder}", "task.protocol=fewglue"]))
    assert {s: len(e) for s, e in few.splits.items()} == {"train": 8, "validation": 6, "test": 4}
    overridden = load_task(
        task_cfg([f"task.data_dir={folder}", "task.protocol=fewglue", "task.files.test=[train.jsonl]"])
    )  # one split still overridable
    assert len(overridden.splits["test"]) == 10


def test_a_fewglue_run_selects_on_dev32_and_reports_val(tmp_path: Path, one_thread) -> None:
    folder = rte_folder(tmp_path / "RTE")
    runs = tmp_path / "runs"
    for lr in (1e-3, 1e-2):
        config = OmegaConf.to_container(
            compose(
                [
                    "method=head_only",
                    "model=tiny_bert",
                    "task=rte",
                    "trainer=smoke",
                    f"trainer.lr={lr}",
                    f"task.data_dir={folder}",
                    "task.protocol=fewglue",
                ],
                hydra_node=False,
            ),
            resolve=True,
        )
        record = execute(config, runs / f"lr={lr}" / "seed=0")
        assert record["status"] == "ok", record["error"]
        assert {k: record["metrics"]["data"][k] for k in ("train", "validation", "test")} == {
            "train": 8,
            "validation": 6,
            "test": 4,
        }
        record["hparams"] = {"trainer.lr": lr}  # what the run identity records (bench.identity)
        (runs / f"lr={lr}" / "seed=0" / "result.json").write_text(json.dumps(record))
    data = report.tuned_data(report.load_records(runs)).iloc[0]
    assert data["split"] == "test" and data["candidates"] == 2


def test_fewglue_without_data_dir_fails_in_one_line_before_loading(tmp_path: Path) -> None:
    config = OmegaConf.to_container(
        compose(
            ["method=head_only", "model=tiny_bert", "task=rte", "trainer=smoke", "task.protocol=fewglue"],
            hydra_node=False,
        ),
        resolve=True,
    )
    record = execute(config, tmp_path)
    assert record["status"] == "failed" and "\n" not in record["error"]
    assert record["error"].startswith("RunConfigError: task.protocol=fewglue") and "task.data_dir" in record["error"]


@pytest.mark.skipif(not (SHARED_DATA / "superglue" / "RTE" / "dev32.jsonl").exists(), reason="no shared data")
def test_fewglue_on_the_shared_rte_files() -> None:
    task = load_task(task_cfg([f"task.data_dir={SHARED_DATA / 'superglue' / 'RTE'}", "task.protocol=fewglue"]))
    assert {s: len(e) for s, e in task.splits.items()} == {"train": 32, "validation": 32, "test": 277}
