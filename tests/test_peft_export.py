"""PEFT interoperability (issues #15, #25): ``save_adapter=true`` writes ``peft/`` where PEFT can represent
the adapter, and ``PeftModel.from_pretrained(base, path)`` then gives our outputs to 1e-5; a classifier whose
head transformers' task class computes is exported as SEQ_CLS / TOKEN_CLS with the head in
``modules_to_save``, and ``AutoPeftModelFor…`` loads it (base: a saved copy of the tiny base, offline) with
our predictions.  The folder is Hub-ready: base model id, model card, tokenizer, labels.

Exactness conditions (methods/peft_export.py): unpadded or right-padded inputs; prefix tuning only on
RoPE decoders (prefix keys rotated by position N); encoders without token_type_ids.  The tests also
show the conditions are needed: left padding and GPT-2 prefixes differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from methods.model import AdaptedModel
from methods.peft_export import LABELS_FILE, PEFT_DIR, export_peft, head_plan, unsupported_reason
from tests.test_methods import ATOL, TEXTS, N, adapted, batch, load, method_config

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
    reason = record["adapter"].pop("head_reason")  # LlamaForSequenceClassification's score has no bias
    assert "LlamaForSequenceClassification" in reason and "without bias" in reason
    assert record["adapter"] == {
        "path": "adapter",
        "peft": True,
        "peft_path": "peft",
        "peft_type": "PROMPT_TUNING",
        "task_type": "FEATURE_EXTRACTION",
        "base_model": None,
        "head": None,
    }
    config = json.loads((tmp_path / PEFT_DIR / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None and config["modules_to_save"] is None
    meta, text = card(tmp_path / PEFT_DIR)
    assert "base_model" not in meta and meta["library_name"] == "peft"  # no empty base id from PEFT
    assert reason in text and "adapter/adapter.safetensors" in text
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


# ---- Hub-ready folders: task types, the head in modules_to_save, metadata (issue #25) --------------------------
LABELS = ["O", "B-PER", "I-PER"]


def card(directory: Path) -> tuple[dict, str]:
    """(front matter, text) of the export's model card."""
    _, front, text = (directory / "README.md").read_text().split("---\n", 2)
    return yaml.safe_load(front), text


def classifier(arch: str, method: str, kind: str, pooling: str = "auto"):
    """A trained-like tiny model with a 3-label head, in eval mode, and its tokenizer."""
    loaded = load(arch, kind)
    config = method_config(method, dropout=0.0, prefix_dropout=0.0)
    model = AdaptedModel(
        loaded.backbone, config, kind, num_labels=len(LABELS), tokenizer=loaded.tokenizer, seed=0, pooling=pooling
    ).eval()
    trained_like(model)
    return model, loaded.tokenizer


def saved_base(arch: str, kind: str, directory: Path) -> str:
    """A saved copy of the tiny base, which the export names as its base model (a Hub id would, offline)."""
    load(arch, kind).backbone.save_pretrained(directory)
    return str(directory)


def auto_peft(auto_class, directory: Path):
    """Loaded as a PEFT user would, with the label maps from labels.json (whose JSON keys are strings)."""
    labels = json.loads((directory / LABELS_FILE).read_text())
    id2label = {int(key): name for key, name in labels["id2label"].items()}
    return auto_class.from_pretrained(str(directory), id2label=id2label, label2id=labels["label2id"]).eval()


