"""``python -m bench.report.dtype``: fp32 vs bf16 pairs, step-time ratio and score difference vs seed noise."""

from __future__ import annotations

from pathlib import Path

from bench.report.dtype import main
from tests.test_report import make_record, write_record


def _run(runs: Path, method: str, seed: int, dtype: str, score: float, step: float) -> None:
    record = make_record(method, "minilm", "conll2003", seed, score, step_time_s=step, hparams={"trainer.lr": 0.1})
    if dtype == "bf16":
        record["hparams"]["dtype"] = "bf16"
    record["provenance"]["config"] = {"dtype": dtype}
    write_record(runs, record)


def test_pairs_give_the_speedup_and_the_score_difference(tmp_path: Path, capsys) -> None:
    runs, noise = tmp_path / "pairs", tmp_path / "noise"
    _run(runs, "prompt_tuning", 0, "fp32", 0.70, 0.30)
    _run(runs, "prompt_tuning", 0, "bf16", 0.71, 0.12)
    _run(runs, "prefix_tuning", 0, "fp32", 0.80, 0.20)  # no bf16 partner: not a pair
    for seed, score in enumerate((0.70, 0.72, 0.74)):
        _run(noise, "prompt_tuning", seed, "fp32", score, 0.3)
    assert main([str(runs), "--noise", str(noise)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and "prefix_tuning" not in "\n".join(table)
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    # fp32 0.30 s ÷ bf16 0.12 s = 2.50; best = the history's maximum (the last pass here)
    assert cells[6] == "2.50" and cells[9] == "+1.0" and cells[10] == "2.0"


def test_no_pair_is_one_line(tmp_path: Path, capsys) -> None:
    _run(tmp_path, "prompt_tuning", 0, "fp32", 0.70, 0.30)
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_missing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "runs directory not found" in capsys.readouterr().err
