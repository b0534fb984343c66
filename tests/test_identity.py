"""Run identity: one declaration decides both ``config_hash`` and the folder slug (bench.identity)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf, open_dict

from bench.identity import PerMethodError, apply_per_method, config_hash, data_digest, identity_view, job_point, run_dir
from bench.settings import TrainerConfig
from tests.conftest import compose

BASE = ["method=lora", "model=tiny_bert", "task=synth_ner", "sweep=cpu_ner", "task.data_dir=null"]


def job(overrides: list[str]) -> tuple[dict, dict]:
    """(hparams, resolved config) as the job in bench/__main__.py computes them."""
    cfg = compose(overrides)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    config = OmegaConf.to_container(cfg, resolve=True)
    return job_point(config, choices), config


def test_sweep_only_blocks_and_bookkeeping_never_enter_the_identity() -> None:
    point, config = job(BASE)
    others = [
        "protocol.grid.prompt_tuning={trainer.lr:[0.5]}",  # another method's grid in the preset
        "protocol.seeds=[0,1,2,3,4]",
        "data_root=/elsewhere",
        "logger=mlflow",  # its default dir interpolates runs_root
        "runs_root=/tmp/other_root",
        "device=cpu",
        "gradient_checkpointing=true",
        "save_adapter=true",
        "force=true",
        "trainer.timing_warmup_steps=9",
        "trainer.eval_feature_cache_mb=0",
        "distributed.nproc_per_node=2",  # the same global batch over more ranks: the same computation
        "distributed.strategy=fsdp",
    ]
    for override in others:
        other_point, other = job(BASE + [override])
        assert config_hash(other) == config_hash(config), override
        assert other_point == point == {"task.data_dir": None}, override
        assert run_dir(other, other_point).parts[-5:] == run_dir(config, point).parts[-5:], override


def test_what_changes_the_numbers_changes_both_hash_and_folder() -> None:
    point, config = job(BASE)
    for override, expected in [
        ("trainer.lr=0.01", {"trainer.lr": 0.01}),
        ("dtype=bf16", {"dtype": "bf16"}),
        ("method.r=4", {"method.r": 4}),
        ("trainer=paper", {"trainer": "paper"}),  # a trainer preset gets its own folder
        ("task.max_length=16", {"task.max_length": 16}),
    ]:
        other_point, other = job(BASE + [override])
        assert other_point == {"task.data_dir": None, **expected}, override
        assert config_hash(other) != config_hash(config), override
        assert run_dir(other, other_point) != run_dir(config, point), override


def test_a_data_folder_enters_as_the_digest_of_its_files(tmp_path: Path) -> None:
    for name, text in (("a", "x O\n"), ("b", "x O\n"), ("c", "y B-PER\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.txt").write_text(text)
    (tmp_path / "b" / ".DS_Store").write_text("noise")  # hidden files are not data
    assert data_digest(str(tmp_path / "a")) == data_digest(str(tmp_path / "b")) != data_digest(str(tmp_path / "c"))
    assert data_digest(str(tmp_path / "none")) == f"missing:{tmp_path / 'none'}"
    base = BASE[:-1] + [f"task.data_dir={tmp_path / 'a'}"]
    point_a, config_a = job(base)
    point_b, config_b = job(BASE[:-1] + [f"task.data_dir={tmp_path / 'b'}"])
    point_c, config_c = job(BASE[:-1] + [f"task.data_dir={tmp_path / 'c'}"])
    assert config_hash(config_a) == config_hash(config_b) != config_hash(config_c)
    assert run_dir(config_a, point_a) == run_dir(config_b, point_b) != run_dir(config_c, point_c)


def test_a_trainer_setting_added_with_the_old_behaviour_keeps_older_identities() -> None:
    _, config = job(BASE)
    trainer = dict(config["trainer"])
    trainer.pop("max_grad_norm")  # as a record written before the key existed would hold it
    older = {**config, "trainer": trainer}
    assert TrainerConfig().max_grad_norm == config["trainer"]["max_grad_norm"]
    assert config_hash(older) == config_hash(config)
    assert "timing_warmup_steps" not in identity_view(config)["trainer"]  # computes=False fields


def test_trainer_paper_values_are_applied_before_the_hash(tmp_path: Path) -> None:
    from bench.runner import run_point

    point, config = job(["method=prefix_tuning", "model=roberta_large", "task=rte", "trainer=paper"])
    assert point == {"trainer": "paper"}
    config["task"]["data_dir"] = str(tmp_path / "absent")
    before = config_hash(config)
    outcome = run_point(config, tmp_path / "run", [], point)  # fails on the missing data, but records
    assert outcome.record["provenance"]["paper_settings"]["num_virtual_tokens"] == 128  # conf/task/rte.yaml
    assert outcome.record["provenance"]["config_hash"] == config_hash(config) != before


def test_a_presets_per_method_values_reach_only_that_method_and_are_not_folder_hyperparameters() -> None:
    demo = ["model=tiny_bert", "sweep=demo"]
    point, config = job(["method=prompt_tuning", *demo])
    assert config["method"]["num_virtual_tokens"] == 10 and point == {}
    assert config_hash(config) == config_hash(
        job(["method=prompt_tuning", "model=tiny_bert", "sweep=demo", "method.num_virtual_tokens=10"])[1]
    )
    # a command-line value still wins over the preset's and names the folder
    point, config = job(["method=prompt_tuning", *demo, "method.num_virtual_tokens=5"])
    assert config["method"]["num_virtual_tokens"] == 5 and point == {"method.num_virtual_tokens": 5}
    lora_point, lora = job(["method=lora", *demo])  # no entry for LoRA: untouched, and no hyperparameter
    assert "num_virtual_tokens" not in lora["method"] and lora_point == {}


def test_a_per_method_entry_naming_no_method_or_no_setting_is_one_line() -> None:
    import pytest

    config = {"method": {"name": "lora", "r": 8}, "per_method": {"lora": {"method.rank": 4}}}
    with pytest.raises(PerMethodError, match=r"per_method.lora: 'method.rank' is not a setting of this run"):
        apply_per_method(config)
    with pytest.raises(PerMethodError, match=r"per_method: 'loraa' is not a registered method"):
        apply_per_method({"method": {"name": "lora"}, "per_method": {"loraa": {}}})


def test_setting_is_the_run_less_its_seed() -> None:
    from bench.identity import run_label, setting_hash, setting_label

    point, config = job(BASE)
    _, other_seed = job([*BASE, "seed=7"])
    other_point, other_lr = job([*BASE, "trainer.lr=0.5"])
    assert setting_hash(config) == setting_hash(other_seed) != setting_hash(other_lr)
    assert setting_label(config, point) == setting_label(other_seed, point) != setting_label(other_lr, other_point)
    assert run_label(config, point) == f"{setting_label(config, point)}/seed={config['seed']}"
    assert str(run_dir(config, point)).endswith(run_label(config, point))


def test_composed_defaults_are_composed_once_per_choices_and_environment(monkeypatch) -> None:
    import hydra

    import bench.identity as identity

    calls = []

    counted = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: calls.append(k["overrides"]) or counted(*a, **k))
    monkeypatch.setattr(identity, "_COMPOSED", {})
    choices = {"method": "lora", "model": "tiny_bert", "task": "conll2003", "trainer": "smoke", "sweep": "cpu_ner"}
    first = identity.composed_defaults(choices)
    first["trainer"]["lr"] = 123.0  # a caller's edit must not reach the next caller
    second = identity.composed_defaults(choices)
    assert len(calls) == 1 and second["trainer"]["lr"] != 123.0
    fresh = OmegaConf.to_container(compose([f"{g}={c}" for g, c in choices.items()], hydra_node=False), resolve=True)
    assert second == fresh
    calls.clear()
    monkeypatch.setenv("SOFTPROMPT_DATA", "/elsewhere")  # an interpolation reads it: composed anew
    assert identity.composed_defaults(choices)["task"]["data_dir"] == "/elsewhere/ner/conll2003" and len(calls) == 1
