"""``python -m bench.search`` (issue #25): an Optuna >= 4 study over ordinary runs that resumes from its
storage, reports every validation pass to a pruner and records pruned trials as ``pruned`` — listed by
the report, never averaged, never taken for a finished run by the skip logic."""

from __future__ import annotations

from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", minversion="4")

from bench.identity import config_hash  # noqa: E402
from bench.record import read_record, validate_record  # noqa: E402
from bench.runner import up_to_date  # noqa: E402
from bench.search import REMOVED, Study, missing_extra, objective, parse_args, run_study  # noqa: E402

TINY = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke"]  # 4 steps, a pass every 2
SPACE = {"trainer.lr": "tag(log, interval(1e-3, 1e-1))"}  # continuous: no two trials share a run folder


def records(root: Path) -> dict[int, tuple[Path, dict]]:
    """Trial number -> (record path, record) for every record under ``root``."""
    found = {}
    for path in root.rglob("result.json"):
        record = read_record(path)
        found[record["search"]["trial"]] = (path, record)
    return found


def test_a_study_resumes_where_it_stopped(runs_root: Path, one_thread) -> None:
    overrides = [*TINY, f"runs_root={runs_root}", "sweep_name=resume"]
    first, status = run_study(Study(trials=1, space=SPACE, pruner="none", plots=False), overrides)
    assert status == 0 and [t.state.name for t in first.trials] == ["COMPLETE"]
    before = records(runs_root)
    assert sorted(before) == [0]
    assert all(r["search"] == {"study": "resume", "trial": n} for n, (_, r) in before.items())
    assert {t.number: t.value for t in first.trials} == {n: objective(r) for n, (_, r) in before.items()}
    assert all(list(t.intermediate_values) == [2, 4] for t in first.trials)  # every validation pass reported

    again, status = run_study(Study(trials=2, space=SPACE, pruner="none", plots=False), overrides)  # same storage
    assert status == 0 and [t.number for t in again.trials] == [0, 1]  # one more trial, not two
    after = records(runs_root)
    assert sorted(after) == [0, 1]  # a new point: the resumed sampler does not draw trial 0's again
    assert after[0][1]["provenance"]["started_at"] == before[0][1]["provenance"]["started_at"]  # not retrained
    table = (runs_root / "resume" / "optuna" / "trials.csv").read_text().splitlines()
    assert len(table) == 1 + 2 and "trainer.lr" in table[0]


def test_a_pruned_trial_ends_early_and_is_listed_never_averaged(runs_root: Path, one_thread) -> None:
    from bench.report import load_runs
    from bench.report.tables import failures_table, main_stats

    overrides = [*TINY, f"runs_root={runs_root}", "sweep_name=prune"]
    hopeless = optuna.pruners.ThresholdPruner(lower=1.5)  # no accuracy reaches it: pruned at the first pass
    study, status = run_study(Study(trials=1, space=SPACE, pruner=hopeless, plots=False), overrides)
    assert status == 0
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [2]  # reported at step 2
    ((path, record),) = records(runs_root).values()
    assert record["status"] == "pruned" and validate_record(record) == []
    assert [entry["step"] for entry in record["metrics"]["history"]] == [2]  # a full smoke run has 2 passes
    assert "judged hopeless" in record["error"] and not (path.parent / "checkpoint").exists()
    stored = record["provenance"]["config"]
    assert not up_to_date(path, config_hash(stored))  # the skip logic trains a pruned point again

    runs = load_runs(runs_root / "prune")
    assert not runs["usable"].any()  # out of every mean
    assert main_stats(runs).empty or main_stats(runs)["n"].sum() == 0
    assert failures_table(runs)["Status"].tolist() == ["pruned"]  # but listed, with its reason


def test_command_line_and_bad_input(runs_root: Path) -> None:
    study, overrides = parse_args(["--trials", "5", "--param", "trainer.lr=interval(0.01, 0.1)", "method=lora"])
    assert (study.trials, study.space, overrides) == (5, {"trainer.lr": "interval(0.01, 0.1)"}, ["method=lora"])
    base = [*TINY, f"runs_root={runs_root}"]
    with pytest.raises(ValueError, match=r"--param trainer\.nope: no such setting"):
        run_study(Study(trials=1, space={"trainer.nope": "interval(1, 2)"}), base)
    with pytest.raises(ValueError, match=r"not a sweep"):
        run_study(Study(trials=1, space={"trainer.lr": "0.1"}), base)
    assert missing_extra(["-m", "hydra/sweeper=optuna"]) == REMOVED["hydra/sweeper=optuna"]
    assert not list(runs_root.rglob("result.json"))  # bad settings train nothing


def test_an_interrupted_trial_is_queued_again_for_the_resumed_study(runs_root: Path, monkeypatch) -> None:
    """SIGTERM mid-trial: the study stops with 128+15, does not count the trial as finished, and the
    resumed study runs the same point first (whose run resumes from its checkpoint)."""
    from bench.runner import Outcome

    seen: list[float] = []

    def fake_run_point(config, folder, overrides, point):  # the runner's outcomes, without training
        seen.append(config["trainer"]["lr"])
        if len(seen) == 1:
            return Outcome("interrupted", folder / "result.json", {"interrupted": {"signal": "SIGTERM"}})
        record = {"status": "ok", "metrics": {"primary": "accuracy", "best": {"accuracy": 0.75}}}
        return Outcome("ok", folder / "result.json", record)

    monkeypatch.setattr("bench.runner.run_point", fake_run_point)
    overrides = [*TINY, f"runs_root={runs_root}", "sweep_name=signal"]
    study, status = run_study(Study(trials=2, space=SPACE, plots=False), overrides)
    assert status == 128 + 15 and len(seen) == 1 and study.trials[0].user_attrs["interrupted"]
    resumed, status = run_study(Study(trials=2, space=SPACE, plots=False), overrides)
    assert status == 0 and seen[1] == seen[0]  # the interrupted point first, then a new one
    assert [t.state.name for t in resumed.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert resumed.trials[1].value == 0.75