def assert_same_predictions(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    ours, theirs = (ours, theirs) if mask is None else (ours[mask], theirs[mask])
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.parametrize(
    "arch,method",
    [
        ("bert", "prompt_tuning"),
        ("bert", "lora"),
        ("roberta", "lora"),
        ("gpt2", "prompt_tuning"),
        ("llama", "prompt_tuning"),
        ("llama", "lora"),
    ],
)
def test_token_classification_loads_with_auto_peft_model(arch: str, method: str, tmp_path: Path) -> None:
    """TOKEN_CLS, our head as the task class's classifier/score: AutoPeftModelForTokenClassification
    predicts what we predict at every real token (PEFT returns the virtual positions first)."""
    from peft import AutoPeftModelForTokenClassification

    model, tok = classifier(arch, method, "token_classification")
    base = saved_base(arch, "token_classification", tmp_path / "base")
    entry = export_peft(model, tmp_path / PEFT_DIR, base, tok, LABELS)
    assert entry["task_type"] == "TOKEN_CLS" and entry["head"] in ("classifier", "score") and "head_reason" not in entry
    theirs = auto_peft(AutoPeftModelForTokenClassification, tmp_path / PEFT_DIR)
    assert theirs.config.id2label == dict(enumerate(LABELS))
    inputs = batch(tok, TEXTS, "right")
    with torch.no_grad():
        ours = model(**inputs).logits
        logits = theirs(**inputs).logits[:, model.num_virtual_tokens :]
    assert_same_predictions(ours, logits, inputs["attention_mask"].bool())


def test_sequence_classification_loads_with_auto_peft_model(tmp_path: Path) -> None:
    """SEQ_CLS where BertForSequenceClassification computes our head: LoRA with model.pooling=pooler, on
    sentence pairs (PEFT passes their segment ids as we do)."""
    from peft import AutoPeftModelForSequenceClassification

    model, tok = classifier("bert", "lora", "classification", pooling="pooler")
    base = saved_base("bert", "classification", tmp_path / "base")
    entry = export_peft(model, tmp_path / PEFT_DIR, base, tok, LABELS)
    assert entry["task_type"] == "SEQ_CLS" and entry["head"] == "classifier"
    theirs = auto_peft(AutoPeftModelForSequenceClassification, tmp_path / PEFT_DIR)
    inputs = dict(tok(TEXTS, TEXTS[::-1], padding=True, return_tensors="pt"))
    assert inputs["token_type_ids"].any()
    with torch.no_grad():
        assert_same_predictions(model(**inputs).logits, theirs(**inputs).logits)


@pytest.mark.parametrize(
    "arch,method,kind,pooling,words",
    [
        ("bert", "lora", "classification", "auto", "model.pooling=pooler"),
        ("bert", "prompt_tuning", "classification", "pooler", "virtual tokens first"),
        ("llama", "lora", "classification", "auto", "`score` = Linear without bias"),
        ("roberta", "lora", "classification", "auto", "RobertaClassificationHead"),
        ("llama", "prefix_tuning", "token_classification", "auto", "past_key_values"),
        ("bert", "lora", "multiple_choice", "auto", "no task type for multiple choice"),
    ],
)
def test_a_head_peft_cannot_hold_stays_out_and_says_why(
    arch: str, method: str, kind: str, pooling: str, words: str
) -> None:
    model, _ = classifier(arch, method, kind, pooling)
    plan = head_plan(model)
    assert plan.task_type == "FEATURE_EXTRACTION" and plan.head is None and words in plan.reason


def test_save_adapter_writes_a_hub_ready_folder(tmp_path: Path) -> None:
    """A real smoke run (LoRA, tiny BERT, synthetic NER) whose model.hub_id names a saved copy of its base:
    the folder carries the Hub metadata and the run's card, whose loading code (AutoPeftModelForTokenClassification
    with the labels, the folder's own tokenizer) predicts what the run's adapter/ predicts."""
    from peft import PeftModelForTokenClassification

    from bench.runner import execute
    from bench.tasks import load_task
    from methods import get_method
    from tests.test_runner import run_config

    base = saved_base("bert", "token_classification", tmp_path / "base")
    # tiny models declare no hub_id (+ adds it): here it names the saved copy, so PEFT loads the base offline
    config = run_config(
        ["method=lora", "model=tiny_bert", "task=synth_ner", "save_adapter=true", f"+model.hub_id={base}"]
    )
    record = execute(config, tmp_path / "run")
    assert record["status"] == "ok", record["error"]
    folder = tmp_path / "run" / PEFT_DIR
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == base and adapter_config["peft_version"]
    assert (adapter_config["peft_type"], adapter_config["task_type"]) == ("LORA", "TOKEN_CLS")
    assert adapter_config["modules_to_save"] == ["classifier"] == [record["adapter"]["head"]]
    meta, text = card(folder)
    assert (meta["base_model"], meta["library_name"], meta["pipeline_tag"]) == (base, "peft", "token-classification")
    primary = record["metrics"]["primary"]
    assert f"| validation | {primary} (primary) | {record['metrics']['best'][primary]:.4f} |" in text
    assert record["provenance"]["config_hash"] in text and "lora/tiny_bert/synth_ner/seed=0" in text
    names = load_task(config["task"]).label_names
    assert json.loads((folder / LABELS_FILE).read_text())["label2id"] == {name: i for i, name in enumerate(names)}
    loaded = load("bert", "token_classification")
    method = get_method("lora").from_dict({k: v for k, v in config["method"].items() if k != "name"})
    ours = AdaptedModel(loaded.backbone, method, "token_classification", num_labels=len(names)).eval()
    ours.load_adapter(tmp_path / "run" / "adapter")
    snippet = text.split("```python\n")[1].split("```")[0]  # the card's loading code, run as written
    scope: dict = {}
    exec(snippet.replace("<this folder or its Hub repository>", str(folder)), scope)  # noqa: S102 — our own card
    theirs, tokenizer = scope["model"], scope["tokenizer"]  # the folder's tokenizer pads right, as saved
    assert isinstance(theirs, PeftModelForTokenClassification) and tokenizer.padding_side == "right"
    inputs = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        assert_same_predictions(ours(**inputs).logits, theirs(**inputs).logits, inputs["attention_mask"].bool())


def test_every_model_source_says_how_its_weights_relate_to_the_hub_id() -> None:
    """The card states it for every run: a source without a note would fail the export."""
    from bench.models import HUB_RELATION, LOADERS

    assert set(HUB_RELATION) == set(LOADERS)
