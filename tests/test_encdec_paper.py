"""Encoder-decoder fidelity to the papers (issue #29): T5's SuperGLUE input format, BART's <s> targets,
Li & Liang's and Lester et al.'s settings under trainer=paper, and trainer=paper smoke runs on tiny T5/BART."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.runner import PAPER_METHOD_KEYS, PAPER_TASK_KEYS, PAPER_TRAINER_KEYS, apply_paper_settings, execute
from bench.tasks import TaskDataError, available_tasks, load_task, task_config
from methods.model import AdaptedModel
from tests.conftest import compose
from tests.test_methods import load, method_config

pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def resolved(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(overrides, hydra_node=False), resolve=True)


# ---- T5's SuperGLUE input format ------------------------------------------------------------------
def test_t5_input_format_writes_t5s_superglue_input(tmp_path: Path) -> None:
    rows = [{"premise": "A cat sat.", "hypothesis": "An animal sat.", "label": "entailment", "idx": 0}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "val.jsonl", rows)
    plain = load_task(task_config("rte", data_dir=str(tmp_path)))
    t5 = load_task(task_config("rte", data_dir=str(tmp_path), input_format="t5"))
    assert (plain.splits["train"][0]["text"], plain.splits["train"][0]["text_pair"]) == ("A cat sat.", "An animal sat.")
    # T5's glue preprocessor: task name, then the feature names sorted, each "name: value"; labels unchanged
    assert t5.splits["train"][0]["text"] == "rte hypothesis: An animal sat. premise: A cat sat."
    assert t5.splits["train"][0]["text_pair"] is None and t5.splits["train"][0]["label"] == 0


def test_t5_input_format_multirc_order_and_markup(tmp_path: Path) -> None:
    row = {
        "idx": 6,
        "passage": {
            "text": "Jason <b>objects</b>.<br>He left.",
            "questions": [{"idx": 0, "question": "Why?", "answers": [{"idx": 0, "text": "He objects", "label": 1}]}],
        },
    }
    write_jsonl(tmp_path / "val.jsonl", [row])
    write_jsonl(tmp_path / "train.jsonl", [row])
    data = load_task(task_config("multirc", data_dir=str(tmp_path), input_format="t5"))
    # glue_utils.py's order for MultiRC (question, answer, paragraph); <br> -> space, <b> dropped
    assert (
        data.splits["validation"][0]["text"]
        == "multirc question: Why? answer: He objects paragraph: Jason objects. He left."
    )


@pytest.mark.parametrize(("task", "message"), [("copa", "written for"), ("e2e", "input_format='t5' is not allowed")])
def test_t5_input_format_is_refused_where_it_is_not_written(task: str, message: str, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause"}])
    with pytest.raises(TaskDataError, match=message):
        load_task(task_config(task, data_dir=str(tmp_path), input_format="t5"))


# ---- trainer=paper --------------------------------------------------------------------------------
def test_every_paper_table_key_is_applied_somewhere() -> None:
    """A key the runner does not know would be dropped silently: every task's table uses known keys only."""
    known = set(PAPER_TRAINER_KEYS) | set(PAPER_METHOD_KEYS) | set(PAPER_TASK_KEYS)
    tables = {name: task_config(name).get("paper") or {} for name in available_tasks()}
    assert tables["xsum"] and tables["e2e"] and tables["webnlg"]
    for name, table in tables.items():
        for model, values in table.items():
            assert set(values) <= known, (name, model, sorted(set(values) - known))


def test_trainer_paper_resolves_li_and_liangs_xsum_setting() -> None:
    config = resolved(["method=prefix_tuning", "model=bart_large", "task=xsum", "trainer=paper"])
    applied = apply_paper_settings(config)
    assert applied == config["task"]["paper"]["bart_large"]
    method, trainer = config["method"], config["trainer"]
    assert (method["num_virtual_tokens"], method["prefix_hidden_size"], method["prefix_dropout"]) == (200, 800, 0.0)
    assert method["prefix_mlp"] == "per_kind" and method["prefix_placement"] == "all"  # Li & Liang's three MLPs
    assert (trainer["lr"], trainer["epochs"], trainer["batch_size"]) == (5e-5, 30, 48)
    assert config["task"]["max_length"] == 1024 and method["init"] == "unit_normal"  # nn.Embedding's N(0, 1)
    # the table is keyed by model: GPT-2 on XSum gets no Li & Liang setting (their XSum runs are BART's)
    assert (
        apply_paper_settings(resolved(["method=prefix_tuning", "model=gpt2_medium", "task=xsum", "trainer=paper"]))
        is None
    )


def test_trainer_paper_resolves_lesters_t5_setting_with_t5s_input() -> None:
    config = resolved(["method=prompt_tuning", "model=t5_v1_1_large_lm", "task=rte", "trainer=paper"])
    apply_paper_settings(config)
    trainer = config["trainer"]
    assert (trainer["lr"], trainer["optimizer"], trainer["lr_schedule"], trainer["warmup_ratio"]) == (
        0.3,
        "adafactor",
        "constant",
        0.0,
    )
    assert config["method"]["num_virtual_tokens"] == 100 and config["task"]["input_format"] == "t5"
    assert config["method"]["init"] == "uniform"
    other = resolved(["method=prompt_tuning", "model=roberta_large", "task=rte", "trainer=paper"])
    apply_paper_settings(other)
    assert other["task"].get("input_format", "plain") == "plain"  # T5's format is for the T5 entry only


