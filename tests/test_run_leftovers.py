"""What a run leaves beside its record: error.log for failed and diverged runs, none after a success."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

import bench.runner
from bench.runner import execute
from bench.tasks import load_task, task_config
from bench.train import Diverged
from tests.conftest import compose


def run_config(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(overrides + ["trainer=smoke"], hydra_node=False), resolve=True)


def test_error_log_written_on_failure_and_removed_by_a_successful_rerun(tmp_path: Path, one_thread) -> None:
    base = ["method=head_only", "model=tiny_bert", "task=synth_cls", "task.n_train=16", "task.n_validation=8"]
    failed = execute(
        run_config(base + [f"task.data_dir={tmp_path / 'missing'}", "task.loader=superglue", "+task.subset=rte"]),
        tmp_path,
    )
    assert failed["status"] == "failed" and "does not exist" in failed["error"]
    assert "TaskDataError" in (tmp_path / "error.log").read_text()
    ok = execute(run_config(base), tmp_path)
    assert ok["status"] == "ok", ok["error"]
    assert not (tmp_path / "error.log").exists()  # a stale log would contradict the ok record


def test_diverged_run_writes_an_error_log(tmp_path: Path, monkeypatch) -> None:
    def diverge(config, run_dir, record):
        raise Diverged("training loss became nan at step 3")

    monkeypatch.setattr(bench.runner, "_run", diverge)
    record = execute(run_config(["method=head_only", "model=tiny_bert", "task=synth_cls"]), tmp_path)
    assert record["status"] == "diverged" and record["error"] == "Diverged: training loss became nan at step 3"
    log = (tmp_path / "error.log").read_text()
    assert "Traceback" in log and "training loss became nan at step 3" in log
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_trainer_eval_cap_keeps_multirc_questions_whole(tmp_path: Path) -> None:
    row = {
        "idx": 0,
        "passage": {
            "text": "T.",
            "questions": [
                {
                    "question": f"Q{q}?",
                    "idx": q,
                    "answers": [{"text": f"a{a}", "idx": a, "label": a % 2} for a in range(3)],
                }
                for q in range(3)
            ],
        },
    }
    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / name).write_text(json.dumps(row) + "\n", encoding="utf-8")
    task = load_task(task_config("multirc", data_dir=str(tmp_path)))
    bench.runner._cap_eval(task, 5)  # trainer.max_eval_samples=5: question 1 would be cut after 2 of 3
    assert [ex["group"] for ex in task.splits["validation"]] == ["0-0"] * 3
    assert task.counts["validation"] == 3
    smoke = compose(["trainer=smoke"], hydra_node=False)
    assert smoke.trainer.max_eval_samples == 8 and "max_eval_samples" not in smoke.task
