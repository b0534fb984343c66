"""The runner: one schema-valid record per run, failures recorded, sweeps resume, runs reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

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
    assert record["provenance"]["cpu"]["torch_capability"]  # which kernels ran: records of two CPUs tell apart


def test_same_seed_on_cpu_gives_identical_metrics(tmp_path: Path) -> None:
    config = run_config(["method=p_tuning_v2", "model=tiny_llama", "task=synth_cls", "seed=7"])
    first = execute(config, tmp_path / "a")
    second = execute(config, tmp_path / "b")
    strip = lambda h: [{k: v for k, v in e.items() if k != "time_s"} for e in h]  # noqa: E731
    assert first["metrics"]["final"] == second["metrics"]["final"]
    assert strip(first["metrics"]["history"]) == strip(second["metrics"]["history"])
    other = execute(run_config(["method=p_tuning_v2", "model=tiny_llama", "task=synth_cls", "seed=8"]), tmp_path / "c")
    assert strip(other["metrics"]["history"]) != strip(first["metrics"]["history"])


def test_config_hash_ignores_bookkeeping_but_not_experiment_keys() -> None:
    config = run_config(["method=prompt_tuning", "model=tiny_bert", "task=synth_cls"])
    assert config_hash(config) == config_hash({**config, "force": True, "runs_root": "/elsewhere"})
    assert config_hash(config) != config_hash({**config, "seed": 99})
    # the eval feature cache changes speed only: a record written before the key existed still matches
    trainer = dict(config["trainer"])
    assert trainer.pop("eval_feature_cache_mb") > 0
    assert config_hash(config) == config_hash({**config, "trainer": trainer})
    assert config_hash(config) == config_hash({**config, "trainer": {**trainer, "eval_feature_cache_mb": 0}})
    assert config_hash(config) != config_hash({**config, "trainer": {**trainer, "eval_batch_size": 1}})


def test_multirun_writes_one_record_per_point_and_a_rerun_skips_them(runs_root: Path) -> None:
    """Methods × tasks × a method knob: every grid point its own folder (a slug of its swept keys), and a rerun
    launches nothing that finished; force retrains one."""
    args = [
        "-m",
        "method=prompt_tuning,prefix_tuning",
        "task=synth_cls,synth_ner",
        "method.num_virtual_tokens=5,10",
        "model=tiny_bert",
        "trainer=smoke",
        f"runs_root={runs_root}",
        "sweep_name=grid",
    ]
    first = run_bench(args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "multirun: 8 ok, 0 skipped, 0 failed, 0 diverged" in first.stdout
    found = records(runs_root / "grid")
    assert sorted((r["method"], r["task"], r["hparams"]["method.num_virtual_tokens"]) for r in found) == sorted(
        (m, t, n) for m in ("prompt_tuning", "prefix_tuning") for t in ("synth_cls", "synth_ner") for n in (5, 10)
    )
    assert all(r["status"] == "ok" and r["hparams"]["trainer"] == "smoke" for r in found)
    point = "grid/prefix_tuning/tiny_bert/synth_ner/num_virtual_tokens=10,trainer=smoke/seed=0/result.json"
    assert (runs_root / point).exists()
    second = run_bench(args)
    assert second.returncode == 0 and second.stdout.count("up to date") == 8, second.stdout[-2000:]
    assert "multirun: 0 ok, 8 skipped, 0 failed, 0 diverged" in second.stdout
    assert [r["provenance"]["finished_at"] for r in records(runs_root / "grid")] == [
        r["provenance"]["finished_at"] for r in found
    ]
    one = ["method=prompt_tuning", "task=synth_cls", "method.num_virtual_tokens=5"]
    forced = run_bench(["-m", *one, *args[4:], "force=true"])  # a finished point
    assert forced.stdout.count("up to date") == 0 and forced.returncode == 0


def test_a_failing_run_leaves_a_record_and_the_sweep_goes_on(runs_root: Path) -> None:
    result = run_bench(
        [
            "-m",
            "task=synth_cls,rte",
            "task.data_dir=/nonexistent/superglue",
            "method=head_only",
            "model=tiny_bert",
            "trainer=smoke",
            f"runs_root={runs_root}",
            "sweep_name=f",
        ]
    )
    # the sweep ran both jobs, then says how it went and exits non-zero because one failed
    assert result.returncode == 1, result.stderr[-2000:]
    assert "multirun: 1 ok, 0 skipped, 1 failed, 0 diverged" in result.stderr
    assert "Traceback" not in result.stderr
    by_task = {r["task"]: r for r in records(runs_root / "f")}
    assert by_task["synth_cls"]["status"] == "ok"
    failed = by_task["rte"]
    assert failed["status"] == "failed" and "/nonexistent/superglue" in failed["error"]
    assert "\n" not in failed["error"] and validate_record(failed) == []
    # task.data_dir enters the run's identity as a digest of the files (here: missing), so it names a folder
    (log,) = (runs_root / "f/head_only/tiny_bert/rte").glob("*/seed=0/error.log")
    assert log.read_text().startswith("Traceback") and log.parent.parent.name.startswith("data_dir=missing")


def test_a_diverging_run_is_recorded_as_diverged(runs_root: Path) -> None:
    result = run_bench(
        [
            "method=head_only",
            "model=tiny_bert",
            "task=synth_cls",
            "trainer=smoke",
            "trainer.lr=1e30",
            f"runs_root={runs_root}",
            "sweep_name=d",
        ]
    )
    assert result.returncode == 1
    (record,) = records(runs_root / "d")
    assert record["status"] == "diverged" and "training loss" in record["error"]  # NaN or exploded


def test_bad_method_field_gives_one_line_error_and_a_failed_record(runs_root: Path) -> None:
    result = run_bench(
        [
            "method=prefix_tuning",
            "+method.prefix_dropuot=0.2",
            "model=tiny_bert",
            "task=synth_cls",
            "trainer=smoke",
            f"runs_root={runs_root}",
            "sweep_name=e",
        ]
    )
    assert result.returncode == 1
    (record,) = records(runs_root / "e")
    assert "prefix_dropuot" in record["error"]
    assert "Traceback" not in result.stderr


def test_paper_trainer_applies_the_tasks_published_settings_to_soft_prompt_methods_only() -> None:
    from bench.runner import apply_paper_settings

    block = {
        "roberta_large": {"batch_size": 32, "lr": 0.005, "epochs": 100, "num_virtual_tokens": 128, "max_length": 128}
    }

    def config(method: str, trainer: str = "paper") -> dict:
        cfg = run_config([f"method={method}", "model=roberta_large", "task=rte", f"trainer={trainer}"])
        cfg["trainer"]["name"] = trainer  # run_config adds trainer=smoke; the name selects the behaviour
        cfg["task"]["paper"] = block
        return cfg

    prefix = config("p_tuning_v2")
    assert apply_paper_settings(prefix) == block["roberta_large"]
    assert (
        prefix["trainer"]["batch_size"],
        prefix["trainer"]["lr"],
        prefix["method"]["num_virtual_tokens"],
        prefix["task"]["max_length"],
    ) == (32, 0.005, 128, 128)
    explicit = config("p_tuning_v2")
    assert apply_paper_settings(explicit, {"trainer.lr", "method.num_virtual_tokens"}) == {
        "batch_size": 32,
        "epochs": 100,
        "max_length": 128,
    }  # what the user set wins over the table
    assert (explicit["trainer"]["lr"], explicit["method"]["num_virtual_tokens"]) == (None, 20)
    full = config("full_finetune")
    applied = apply_paper_settings(full)
    assert "lr" not in applied and full["trainer"]["lr"] is None and full["trainer"]["batch_size"] == 32
    assert "num_virtual_tokens" not in applied  # full fine-tuning has no such field
    untouched = config("p_tuning_v2", trainer="default")
    assert apply_paper_settings(untouched) is None and untouched["trainer"]["batch_size"] != 32


def test_bf16_run_keeps_trainable_parameters_in_fp32(tmp_path: Path) -> None:
    record = execute(run_config(["method=prefix_tuning", "model=tiny_llama", "task=synth_cls", "dtype=bf16"]), tmp_path)
    assert record["status"] == "ok", record["error"]
    assert record["provenance"]["dtype"] == "bf16"
    fp16 = execute(
        run_config(["method=prefix_tuning", "model=tiny_llama", "task=synth_cls", "dtype=fp16", "device=cpu"]),
        tmp_path / "fp16",
    )
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

    def groups(params: list) -> list[dict]:
        return [{"name": "method.decay", "params": params, "lr": 0.3, "weight_decay": 0.0}]

    weight = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(make_optimizer(groups(weight), "adafactor"), Adafactor)
    assert isinstance(make_optimizer(groups(weight), "adamw"), torch.optim.AdamW)
    with pytest.raises(TrainerConfigError, match="adamw"):
        make_optimizer(groups(weight), "sgd")
    with pytest.raises(TrainerConfigError, match="nothing to train"):
        make_optimizer(groups([]), "adamw")


def test_adamw_is_fused_where_torch_allows_and_matches_the_loop() -> None:
    import torch

    from bench.train import make_optimizer

    def trained(fused_allowed: bool) -> torch.Tensor:
        weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 64))
        optimizer = make_optimizer([{"params": [weight], "lr": 0.1, "weight_decay": 0.01}], "adamw")
        assert optimizer.defaults["fused"] is True  # one CPU device, floating point
        if not fused_allowed:
            optimizer.defaults["fused"] = None
            optimizer.param_groups[0]["fused"] = None
        for step in range(5):
            weight.grad = torch.cos(weight.detach() * (step + 1))
            optimizer.step()
        return weight.detach()

    # the fused kernel is an implementation of the same update: equal to the per-tensor loop up to rounding
    torch.testing.assert_close(trained(True), trained(False), rtol=1e-6, atol=1e-7)


# ---- run identity: one folder and one record per grid point -----------------------------------------------


def identity(overrides: list[str]) -> tuple[dict, dict]:
    """(hparams, resolved config) as a job computes them from its group choices."""
    from bench.identity import composed_defaults, hparams

    cfg = compose(overrides)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]  # what a job sees: the config without Hydra's own node
    config = OmegaConf.to_container(cfg, resolve=True)
    return hparams(config, composed_defaults(choices)), config


def test_hparams_are_the_settings_that_differ_from_the_composed_defaults(tmp_path: Path) -> None:
    from bench.identity import run_dir

    base = ["method=prompt_tuning", "model=tiny_bert", "task=synth_cls", "trainer=smoke", "seed=3"]
    point, config = identity(
        base
        + [
            "method.num_virtual_tokens=10",
            "trainer.lr=0.01",
            "force=true",
            f"runs_root={tmp_path}",
            "sweep_name=s",
            "device=cpu",
        ]
    )
    # bookkeeping keys left out; a trainer preset other than conf/config.yaml's names itself
    assert point == {"method.num_virtual_tokens": 10, "trainer.lr": 0.01, "trainer": "smoke"}
    folder = "s/prompt_tuning/tiny_bert/synth_cls/lr=0.01,num_virtual_tokens=10,trainer=smoke/seed=3"
    assert run_dir(config, point) == tmp_path / folder
    # the method/model/task choices, a preset's own values and trainer=paper's defaults are the baseline
    assert identity(base)[0] == {"trainer": "smoke"}
    assert identity(base[:-2] + ["seed=3"])[0] == {}
    # a preset that chooses trainer=paper names it; paper's per-task values are not hparams
    assert identity(["sweep=superglue", "model=tiny_bert", "task=rte"])[0] == {"trainer": "paper"}
    assert identity(["sweep=demo", "trainer.epochs=7"])[0] == {"trainer.epochs": 7}
    # a key only the run has (+key=) is an hparam; the default value given explicitly is not
    assert identity(base + ["+model.extra=1", "trainer.max_steps=4"])[0] == {"model.extra": 1, "trainer": "smoke"}
    assert run_dir(identity(base)[1], {}).parts[-2:] == ("synth_cls", "seed=3")


def test_slug_is_readable_and_hashed_only_when_it_must_be() -> None:
    from bench.identity import slug

    assert slug({"trainer.lr": 0.01, "method.lr": 0.1}) == "method.lr=0.1,trainer.lr=0.01"  # same leaf: dotted
    assert slug({"trainer.max_steps": None, "trainer.group_by_length": False}) == "group_by_length=false,max_steps=null"
    long = {f"method.knob_{i}": 0.001 * i for i in range(12)}
    other = {**long, "method.knob_11": 1.0}
    assert len(slug(long)) <= 64 and slug(long) != slug(other) and "__" in slug(long)
    unsafe = slug({"task.files.train": "/data/a b.jsonl"})
    assert "/" not in unsafe and " " not in unsafe and unsafe != slug({"task.files.train": "/data/a_b.jsonl"})


def test_joblib_launcher_keeps_one_record_per_point_and_resumes(runs_root: Path) -> None:
    args = [
        "-m",
        "hydra/launcher=local_parallel",
        "method=prompt_tuning",
        "trainer.lr=0.01,0.1",
        "model=tiny_bert",
        "task=synth_cls",
        "trainer=smoke",
        f"runs_root={runs_root}",
        "sweep_name=jl",
    ]
    first = run_bench(args)
    assert first.returncode == 0, first.stderr[-2000:]
    found = records(runs_root / "jl")
    assert sorted(r["hparams"]["trainer.lr"] for r in found) == [0.01, 0.1]
    # two worker processes: the basic launcher runs every job in its own process, one after the other.
    # Overlap in time is not asserted: on a loaded machine one worker may start after the other has finished.
    assert len({r["provenance"]["pid"] for r in found}) == 2
    second = run_bench(args)
    assert "multirun: 0 ok, 2 skipped, 0 failed, 0 diverged" in second.stdout, second.stdout[-2000:]


def test_submitit_launcher_keeps_one_record_per_point(runs_root: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_bench(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "method=head_only",
            "trainer.lr=0.01,0.1",
            "model=tiny_bert",
            "task=synth_cls",
            "trainer=smoke",
            f"runs_root={runs_root}",
            "sweep_name=sub",
        ]
    )
    assert "multirun: 2 ok, 0 skipped, 0 failed, 0 diverged" in result.stdout, result.stderr[-2000:]
    assert sorted(r["hparams"]["trainer.lr"] for r in records(runs_root / "sub")) == [0.01, 0.1]


# ---- the per-run lock ------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from bench.identity import RunLock
lock = RunLock(Path(sys.argv[1]))
assert lock.acquire() is None
print("held", flush=True)
time.sleep(60)
"""


