"""Typed model and task configs (bench.settings): every conf file builds, bad values fail in one line
before anything loads, and decoder/seq2seq/pooling are read from the typed config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from bench.settings import (
    ModelConfig,
    ModelConfigError,
    RunConfigError,
    TaskConfig,
    TaskConfigError,
    check_run_settings,
)
from tests.conftest import CONF, compose, group_choices, run_bench
from vocab import POOLING, TASK_KINDS


def composed(overrides: list[str]) -> dict:
    """The resolved plain config ``python -m bench OVERRIDES`` runs with."""
    return OmegaConf.to_container(compose(overrides, hydra_node=False), resolve=True)


@pytest.mark.parametrize("name", group_choices("model"))
def test_every_model_config_builds_and_declares_its_kind_once(name: str) -> None:
    raw = yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text())
    model = ModelConfig.from_dict(composed([f"model={name}"])["model"])
    assert model.name == name and model.pooling in POOLING
    # what the YAML declares is what the typed config says (absent: false), and never both
    assert (model.decoder, model.seq2seq) == (bool(raw.get("decoder")), bool(raw.get("seq2seq")))
    assert not (model.decoder and model.seq2seq)


@pytest.mark.parametrize("name", group_choices("task"))
def test_every_task_config_builds(name: str) -> None:
    task = TaskConfig.from_dict(composed([f"task={name}"])["task"])
    raw = yaml.safe_load((CONF / "task" / f"{name}.yaml").read_text())
    assert task.name == name and task.kind == raw["kind"] in TASK_KINDS
    assert task.metric == raw["metric"] and task.primary_metric == raw["primary_metric"]
    assert task.max_length == raw["max_length"]
    assert task.extra["data_dir"] is None  # loader keys are kept, unchecked


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.pooling=avg"], "model.pooling='avg' is not allowed; allowed: one of auto|first|last|mean|pooler"),
        (
            ["task.kind=regression"],
            "task.kind='regression' is not allowed; allowed: "
            "one of classification|multiple_choice|token_classification|generation",
        ),
        (
            ["model=tiny_gpt2", "+model.seq2seq=true"],
            "model.decoder=True and model.seq2seq=True (model 'tiny_gpt2') is not allowed; allowed: at most one",
        ),
        (["model.decoder=yes"], "model.decoder='yes' is not allowed; allowed: true or false"),
        (["model.source=local"], "model.source='local' is not allowed; allowed: one of tiny|"),
        (["task.max_length=0"], "task.max_length=0 is not allowed; allowed: an integer >= 1"),
        (["task.metric=[acc]"], "task.metric=['acc'] is not allowed; allowed: a metric name or a list of them"),
        (["task.primary_metric=f1"], "task.primary_metric='f1' is not allowed; allowed: one of accuracy|f1_macro"),
        (["~task.kind"], "task.kind is missing; allowed: one of classification|"),
        (["+task.input_format=t5"], "task.input_format='t5' is not allowed with task.loader='synthetic'; allowed:"),
        (["task=synth_d2t"], "task kind 'generation' needs a decoder or an encoder-decoder; model 'minilm'"),
    ],
)
def test_a_bad_model_or_task_setting_fails_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(RunConfigError) as raised:
        check_run_settings(composed(overrides))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert isinstance(raised.value, ModelConfigError | TaskConfigError)


@pytest.mark.parametrize(
    "override", ["task.kind=regression", "task.metric=[acc]", "task.primary_metric=f1", "+task.input_format=t5"]
)
def test_loading_a_task_refuses_what_the_run_check_refuses_in_the_same_words(override: str) -> None:
    """One declaration (bench.tasks.config.TaskConfig) serves both: the run's settings check and load_task."""
    from bench.tasks import load_task

    config = composed([override])
    with pytest.raises(TaskConfigError) as run:
        check_run_settings(config)
    with pytest.raises(TaskConfigError) as load:
        load_task(config["task"])
    assert str(load.value) == f"task config synth_cls: {run.value}"


def test_unknown_keys_are_kept_and_null_pooling_reads_auto() -> None:
    settings = check_run_settings(composed(["+model.revision=main", "model.pooling=null", "+task.note=x"]))
    assert settings.model.extra == {"revision": "main"} and settings.model.pooling == "auto"
    assert settings.task.extra["note"] == "x"
    assert settings.task.metric == ["accuracy", "f1_macro"]
    assert TaskConfig.from_dict({**composed([])["task"], "metric": "accuracy"}).metric == ["accuracy"]


def _loading_reached(*args, **kwargs):
    raise AssertionError("task or model loading was reached")


def test_a_bad_pooling_fails_the_run_before_anything_loads(tmp_path: Path, monkeypatch) -> None:
    from bench.runner import execute

    monkeypatch.setattr("bench.tasks.load_task", _loading_reached)
    monkeypatch.setattr("bench.models.load_model", _loading_reached)
    record = execute(composed(["method=head_only", "model=tiny_bert", "trainer=smoke", "model.pooling=avg"]), tmp_path)
    assert record["status"] == "failed"
    assert record["error"] == (
        "ModelConfigError: model.pooling='avg' is not allowed; allowed: one of auto|first|last|mean|pooler, or null"
    )


def test_the_runner_hands_the_typed_pooling_to_the_model(tmp_path: Path, monkeypatch) -> None:
    """The pooling the head reads is the typed config's, null meaning auto."""
    import methods.model
    from bench.runner import execute

    seen = {}

    class Stop(Exception):
        pass

    def capture(self, *args, pooling: str, **kwargs):
        seen["pooling"] = pooling
        raise Stop

    monkeypatch.setattr(methods.model.AdaptedModel, "__init__", capture)
    base = ["method=head_only", "model=tiny_bert", "trainer=smoke", "task.n_train=8", "task.n_validation=8"]
    for pooling, expected in (("mean", "mean"), ("null", "auto")):
        execute(composed(base + [f"model.pooling={pooling}"]), tmp_path / pooling)
        assert seen.pop("pooling") == expected


def test_the_model_kind_is_read_from_the_typed_config() -> None:
    from bench.models import model_spec
    from bench.speed.cli import parse_args, section_model

    assert model_spec("tiny_t5").seq2seq and model_spec("tiny_gpt2").decoder
    cfg = parse_args(["--model", "tiny_t5"])
    assert (cfg.cls_model, cfg.lm_model, cfg.s2s_model) == (None, None, "tiny_t5")
    with pytest.raises(ValueError, match="model 'tiny_bert' is not a decoder"):
        section_model("lm", parse_args(["--lm-model", "tiny_bert"]))


def test_a_bad_pooling_on_the_command_line_prints_one_line(runs_root: Path) -> None:
    args = ["method=head_only", "model=tiny_bert", "model.pooling=bogus", f"runs_root={runs_root}"]
    result = run_bench(args + ["sweep_name=bad"])
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [text for text in result.stderr.splitlines() if "model.pooling" in text]
    assert "ModelConfigError: model.pooling='bogus' is not allowed; allowed: one of auto|first|" in line
