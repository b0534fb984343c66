"""Head-only on the tasks the LM head reads (generation; classification and multiple choice as
text-to-text on T5/BART): the LM head is the probe and trains alone.

The four tiny models tie their LM head to the input embeddings, so every property below would fail if
head-only trained the shared tensor: the embeddings (the backbone) would move with the LM head.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from bench.runner import execute
from methods import get_method
from methods.head_only import untie_lm_head
from methods.model import AdaptedModel
from tests.conftest import run_bench
from tests.test_methods import TEXTS, load
from tests.test_runner import run_config
from tests.test_seq2seq import LABELS, TARGETS, source_batch, target_batch

pytestmark = pytest.mark.usefixtures("one_thread")

SEQ2SEQ = ("t5", "bart")
# (family, kind): decoders generate; encoder-decoders generate and run the label tasks as text-to-text
CASES = [(f, "generation") for f in ("gpt2", "llama", *SEQ2SEQ)] + [
    (f, k) for f in SEQ2SEQ for k in ("classification", "multiple_choice")
]
CASE_IDS = [f"{f}-{k}" for f, k in CASES]
LM_HEAD = "backbone.lm_head.weight"


def head_only(family: str, kind: str, seed: int = 0) -> tuple[AdaptedModel, object]:
    """(head-only AdaptedModel in eval mode, tokenizer) on a fresh tiny backbone."""
    loaded = load(family, kind)
    model = AdaptedModel(
        loaded.backbone,
        get_method("head_only")(),
        kind,
        num_labels={"generation": None, "classification": len(LABELS), "multiple_choice": 2}[kind],
        tokenizer=loaded.tokenizer,
        seed=seed,
        label_names=LABELS if kind == "classification" else None,
    )
    return model.eval(), loaded.tokenizer


def inputs_and_labels(family: str, kind: str, tok) -> tuple[dict, torch.Tensor]:
    """A right-padded batch and its labels: next-token targets, decoder targets, or class indices."""
    if family not in SEQ2SEQ:
        tok.padding_side = "right"
        encoded = tok(TEXTS, padding=True, return_tensors="pt")
        inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        return inputs, inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    inputs = source_batch(tok, TEXTS)
    if kind == "generation":
        return inputs, target_batch(tok, TARGETS)
    return inputs, torch.tensor([0, 1, 2, 0]) if kind == "classification" else torch.tensor([0, 1, 1, 0])


def lm_logits(model: AdaptedModel, backbone: torch.nn.Module, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """``backbone``'s LM logits on the batch, teacher-forced on the decoder side for an encoder-decoder."""
    with torch.no_grad():
        if not model.seq2seq:
            return backbone(**inputs).logits
        targets = labels if labels.dim() == 2 else torch.tensor([[5, 6, 7]] * len(labels))
        decoder_input_ids = backbone.prepare_decoder_input_ids_from_labels(labels=targets)
        return backbone(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).logits


