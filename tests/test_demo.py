"""`make demo`: the demo preset composes into a sweep the claim check can answer, offline, and the report's
``--summary`` of such a sweep fits one screen (records written here; nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import methods
from bench.report.__main__ import main as report_main
from bench.report.summary import UNCONVERGED_SHOWN
from tests.conftest import compose
from tests.test_report import make_record, write_record

SCREEN = 60  # lines `make demo` prints: the "one screen"


@pytest.fixture(scope="module")
def demo():
    return compose(["sweep=demo"])


def _choices(demo, group: str) -> list[str]:
    return str(demo.hydra.sweeper.params[group]).split(",")


def test_demo_preset_prints_no_hydra_line_per_job(demo) -> None:
    """The screen count above assumes the sweep prints only the runs' own lines."""
    assert demo.hydra.hydra_logging.root.level == "ERROR"


def test_demo_preset_runs_every_method_offline_to_convergence_on_two_seeds(demo) -> None:
    assert sorted(_choices(demo, "method")) == sorted(methods.METHODS)
    assert len(_choices(demo, "seed")) >= 2, "the claim check needs 2 seeds a side to answer"
    assert demo.trainer.stop_patience is not None, "the demo's runs stop on their plateau"
    for task in _choices(demo, "task"):
        assert OmegaConf.load(f"conf/task/{task}.yaml").loader == "synthetic", f"{task}: the demo needs no download"
    for model in _choices(demo, "model"):
        assert OmegaConf.load(f"conf/model/{model}.yaml").source != "hub", f"{model}: the demo needs no download"


def _write_sweep(runs: Path, demo, not_converged: int) -> None:
    """Every method at every demo seed, with the claim's order clear; the first ``not_converged`` runs
    unconverged."""
    scores = {"head_only": 0.5, "prompt_tuning": 0.6, "prefix_tuning": 0.8, "p_tuning_v2": 0.9}
    model, task = _choices(demo, "model")[0], _choices(demo, "task")[0]
    runs_made = 0
    for method in methods.METHODS:
        for seed in map(int, _choices(demo, "seed")):
            score = scores.get(method, 0.9) + 0.005 * seed
            record = make_record(method, model, task, seed, score, converged=runs_made >= not_converged)
            write_record(runs, record)
            runs_made += 1


@pytest.mark.parametrize("not_converged", [0, UNCONVERGED_SHOWN + 2])
def test_summary_of_a_demo_sweep_fits_one_screen(demo, tmp_path, capsys, not_converged: int) -> None:
    runs = tmp_path / "runs"
    _write_sweep(runs, demo, not_converged)
    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = len(methods.METHODS) * len(_choices(demo, "seed"))
    sweep_lines = total + 1  # an "[ok]" line per run and the multirun summary (Hydra's own lines are off)
    assert sweep_lines + len(lines) <= SCREEN, "\n".join(lines)
    assert f"Convergence: {total - not_converged}/{total} usable run(s) converged" in lines
    assert sum(line.startswith("  † ") for line in lines) == min(not_converged, UNCONVERGED_SHOWN)
    assert any(line.startswith("== Main table, tuned") for line in lines)
    claim = next(i for i, line in enumerate(lines) if line.startswith("== Claim check"))
    claim_row = lines[claim + 3]  # title, header, rule, then the demo's one model × task
    if not_converged == 0:  # converged, 2 seeds, clear gaps: every link answers
        assert "inconclusive" not in claim_row and claim_row.count("holds") >= 3
    else:  # the runs past UNCONVERGED_SHOWN are counted, not listed
        assert any(line.startswith(f"  ... {not_converged - UNCONVERGED_SHOWN} more in ") for line in lines)
    assert f"Full report: {tmp_path / 'report' / 'report.md'}" in lines
    assert (tmp_path / "report" / "paper_vs_measured.md").exists()  # written, only named on screen
    assert not any(line.startswith("== Paper vs measured") for line in lines)