def test_a_locked_point_is_skipped_and_a_dead_holder_leaves_a_stale_lock(tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    from bench.identity import LOCK_NAME, RunLock
    from bench.runner import run_point

    monkeypatch.setattr("bench.tasks.load_task", _loading_reached)
    run_dir = tmp_path / "point"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir / LOCK_NAME)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = run_point(run_config(["method=head_only", "model=tiny_bert"]), run_dir)
        assert outcome.status == "skipped" and f'"pid": {holder.pid}' in outcome.reason
        assert not (run_dir / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / LOCK_NAME).exists()  # the killed holder's file stays behind: stale, not held
    lock = RunLock(run_dir / LOCK_NAME)
    assert lock.acquire() is None
    assert RunLock(run_dir / LOCK_NAME).acquire().startswith("locked by")  # and now we hold it
    lock.release()
    assert not (run_dir / LOCK_NAME).exists()


# ---- settings checked before anything loads ---------------------------------------------------------------


def _loading_reached(*args, **kwargs):
    raise AssertionError("task or model loading was reached")


BAD_SETTINGS = [
    (["trainer.lr=0"], "trainer.lr=0 "),
    (["trainer.lr=abc"], "trainer.lr='abc'"),
    (["trainer.eval_batch_size=0"], "trainer.eval_batch_size=0"),
    (["trainer.batch_size=2.5"], "trainer.batch_size"),
    (["trainer.warmup_ratio=1.5"], "trainer.warmup_ratio"),
    (["trainer.optimizer=sgd"], "trainer.optimizer"),
    (["trainer.head_lr=-1"], "trainer.head_lr"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["+trainer.lr_sceduler=cosine"], "lr_sceduler"),
    (["dtype=fp8"], "dtype='fp8'"),
    (["seed=-1"], "seed=-1 is not allowed; allowed: an integer in [0, 4294967295]"),
    (["seed=abc"], "seed='abc' "),
]