def steps(model: AdaptedModel, inputs: dict, labels: torch.Tensor, count: int) -> list[float]:
    """AdamW steps (with weight decay, as the trainer) on the trainable parameters; the losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    model.train()
    losses = []
    for _ in range(count):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family,kind", CASES, ids=CASE_IDS)
def test_only_the_untied_lm_head_trains_and_the_backbone_stays_bit_identical(family: str, kind: str) -> None:
    model, tok = head_only(family, kind)
    backbone = model.backbone
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [LM_HEAD]
    embeddings, head = backbone.get_input_embeddings().weight, backbone.get_output_embeddings().weight
    assert head.untyped_storage().data_ptr() != embeddings.untyped_storage().data_ptr()
    assert torch.equal(head, embeddings)  # a copy: the same values, its own storage
    frozen = {k: v.clone() for k, v in backbone.state_dict().items() if k != "lm_head.weight"}
    inputs, labels = inputs_and_labels(family, kind, tok)
    model.train()
    model(**inputs, labels=labels).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {LM_HEAD} and head.grad.abs().sum() > 0
    model.zero_grad()
    losses = steps(model, inputs, labels, 5)
    assert losses[-1] < losses[0]
    after = backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items()), "a frozen backbone tensor changed"
    assert not torch.equal(head, embeddings)  # the LM head trained, the embeddings did not


@pytest.mark.parametrize("family,kind", CASES, ids=CASE_IDS)
def test_logits_before_training_equal_the_base_models(family: str, kind: str) -> None:
    """Untying changes nothing the model computes (T5 keeps its d_model**-0.5 output scale)."""
    model, tok = head_only(family, kind)
    base = load(family, kind).backbone.eval()
    inputs, labels = inputs_and_labels(family, kind, tok)
    assert torch.equal(lm_logits(model, model.backbone, inputs, labels), lm_logits(model, base, inputs, labels))
    if kind == "generation":  # and through the wrapper's own forward (positions from the mask)
        with torch.no_grad():
            wrapped = model.decoder_logits(**inputs, targets=labels) if model.seq2seq else model(**inputs).logits
        mask = inputs["attention_mask"].bool() if not model.seq2seq else labels != -100
        assert torch.allclose(wrapped[mask], lm_logits(model, base, inputs, labels)[mask], atol=1e-6)


@pytest.mark.parametrize("family,kind", CASES, ids=CASE_IDS)
def test_parameter_counts_are_the_lm_head(family: str, kind: str) -> None:
    """trainable = stored = vocab x d_model (these LM heads have no bias); the backbone counted as before."""
    model, _ = head_only(family, kind)
    base = load(family, kind).backbone
    vocab, d = base.get_output_embeddings().weight.shape
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["stored"] == counts["method_stored"] == vocab * d
    assert counts["head"] == 0 and counts["backbone"] == sum(p.numel() for p in base.parameters())


@pytest.mark.parametrize("family,kind", CASES, ids=CASE_IDS)
def test_adapter_round_trip_restores_the_lm_head_only(family: str, kind: str, tmp_path: Path) -> None:
    model, tok = head_only(family, kind)
    inputs, labels = inputs_and_labels(family, kind, tok)
    steps(model, inputs, labels, 2)
    model.eval()
    expected = lm_logits(model, model.backbone, inputs, labels)
    model.save_adapter(tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    assert list(tensors) == [LM_HEAD] and tensors[LM_HEAD].numel() == model.parameter_counts()["stored"]
    fresh, _ = head_only(family, kind)
    assert not torch.equal(lm_logits(fresh, fresh.backbone, inputs, labels), expected)
    fresh.load_adapter(tmp_path)
    assert torch.equal(lm_logits(fresh, fresh.backbone, inputs, labels), expected)
    base = load(family, kind).backbone
    assert torch.equal(fresh.backbone.get_input_embeddings().weight, base.get_input_embeddings().weight)


def test_an_untied_lm_head_keeps_its_own_weight() -> None:
    """A model whose LM head is already separate (T5 v1.1, tie_word_embeddings=false) trains it as it is."""
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        tie_word_embeddings=False,
    )  # fmt: skip
    backbone = LlamaForCausalLM(config)
    weight = backbone.lm_head.weight
    assert untie_lm_head(backbone).weight is weight


def test_head_only_runs_on_generation_and_text_to_text_and_keeps_the_base_hash(tmp_path: Path) -> None:
    """Through the runner: the record counts the LM head, and the backbone's own weights hash the same."""
    for model, task in (("tiny_t5", "synth_cls"), ("tiny_llama", "synth_d2t")):
        record = execute(run_config(["method=head_only", f"model={model}", f"task={task}"]), tmp_path / model)
        assert record["status"] == "ok", record["error"]
        hashes = record["provenance"]["base_weights_sha256"]
        assert hashes["before"] == hashes["after"]
        assert record["params"]["trainable"] == record["params"]["stored"] > 0 == record["params"]["head"]


def test_cli_head_only_on_t5_generation_ends_ok(runs_root: Path) -> None:
    """Issue #13's command: ``python -m bench method=head_only model=tiny_t5 task=synth_d2t trainer=smoke``."""
    args = ["method=head_only", "model=tiny_t5", "task=synth_d2t", "trainer=smoke", f"runs_root={runs_root}"]
    done = run_bench([*args, "save_adapter=true"])
    assert done.returncode == 0 and "[ok] head_only/tiny_t5/synth_d2t" in done.stdout, done.stderr[-2000:]
    (result,) = runs_root.rglob("result.json")
    stored = load_file(str(result.parent / "adapter" / "adapter.safetensors"))
    assert json.loads(result.read_text())["params"]["stored"] == stored[LM_HEAD].numel()
