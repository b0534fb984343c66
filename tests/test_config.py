"""Every config composes: each method × model × task, each sweep preset, each launcher."""

from __future__ import annotations

import importlib.util

import pytest
from omegaconf import OmegaConf

import methods
from tests.conftest import compose, group_choices

# models that generate: decoders and encoder-decoders
DECODERS = {
    m
    for m in group_choices("model")
    if OmegaConf.load(f"conf/model/{m}.yaml").decoder or OmegaConf.load(f"conf/model/{m}.yaml").get("seq2seq")
}


def _kind(task: str) -> str:
    return OmegaConf.load(f"conf/task/{task}.yaml").kind


def _composes(composer, method: str, model: str, task: str) -> None:
    if _kind(task) == "generation" and model not in DECODERS:
        return  # encoders cannot generate; the runner refuses this pair with a clear error
    cfg = composer([f"method={method}", f"model={model}", f"task={task}", "trainer=smoke"])
    assert (cfg.method.name, cfg.model.name, cfg.task.name) == (method, model, task)
    assert cfg.trainer.max_steps > 0


@pytest.mark.parametrize("task", group_choices("task"))
def test_every_model_task_pair_composes_with_every_method_in_turn(task: str, composer) -> None:
    """Pairwise coverage: every (model, task) pair, and every (method, task) pair as the methods cycle
    over the models (there are more models than methods); the full triple product is 5x slower and
    the groups only meet pairwise (a method's or task's keys interpolate the model's, not each other's)."""
    methods_cycle = group_choices("method")
    assert len(group_choices("model")) >= len(methods_cycle)
    for index, model in enumerate(group_choices("model")):
        _composes(composer, methods_cycle[index % len(methods_cycle)], model, task)


@pytest.mark.parametrize("method", group_choices("method"))
def test_every_method_model_pair_composes(method: str, composer) -> None:
    for model in group_choices("model"):
        _composes(composer, method, model, "synth_cls")


# conf/method/*.yaml vs the dataclass defaults: test_registry.py::test_method_yaml_repeats_the_dataclass_defaults


def test_method_yaml_set_equals_registry() -> None:
    assert set(group_choices("method")) == set(methods.METHODS)


@pytest.mark.parametrize("sweep", group_choices("sweep"))
def test_every_sweep_preset_composes(sweep: str) -> None:
    cfg = compose([f"sweep={sweep}"])
    assert cfg.sweep_name == sweep
    params = cfg.hydra.sweeper.params
    for group in ("method", "model", "task"):
        for choice in str(params[group]).split(","):
            assert choice in group_choices(group), f"sweep {sweep}: unknown {group} '{choice}'"


LAUNCHER_PLUGINS = {
    "local_parallel": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "ray_cluster": "hydra_plugins.hydra_ray_launcher",
}


@pytest.mark.parametrize("launcher", group_choices("hydra/launcher"))
def test_every_launcher_composes(launcher: str) -> None:
    if importlib.util.find_spec(LAUNCHER_PLUGINS[launcher]) is None:
        pytest.skip(f"{LAUNCHER_PLUGINS[launcher]} is an optional extra")
    cfg = compose([f"hydra/launcher={launcher}"])
    assert "_target_" in cfg.hydra.launcher


def test_hydra_keeps_its_own_folders_out_of_the_run_folders() -> None:
    """Run folders are computed in the job (bench.identity); Hydra's dirs only hold its logs."""
    cfg = compose(["method=prefix_tuning", "model=tiny_gpt2", "task=synth_cls", "seed=3", "sweep_name=s"])
    assert cfg.hydra.run.dir.startswith("results/runs/s/.hydra/")
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep == {
        "dir": "${runs_root}/${sweep_name}/.hydra/${now:%Y-%m-%d_%H-%M-%S_%f}",
        "subdir": "${hydra.job.num}",
    }  # one folder per invocation: the summary counts its jobs
    assert cfg.hydra.callbacks.summary._target_ == "bench.multirun.MultirunSummary"


def test_trainer_yaml_and_dataclass_defaults_agree() -> None:
    """conf/trainer/default.yaml holds every TrainerConfig field with the dataclass's default value."""
    import dataclasses

    from bench.settings import TrainerConfig

    yaml_defaults = OmegaConf.to_container(OmegaConf.load("conf/trainer/default.yaml"))
    assert yaml_defaults == {f.name: f.default for f in dataclasses.fields(TrainerConfig)}


@pytest.mark.parametrize("trainer", group_choices("trainer"))
def test_every_trainer_preset_passes_the_settings_check(trainer: str) -> None:
    from bench.settings import TrainerConfig

    cfg = compose([f"trainer={trainer}"])
    assert TrainerConfig.from_dict(OmegaConf.to_container(cfg.trainer)).name == trainer
