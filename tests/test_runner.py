"""The runner: one schema-valid record per run, failures recorded, sweeps resume, runs reproduce."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.record import read_record, validate_record
from bench.runner import config_hash, execute
from methods import method_names
from tests.conftest import compose, run_bench

METHODS = method_names()  # every registered method


def run_config(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(overrides + ["trainer=smoke"], hydra_node=False), resolve=True)


def records(root: Path) -> list[dict]:
    return [read_record(p) for p in sorted(root.rglob("result.json"))]


@pytest.mark.parametrize("method", METHODS)
def test_smoke_run_writes_a_schema_valid_record(method: str, tmp_path: Path) -> None:
    record = execute(run_config([f"method={method}", "model=tiny_bert", "task=synth_cls"]), tmp_path)
    assert validate_record(record) == [], record["error"]
    assert record["status"] == "ok", record["error"]
    assert read_record(tmp_path / "result.json") == json.loads(json.dumps(record))
    metrics = record["metrics"]
    assert metrics["primary"] in metrics["final"] and metrics["primary"] in metrics["best"]
    assert [h["step"] for h in metrics["history"]] == [2, 4]
    assert record["throughput"]["train_tokens_per_s"] > 0 and record["throughput"]["peak_memory_bytes"] > 0
    params = record["params"]
    assert 0 < params["trainable"] and params["head"] > 0 and params["backbone"] > params["head"]
    hashes = record["provenance"]["base_weights_sha256"]
    # the frozen backbone is bit-identical after training; only full fine-tuning may change it
    assert (hashes["before"] == hashes["after"]) == (method != "full_finetune")
    assert record["provenance"]["versions"]["torch"] and record["provenance"]["config"]["method"]["name"] == method


def test_same_seed_on_cpu_gives_identical_metrics(tmp_path: Path) -> None:
    config = run_config(["method=p_tuning_v2", "model=tiny_llama", "task=synth_cls", "seed=7"])
    first = execute(config, tmp_path / "a")
    second = execute(config, tmp_path / "b")
    strip = lambda h: [{k: v for k, v in e.items() if k != "time_s"} for e in h]  # noqa: E731
    assert first["metrics"]["final"] == second["metrics"]["final"]
    assert strip(first["metrics"]["history"]) == strip(second["metrics"]["history"])
    other = execute(run_config(["method=p_tuning_v2", "model=tiny_llama", "task=synth_cls", "seed=8"]),
                    tmp_path / "c")
    assert strip(other["metrics"]["history"]) != strip(first["metrics"]["history"])


def test_config_hash_ignores_bookkeeping_but_not_experiment_keys() -> None:
    config = run_config(["method=prompt_tuning", "model=tiny_bert", "task=synth_cls"])
    assert config_hash(config) == config_hash({**config, "force": True, "runs_root": "/elsewhere"})
    assert config_hash(config) != config_hash({**config, "seed": 99})


def test_multirun_writes_one_record_per_run_and_a_rerun_skips_them(runs_root: Path) -> None:
    args = ["-m", "method=prompt_tuning,prefix_tuning,p_tuning_v2", "task=synth_cls,synth_ner",
            "model=tiny_bert", "trainer=smoke", f"runs_root={runs_root}", "sweep_name=grid"]
    first = run_bench(args)
    assert first.returncode == 0, first.stderr[-2000:]
    found = records(runs_root / "grid")
    assert len(found) == 6 and all(r["status"] == "ok" for r in found)
    assert (runs_root / "grid/prefix_tuning/tiny_bert/synth_ner/seed=0/result.json").exists()
    second = run_bench(args)
    assert second.stdout.count("up to date") == 6, second.stdout[-2000:]
    assert [r["provenance"]["finished_at"] for r in records(runs_root / "grid")] == \
        [r["provenance"]["finished_at"] for r in found]
    forced = run_bench(args[:2] + args[3:] + ["task=synth_cls", "force=true"])
    assert forced.stdout.count("up to date") == 0 and forced.returncode == 0


def test_a_failing_run_leaves_a_record_and_the_sweep_goes_on(runs_root: Path) -> None:
    result = run_bench(["-m", "task=synth_cls,rte", "task.data_dir=/nonexistent/superglue", "method=head_only",
                        "model=tiny_bert", "trainer=smoke", f"runs_root={runs_root}", "sweep_name=f"])
    assert result.returncode == 0, result.stderr[-2000:]
    by_task = {r["task"]: r for r in records(runs_root / "f")}
    assert by_task["synth_cls"]["status"] == "ok"
    failed = by_task["rte"]
    assert failed["status"] == "failed" and "/nonexistent/superglue" in failed["error"]
    assert "\n" not in failed["error"] and validate_record(failed) == []
    assert (runs_root / "f/head_only/tiny_bert/rte/seed=0/error.log").read_text().startswith("Traceback")


def test_a_diverging_run_is_recorded_as_diverged(runs_root: Path) -> None:
    result = run_bench(["method=head_only", "model=tiny_bert", "task=synth_cls", "trainer=smoke",
                        "trainer.lr=1e30", f"runs_root={runs_root}", "sweep_name=d"])
    assert result.returncode == 1
    (record,) = records(runs_root / "d")
    assert record["status"] == "diverged" and "training loss" in record["error"]  # NaN or exploded


def test_bad_method_field_gives_one_line_error_and_a_failed_record(runs_root: Path) -> None:
    result = run_bench(["method=prefix_tuning", "+method.prefix_dropuot=0.2", "model=tiny_bert",
                        "task=synth_cls", "trainer=smoke", f"runs_root={runs_root}", "sweep_name=e"])
    assert result.returncode == 1
    (record,) = records(runs_root / "e")
    assert "prefix_dropuot" in record["error"]
    assert "Traceback" not in result.stderr


def test_joblib_launcher_runs_two_jobs_in_parallel(runs_root: Path) -> None:
    result = run_bench(["-m", "hydra/launcher=local_parallel", "method=prompt_tuning,prefix_tuning",
                        "model=tiny_bert", "task=synth_cls", "trainer=smoke", "trainer.max_steps=30",
                        f"runs_root={runs_root}", "sweep_name=par"])
    assert result.returncode == 0, result.stderr[-2000:]
    found = records(runs_root / "par")
    assert len(found) == 2 and all(r["status"] == "ok" for r in found)
    spans = [(datetime.fromisoformat(r["provenance"]["started_at"]),
              datetime.fromisoformat(r["provenance"]["finished_at"])) for r in found]
    assert found[0]["provenance"]["pid"] != found[1]["provenance"]["pid"]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "runs did not overlap in time"


def test_paper_trainer_applies_the_tasks_published_settings_to_soft_prompt_methods_only() -> None:
    from bench.runner import apply_paper_settings

    block = {"roberta_large": {"batch_size": 32, "lr": 0.005, "epochs": 100, "num_virtual_tokens": 128,
                               "max_length": 128}}

    def config(method: str, trainer: str = "paper") -> dict:
        cfg = run_config([f"method={method}", "model=roberta_large", "task=rte", f"trainer={trainer}"])
        cfg["trainer"]["name"] = trainer  # run_config adds trainer=smoke; the name selects the behaviour
        cfg["task"]["paper"] = block
        return cfg

    prefix = config("p_tuning_v2")
    assert apply_paper_settings(prefix) == block["roberta_large"]
    assert (prefix["trainer"]["batch_size"], prefix["trainer"]["lr"], prefix["method"]["num_virtual_tokens"],
            prefix["task"]["max_length"]) == (32, 0.005, 128, 128)
    full = config("full_finetune")
    applied = apply_paper_settings(full)
    assert "lr" not in applied and full["trainer"]["lr"] is None and full["trainer"]["batch_size"] == 32
    assert "num_virtual_tokens" not in applied  # full fine-tuning has no such field
    untouched = config("p_tuning_v2", trainer="default")
    assert apply_paper_settings(untouched) is None and untouched["trainer"]["batch_size"] != 32


def test_bf16_run_keeps_trainable_parameters_in_fp32(tmp_path: Path) -> None:
    record = execute(run_config(["method=prefix_tuning", "model=tiny_llama", "task=synth_cls", "dtype=bf16"]),
                     tmp_path)
    assert record["status"] == "ok", record["error"]
    assert record["provenance"]["dtype"] == "bf16"
    fp16 = execute(run_config(["method=prefix_tuning", "model=tiny_llama", "task=synth_cls", "dtype=fp16",
                               "device=cpu"]), tmp_path / "fp16")
    assert fp16["status"] == "failed" and "fp16 needs a GPU" in fp16["error"]


def test_placement_casts_frozen_weights_only() -> None:
    import torch
    import yaml

    from bench.models import load_model
    from bench.runner import _place
    from methods import get_method
    from methods.model import AdaptedModel

    loaded = load_model(yaml.safe_load(open("conf/model/tiny_llama.yaml")), "classification")
    model = AdaptedModel(loaded.backbone, get_method("p_tuning_v2").from_dict({}), "classification", num_labels=2)
    _place(model, torch.device("cpu"), torch.bfloat16)
    dtypes = {p.requires_grad: set() for p in model.parameters()}
    for parameter in model.parameters():
        dtypes[parameter.requires_grad].add(parameter.dtype)
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}


def test_optimizer_choices() -> None:
    import torch
    from transformers.optimization import Adafactor

    from bench.train import TrainerConfigError, make_optimizer

    weight = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(make_optimizer(weight, "adafactor", 0.3, 0.0), Adafactor)
    assert isinstance(make_optimizer(weight, "adamw", 1e-3, 0.0), torch.optim.AdamW)
    with pytest.raises(TrainerConfigError, match="adamw"):
        make_optimizer(weight, "sgd", 1e-3, 0.0)
    with pytest.raises(TrainerConfigError, match="nothing to train"):
        make_optimizer([], "adamw", 1e-3, 0.0)