def test_paper_initialisations_draw_from_their_distributions() -> None:
    from methods.soft_prompt import initial_embeddings
    from methods.virtual import BackboneSpec

    spec = BackboneSpec(hidden_size=64, num_layers=1, num_kv_heads=1, head_dim=64, vocab_size=10, embedding_std=0.02)
    generator = torch.Generator().manual_seed(0)
    normal = initial_embeddings(spec, 200, "unit_normal", None, generator)
    uniform = initial_embeddings(spec, 200, "uniform", None, generator)
    default = initial_embeddings(spec, 200, "random", None, generator)
    assert abs(normal.std().item() - 1.0) < 0.05 and abs(default.std().item() - 0.02) < 0.002
    assert 0.0 <= uniform.min().item() and uniform.max().item() < 0.5 and abs(uniform.mean().item() - 0.25) < 0.01


# ---- BART targets ---------------------------------------------------------------------------------
def test_bart_targets_open_with_bos_and_generation_forces_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained as BART is: labels <s> … </s>, decoder input </s> <s> …; generation's first token is <s>."""
    loaded = load("bart", "generation")
    model = AdaptedModel(
        loaded.backbone, method_config("prompt_tuning"), "generation", tokenizer=loaded.tokenizer, target_bos=True
    ).eval()
    config = model.backbone.config
    seen = {}
    forward = model.backbone.forward

    def spy(*args, **kwargs):
        seen.setdefault("decoder_input_ids", kwargs.get("decoder_input_ids"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.backbone, "forward", spy)
    source = loaded.tokenizer(["a b c"], return_tensors="pt")
    target = torch.tensor([[7, 8, config.eos_token_id]])
    with torch.no_grad():
        model(source["input_ids"], source["attention_mask"], labels=target)
    assert seen["decoder_input_ids"].tolist() == [[config.decoder_start_token_id, config.bos_token_id, 7, 8]]
    tokens = model.generate(source["input_ids"], source["attention_mask"], max_new_tokens=3, do_sample=False)
    assert tokens[0, 0].item() == config.bos_token_id
    plain = AdaptedModel(loaded.backbone, method_config("prompt_tuning"), "generation", tokenizer=loaded.tokenizer)
    assert plain.target_start is None  # T5 and every model not declaring target_bos: targets as before


def test_target_bos_is_only_for_encoder_decoders() -> None:
    from bench.settings import ModelConfig, ModelConfigError

    assert ModelConfig.from_dict(resolved(["model=bart_large"])["model"]).target_bos
    with pytest.raises(ModelConfigError, match="model.target_bos=True .* without model.seq2seq=True"):
        ModelConfig.from_dict({**resolved(["model=tiny_gpt2"])["model"], "target_bos": True})


def test_bart_label_words_open_with_bos() -> None:
    loaded = load("bart", "classification")
    names = ["yes", "no"]
    kwargs = dict(num_labels=2, tokenizer=loaded.tokenizer, label_names=names)
    with_bos = AdaptedModel(
        loaded.backbone, method_config("prompt_tuning"), "classification", target_bos=True, **kwargs
    )
    without = AdaptedModel(loaded.backbone, method_config("prompt_tuning"), "classification", **kwargs)
    bos = loaded.backbone.config.bos_token_id
    assert with_bos.label_words == [[bos, *word] for word in without.label_words]


# ---- trainer=paper smoke runs ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "paper_task", "paper_model"), [("tiny_t5", "e2e", "gpt2_medium"), ("tiny_bart", "xsum", "bart_large")]
)
def test_trainer_paper_smoke_run_on_tiny_encoder_decoders(
    model: str, paper_task: str, paper_model: str, tmp_path: Path
) -> None:
    """Li & Liang's table for the task, given to the tiny model on xsum/e2e-shaped data (synth_d2t), composes and
    trains (two steps; the paper's epochs would be hours)."""
    overrides = ["method=prefix_tuning", f"model={model}", "task=synth_d2t", "trainer=paper"]
    overrides += ["task.n_train=16", "task.n_validation=4", "task.n_test=0", "trainer.max_steps=2"]
    config = resolved(overrides)
    config["task"]["paper"] = {model: task_config(paper_task)["paper"][paper_model]}
    record = execute(config, tmp_path)
    assert record["status"] == "ok", record.get("error")
    applied = record["provenance"]["paper_settings"]
    assert applied == config["task"]["paper"][model]
    # per kind (the default): encoder, decoder and cross-attention each get N·d + d·h + h + h·P_k + P_k
    n, h, d, p_kind = applied["num_virtual_tokens"], applied["prefix_hidden_size"], 32, 2 * 2 * 4 * 8
    assert record["params"]["method_trainable"] == 3 * (n * d + d * h + h + h * p_kind + p_kind)
