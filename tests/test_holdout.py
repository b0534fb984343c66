"""``task.holdout``: validation on a seeded, held-out part of the training file, split by input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tasks import TaskDataError, load_task, task_config
from tests.conftest import SHARED_DATA

E2E_ONLY_DEV = {"train": ["devset.csv"], "validation": [], "test": []}


def _devset(folder: Path, inputs: int = 10, refs: int = 3) -> Path:
    rows = [f'"name[R{i}], food[F{i}]",Reference {j} for R{i}.' for i in range(inputs) for j in range(refs)]
    (folder / "devset.csv").write_text("mr,ref\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _load(folder: Path, **holdout):
    return load_task(task_config("e2e", data_dir=str(folder), files=E2E_ONLY_DEV, holdout=holdout or None))


def test_holdout_splits_by_input_and_keeps_every_reference(tmp_path: Path) -> None:
    data = _load(_devset(tmp_path), fraction=0.2, seed=0)
    train, held = data.splits["train"], data.splits["validation"]
    assert (len(train), len(held)) == (8, 2)
    assert not {e["source"] for e in train} & {e["source"] for e in held}  # no input on both sides
    assert all(len(e["references"]) == 3 for e in train + held)
    again = _load(tmp_path, fraction=0.2, seed=0).splits["validation"]
    other = [_load(tmp_path, fraction=0.2, seed=s).splits["validation"] for s in range(1, 6)]
    assert again == held and any(o != held for o in other)  # seeded: same seed, same split


@pytest.mark.parametrize(
    "holdout, message",
    [
        ({"fraction": 0.0}, "holdout.fraction must be in (0, 1)"),
        ({"fraction": 1.5}, "holdout.fraction must be in (0, 1)"),
        ({"fraction": "x"}, "holdout must be"),
    ],
)
def test_bad_holdout_is_one_line(tmp_path: Path, holdout: dict, message: str) -> None:
    with pytest.raises(TaskDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(_devset(tmp_path), **holdout)


def test_holdout_refuses_to_replace_a_validation_file(tmp_path: Path) -> None:
    _devset(tmp_path)
    config = task_config(
        "e2e",
        data_dir=str(tmp_path),
        holdout={"fraction": 0.2, "seed": 0},
        files={"train": ["devset.csv"], "validation": ["devset.csv"], "test": []},
    )
    with pytest.raises(TaskDataError, match="set task.files.validation=\\[\\]"):
        load_task(config)


def test_shared_e2e_dev_set_splits_into_438_and_109_inputs() -> None:
    folder = SHARED_DATA / "generation" / "e2e"
    if not (folder / "devset.csv").is_file():
        pytest.skip("shared E2E dev set absent")
    data = _load(folder, fraction=0.2, seed=0)
    assert (len(data.splits["train"]), len(data.splits["validation"])) == (438, 109)
