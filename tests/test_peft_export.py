"""PEFT interoperability (issue #15): ``save_adapter=true`` writes ``peft/`` where PEFT can represent
the adapter, and ``PeftModel.from_pretrained(base, path)`` then gives our outputs to 1e-5.

Exactness conditions (methods/peft_export.py): unpadded or right-padded inputs; prefix tuning only on
RoPE decoders (prefix keys rotated by position N); encoders without token_type_ids.  The tests also
show the conditions are needed: left padding and GPT-2 prefixes differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from methods.peft_export import PEFT_DIR, export_peft, unsupported_reason
from tests.test_methods import ATOL, TEXTS, N, adapted, batch, load

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like(model) -> None:
    """Move every trainable tensor off its initial value, as training would (LoRA's B starts at 0)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)


def ours_and_peft(arch: str, method: str, kind: str, tmp_path: Path, **overrides):
    """(our model, the PEFT model loaded from the exported folder, tokenizer, export entry)."""
    from peft import PeftModel

    model, tok = adapted(arch, method, kind, prefix_dropout=0.0, dropout=0.0, **overrides)
    trained_like(model)
    entry = export_peft(model, tmp_path / PEFT_DIR)
    assert entry["peft"] is True, entry
    base = load(arch, kind).backbone  # a fresh copy of the same frozen backbone
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / PEFT_DIR)).eval()
    return model, peft_model, tok, entry


def outputs(model, peft_model, inputs: dict[str, torch.Tensor], virtual: int):
    """(ours, theirs) at the real positions: LM logits for generation, hidden states otherwise."""
    with torch.no_grad():
        ours = model(**inputs).logits if model.kind == "generation" else model.encode(**inputs)
        out = peft_model(**inputs)
        theirs = out.logits if model.kind == "generation" else out.last_hidden_state
    return ours, theirs[:, virtual:]


@pytest.mark.parametrize(
    "arch,kind",
    [
        ("bert", "classification"),
        ("roberta", "classification"),
        ("gpt2", "generation"),
        ("llama", "generation"),
        ("llama", "classification"),
    ],
)
def test_prompt_tuning_round_trip(arch: str, kind: str, tmp_path: Path) -> None:
    model, peft_model, tok, entry = ours_and_peft(arch, "prompt_tuning", kind, tmp_path)
    assert entry["peft_type"] == "PROMPT_TUNING"
    inputs = batch(tok, TEXTS, "right")
    inputs.pop("token_type_ids", None)
    ours, theirs = outputs(model, peft_model, inputs, N)
    mask = inputs["attention_mask"].bool()
    assert torch.allclose(ours[mask], theirs[mask], atol=ATOL)
    if model.causal:  # left padding: the base model numbers the pads, ours follow the mask
        inputs = batch(tok, TEXTS, "left")
        ours, theirs = outputs(model, peft_model, inputs, N)
        mask = inputs["attention_mask"].bool()
        assert (ours[mask] - theirs[mask]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["generation", "classification"])
@pytest.mark.parametrize("projection", [True, False])
def test_prefix_tuning_round_trip_on_rope_decoder(kind: str, projection: bool, tmp_path: Path) -> None:
    """Llama (GQA, RoPE): exact once the prefix keys carry the rotation of position N."""
    model, peft_model, tok, entry = ours_and_peft(
        "llama", "prefix_tuning", kind, tmp_path, prefix_projection=projection
    )
    assert entry["peft_type"] == "PREFIX_TUNING"
    inputs = batch(tok, TEXTS, "right")
    ours, theirs = outputs(model, peft_model, inputs, 0)
    mask = inputs["attention_mask"].bool()
    assert torch.allclose(ours[mask], theirs[mask], atol=ATOL)


@pytest.mark.parametrize(
    "arch,kind",
    [("bert", "classification"), ("roberta", "classification"), ("gpt2", "generation"), ("llama", "generation")],
)
def test_lora_round_trip(arch: str, kind: str, tmp_path: Path) -> None:
    model, peft_model, tok, entry = ours_and_peft(arch, "lora", kind, tmp_path)
    assert entry["peft_type"] == "LORA"
    inputs = batch(tok, TEXTS, "right")  # left padding: the base numbers positions over the pads, ours don't
    ours, theirs = outputs(model, peft_model, inputs, 0)
    mask = inputs["attention_mask"].bool()
    assert torch.allclose(ours[mask], theirs[mask], atol=ATOL)
    base = load(arch, kind).backbone.eval()
    with torch.no_grad():  # the adapter is really applied: the bare base model gives other outputs
        bare = base(**inputs)
    bare = bare.logits if kind == "generation" else bare.last_hidden_state
    assert (bare[mask] - theirs[mask]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "arch,method,words",
    [
        ("bert", "prefix_tuning", "encoder"),
        ("gpt2", "prefix_tuning", "absolute position"),
        ("llama", "p_tuning_v2", "P-Tuning v2"),
        ("bert", "full_finetune", "added parameters"),
        ("bert", "head_only", "added parameters"),
    ],
)
def test_unrepresentable_adapters_say_why(arch: str, method: str, words: str, tmp_path: Path) -> None:
    model, _ = adapted(arch, method, "generation" if method == "prefix_tuning" and arch == "gpt2" else "classification")
    entry = export_peft(model, tmp_path / PEFT_DIR)
    assert entry["peft"] is False and words in entry["reason"] and entry["reason"] == unsupported_reason(model)
    assert not (tmp_path / PEFT_DIR).exists()


def test_save_adapter_writes_peft_folder_beside_the_record(tmp_path: Path) -> None:
    """A real smoke run: ``peft/`` beside result.json, loaded by PEFT, equal to ours; the record says so."""
    from peft import PeftModel

    from bench.runner import execute
    from methods import get_method
    from methods.model import AdaptedModel
    from tests.test_runner import run_config

    config = run_config(
        [
            "method=prompt_tuning",
            "model=tiny_llama",
            "task=synth_cls",
            "save_adapter=true",
            "method.num_virtual_tokens=4",
        ]
    )
    record = execute(config, tmp_path)
    assert record["status"] == "ok", record["error"]
    assert record["adapter"] == {
        "path": "adapter",
        "peft": True,
        "peft_path": "peft",
        "peft_type": "PROMPT_TUNING",
        "task_type": "FEATURE_EXTRACTION",
    }
    assert (tmp_path / "result.json").exists() and (tmp_path / PEFT_DIR / "adapter_config.json").exists()
    loaded = load("llama")
    method = get_method("prompt_tuning").from_dict({"num_virtual_tokens": 4})
    ours = AdaptedModel(loaded.backbone, method, "classification", num_labels=2, tokenizer=loaded.tokenizer).eval()
    ours.load_adapter(tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(load("llama").backbone, str(tmp_path / PEFT_DIR)).eval()
    inputs = batch(loaded.tokenizer, TEXTS, "right")
    mine, theirs = outputs(ours, peft_model, inputs, 4)
    mask = inputs["attention_mask"].bool()
    assert torch.allclose(mine[mask], theirs[mask], atol=ATOL)


def test_unrepresentable_run_keeps_our_format_and_says_why(tmp_path: Path) -> None:
    from bench.runner import execute
    from tests.test_runner import run_config

    record = execute(
        run_config(["method=p_tuning_v2", "model=tiny_bert", "task=synth_cls", "save_adapter=true"]), tmp_path
    )
    assert record["status"] == "ok", record["error"]
    assert record["adapter"]["peft"] is False and "P-Tuning v2" in record["adapter"]["reason"]
    assert (tmp_path / "adapter" / "adapter.safetensors").exists() and not (tmp_path / PEFT_DIR).exists()
