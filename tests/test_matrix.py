"""`python -m bench method=X model=Y task=Z trainer=smoke` runs for every method × model on a matching task,
and for the real tasks from ../shared/data (skipped where the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.record import validate_record
from bench.runner import execute
from methods import method_names
from tests.conftest import CONF, SHARED_DATA, compose, group_choices

# from the registries: every registered method, every encoder-only or decoder-only model built in code
METHODS = method_names()
MODELS = {name: OmegaConf.load(CONF / "model" / f"{name}.yaml") for name in group_choices("model")}
TINY = [name for name, cfg in MODELS.items() if cfg.source == "tiny" and not cfg.get("seq2seq", False)]
TINY_ENCODERS = [name for name in TINY if not MODELS[name].decoder]
TINY_DECODERS = [name for name in TINY if MODELS[name].decoder]
TINY_SEQ2SEQ = [name for name, cfg in MODELS.items() if cfg.source == "tiny" and cfg.get("seq2seq", False)]


def smoke(overrides: list[str], run_dir: Path) -> dict:
    config = OmegaConf.to_container(compose(overrides + ["trainer=smoke"], hydra_node=False), resolve=True)
    record = execute(config, run_dir)
    assert validate_record(record) == []
    assert record["status"] == "ok", f"{overrides}: {record['error']}"
    assert record["metrics"]["final"], overrides
    return record


@pytest.mark.parametrize("model", TINY_ENCODERS + TINY_DECODERS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_tiny_model(method: str, model: str, tmp_path: Path) -> None:
    smoke([f"method={method}", f"model={model}", "task=synth_cls"], tmp_path / "cls")
    smoke([f"method={method}", f"model={model}", "task=synth_ner"], tmp_path / "ner")
    if model in TINY_DECODERS:  # head-only trains the LM head there
        record = smoke([f"method={method}", f"model={model}", "task=synth_d2t"], tmp_path / "d2t")
        assert record["throughput"]["generation_tokens_per_s"] > 0


@pytest.mark.parametrize("model", TINY_SEQ2SEQ)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_tiny_encoder_decoder(method: str, model: str, tmp_path: Path) -> None:
    """Generation and text-to-text classification through the decoder (head-only: the LM head trains);
    NER on the encoder's outputs."""
    smoke([f"method={method}", f"model={model}", "task=synth_ner"], tmp_path / "ner")
    record = smoke([f"method={method}", f"model={model}", "task=synth_cls"], tmp_path / "cls")
    assert "invalid_predictions" in record["metrics"]["final"]
    record = smoke([f"method={method}", f"model={model}", "task=synth_d2t"], tmp_path / "d2t")
    assert record["throughput"]["generation_tokens_per_s"] > 0


needs_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")
SUPERGLUE = SHARED_DATA / "superglue"
REAL_TASKS = [
    ("rte", "minilm", [f"task.data_dir={SUPERGLUE / 'RTE'}"]),
    ("cb", "minilm", [f"task.data_dir={SUPERGLUE / 'CB'}"]),
    ("copa", "minilm", [f"task.data_dir={SUPERGLUE / 'COPA'}", "task.files.validation=[train32.jsonl]"]),
    ("wic", "minilm", [f"task.data_dir={SUPERGLUE / 'WiC'}", "task.files.validation=[train32.jsonl]"]),
    (
        "record",
        "minilm",
        [
            f"task.data_dir={SUPERGLUE / 'ReCoRD'}",
            "task.files.validation=[train32.jsonl]",
            "task.max_length=48",
            "task.max_train_samples=8",
            "trainer.batch_size=1",  # a ReCoRD query is scored once per candidate entity: a big batch already
            "trainer.max_steps=2",
            "trainer.max_eval_samples=2",
        ],
    ),
    (
        "conll2003",
        "minilm",
        [f"task.data_dir={SHARED_DATA / 'ner/conll2003'}", "task.files.train=[dev.txt]", "task.max_train_samples=64"],
    ),
    (
        "e2e",
        "tiny_llama",
        [
            f"task.data_dir={SHARED_DATA / 'generation/e2e'}",
            "task.files.train=[devset.csv]",
            "task.max_train_samples=32",
            "task.generation.num_beams=1",
            "task.generation.max_new_tokens=8",
        ],
    ),
]


@needs_data
def test_a_task_without_validation_split_fails_with_a_clear_error(tmp_path: Path) -> None:
    config = OmegaConf.to_container(
        compose(
            ["model=tiny_bert", "task=copa", "trainer=smoke", f"task.data_dir={SUPERGLUE / 'COPA'}"], hydra_node=False
        ),
        resolve=True,
    )
    record = execute(config, tmp_path)
    assert record["status"] == "failed" and "no validation split" in record["error"]


# the cases on a pretrained model (not built in code) are slow: `-m "not slow"` loads no pretrained weights
REAL_CASES = [
    pytest.param(*case, id=case[0], marks=[] if MODELS[case[1]].source == "tiny" else [pytest.mark.slow])
    for case in REAL_TASKS
]


@needs_data
@pytest.mark.parametrize("task,model,extra", REAL_CASES)
def test_real_tasks_from_shared_data(task: str, model: str, extra: list[str], tmp_path: Path) -> None:
    record = smoke(["method=p_tuning_v2", f"model={model}", f"task={task}"] + extra, tmp_path)
    data = record["metrics"]["data"]
    assert data["train"] > 0 and data["validation"] > 0
    assert record["metrics"]["primary"] in record["metrics"]["final"]