@pytest.mark.parametrize("overrides, named", BAD_SETTINGS)
def test_a_bad_setting_fails_in_one_line_before_loading(
    overrides: list[str], named: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("bench.tasks.load_task", _loading_reached)
    monkeypatch.setattr("bench.models.load_model", _loading_reached)
    record = execute(run_config(["method=prompt_tuning", "model=tiny_bert"] + overrides), tmp_path)
    assert record["status"] == "failed" and named in record["error"], record["error"]
    assert "\n" not in record["error"] and "loading was reached" not in record["error"]
    assert "allowed" in record["error"] or "known" in record["error"]


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_an_unavailable_device_fails_in_one_line_before_loading(device: str, tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr("bench.tasks.load_task", _loading_reached)
    record = execute(run_config(["method=head_only", "model=tiny_bert", f"device={device}"]), tmp_path)
    assert record["error"] == (
        f"RunConfigError: device='{device}' is not available on this machine; allowed: ['auto', 'cpu']"
    )


def test_a_bad_setting_on_the_command_line_prints_one_line_naming_the_key(runs_root: Path) -> None:
    result = run_bench(
        [
            "method=head_only",
            "model=tiny_bert",
            "trainer=smoke",
            "trainer.lr=abc",
            f"runs_root={runs_root}",
            "sweep_name=bad",
        ]
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [text for text in result.stderr.splitlines() if "trainer.lr" in text]
    assert line.startswith("[failed]") and "allowed: a number > 0" in line


def test_trainer_config_rejects_and_accepts() -> None:
    from bench.settings import TrainerConfig, TrainerConfigError

    settings = TrainerConfig.from_dict({"lr": 1, "max_grad_norm": None, "head_lr": "1e-3"})
    assert (settings.lr, settings.max_grad_norm, settings.head_lr) == (1.0, None, 1e-3)
    assert settings.with_method_lr(0.5).lr == 1.0 and TrainerConfig().with_method_lr(0.5).head_lr == 0.5
    for bad in ({"group_by_length": 1}, {"epochs": True}, {"lr": float("nan")}, {"weight_decay": -0.1}):
        with pytest.raises(TrainerConfigError, match=f"trainer.{next(iter(bad))}="):
            TrainerConfig.from_dict(bad)


# ---- optimizer groups ---------------------------------------------------------------------------------------


def _tiny_model(method: str, **fields):
    import yaml

    from bench.models import load_model
    from methods import get_method
    from methods.model import AdaptedModel

    loaded = load_model(yaml.safe_load(open("conf/model/tiny_bert.yaml")), "classification")
    return AdaptedModel(loaded.backbone, get_method(method).from_dict(fields), "classification", num_labels=2)


@pytest.mark.parametrize(
    "method, fields", [("p_tuning_v2", {}), ("prefix_tuning", {"prefix_projection": False}), ("full_finetune", {})]
)
def test_each_optimizer_group_gets_its_lr_and_decay(method: str, fields: dict) -> None:
    import torch

    from bench.settings import TrainerConfig
    from bench.train import make_optimizer, parameter_groups

    model = _tiny_model(method, **fields)
    settings = TrainerConfig(lr=0.1, head_lr=0.02, weight_decay=0.5)
    optimizer = make_optimizer(parameter_groups(model, settings), "adamw")
    names = {id(p): n for n, p in model.named_parameters()}
    group_of = {names[id(p)]: g for g in optimizer.param_groups for p in g["params"]}
    assert set(group_of) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name, group in group_of.items():
        exempt = (
            name.endswith("bias") or "LayerNorm" in name or name in ("soft_prompt.embedding.weight", "soft_prompt.flat")
        )
        assert group["lr"] == (0.02 if name.startswith("head.") else 0.1), name
        assert group["weight_decay"] == (0.0 if exempt else 0.5), name
    # behaviour, not just bookkeeping: with zero gradients AdamW only decays, by lr × weight_decay
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for parameter in before:
        dict(model.named_parameters())[parameter].grad = torch.zeros_like(before[parameter])
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in before:
            group = group_of[name]
            assert torch.allclose(parameter, before[name] * (1 - group["lr"] * group["weight_decay"])), name


def test_decay_exemptions_can_be_switched_off() -> None:
    from bench.settings import TrainerConfig
    from bench.train import parameter_groups

    model = _tiny_model("p_tuning_v2")
    groups = parameter_groups(model, TrainerConfig(lr=0.1, head_lr=0.1, decay_exemptions=False))
    assert {g["name"] for g in groups} == {"method.decay", "head.decay"}
    assert all(g["weight_decay"] == 0.01 for g in groups)


def test_the_record_carries_head_lr_and_the_optimizer_groups(tmp_path: Path) -> None:
    record = execute(run_config(["method=prompt_tuning", "model=tiny_bert", "trainer.head_lr=0.005"]), tmp_path)
    assert record["status"] == "ok", record["error"]
    assert record["provenance"]["config"]["trainer"]["head_lr"] == 0.005
    lrs = {g["name"]: g["lr"] for g in record["provenance"]["optimizer_groups"]}
    assert lrs == {"head.decay": 0.005, "head.no_decay": 0.005, "method.no_decay": 0.03}  # 0.03: method default
    assert record["provenance"]["trainer"]["lr"] == 0.03 and record["hparams"] == {}


# ---- the multirun summary -----------------------------------------------------------------------------------


def test_multirun_summary_counts_outcomes_and_a_job_that_died(tmp_path: Path) -> None:
    from bench.multirun import collect, summary_line, write_outcome

    for num, status in enumerate(["ok", "skipped", "diverged", "ok"]):
        write_outcome(tmp_path / str(num), status, tmp_path / "r.json")
    (tmp_path / "4").mkdir()  # a job folder without an outcome: the job was killed
    (tmp_path / "multirun.yaml").write_text("")
    assert summary_line(collect(tmp_path)) == "multirun: 2 ok, 1 skipped, 1 failed, 1 diverged, 0 interrupted"


def test_cpu_description_names_the_model_and_the_speed_relevant_flags(tmp_path: Path) -> None:
    from bench.record import cpu_description

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n"
    )
    described = cpu_description(cpuinfo)
    assert described["model"] == "AMD EPYC" and described["flags"] == ["avx2", "avx512f", "avx512_bf16"]
    cpuinfo.write_text("model name\t: Old Xeon\nflags\t\t: fpu avx avx2\n")
    assert cpu_description(cpuinfo)["flags"] == ["avx2"]  # no bf16 units: bf16 runs on an emulated path
    assert cpu_description(tmp_path / "absent")["flags"] is None
