"""Property tests of the adaptation methods (issue #3) on tiny random models built from configs.

Every test states one property of the brief and would fail if the code broke it: declarations
against behaviour, a frozen backbone, K/V shapes from ``num_key_value_heads``, unchanged positions,
padding invariance, aligned outputs, non-identity, exact parameter formulas, save/load, parity with
PEFT where PEFT works, initialisation options, gradient checkpointing and a bf16 backbone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaModel

import methods
import methods.injection as injection
from bench.models import LoadedModel, load_model
from methods import MethodConfigError, NothingToTrainError, acts_on_backbone, get_method
from methods.injection import UnsupportedArchitectureError
from methods.model import AdaptedModel, frequent_token_ids
from methods.virtual import PrefixConfig, SoftPromptConfig

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
ARCHS = ("bert", "roberta", "gpt2", "llama")
DECODERS = ("gpt2", "llama")
# every list of methods comes from the registry, so a new method is tested without an edit here
ALL = tuple(methods.method_names())
SOFT = tuple(m for m in ALL if issubclass(get_method(m), SoftPromptConfig))  # built on methods.virtual.SoftPrompt
PREFIX = tuple(m for m in ALL if issubclass(get_method(m), PrefixConfig))  # with the prefix MLP's fields
# every method with its defaults, plus the flat-prefix variants (prefix_projection=False)
CASES = [(m, {}) for m in ALL] + [(m, {"prefix_projection": False}) for m in PREFIX]
CASE_IDS = [m + ("-flat" if o else "") for m, o in CASES]
# small sizes that differ from every backbone dimension, so a wrong factor in a formula shows
N, HIDDEN = 5, 16
SMALL = {"num_virtual_tokens": N, "prefix_hidden_size": HIDDEN}
TEXTS = ["the cat sat on the mat", "dogs bark", "i like green apples very much today", "rain falls"]
# geometry of the tiny configs (bench/models.py): d, layers, heads, kv_heads, head_dim
GEOMETRY = {"bert": (32, 2, 4, 4, 8), "roberta": (32, 2, 4, 4, 8), "gpt2": (32, 2, 4, 4, 8), "llama": (48, 2, 6, 2, 8)}
VOCAB = 30522  # the MiniLM (BERT) tokenizer every tiny model uses
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- helpers --------------------------------------------------------------------------------------
def load(arch: str, kind: str = "classification") -> LoadedModel:
    """A fresh tiny model: the same init seed gives the same weights every call."""
    return load_model(yaml.safe_load((CONF / f"tiny_{arch}.yaml").read_text()), kind)


def method_config(method: str, **overrides: Any) -> methods.MethodConfig:
    """The method with the small test sizes where it has those fields, then ``overrides``."""
    cls = get_method(method)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls.from_dict({k: v for k, v in {**SMALL, **overrides}.items() if k in known})


def adapted(
    arch: str, method: str, kind: str = "classification", seed: int = 0, **overrides: Any
) -> tuple[AdaptedModel, Any]:
    """(AdaptedModel in eval mode, tokenizer) on a fresh tiny backbone."""
    loaded = load(arch, kind)
    model = AdaptedModel(
        loaded.backbone,
        method_config(method, **overrides),
        kind,
        num_labels=None if kind == "generation" else 3,
        tokenizer=loaded.tokenizer,
        seed=seed,
    )
    return model.eval(), loaded.tokenizer


def batch(tokenizer: Any, texts: list[str], side: str = "right") -> dict[str, torch.Tensor]:
    tokenizer.padding_side = side
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def backbone_hash(backbone: torch.nn.Module) -> str:
    """sha256 of the backbone's own weights (LoRA's added tensors excluded)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        if "lora_" not in name:
            digest.update(name.encode() + tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def train_steps(model: AdaptedModel, inputs: dict, labels: torch.Tensor, steps: int) -> list[float]:
    """AdamW at the method's default LR with the trainer's clipping; returns the losses."""
    params = trainable(model)
    optimizer = torch.optim.AdamW(params, lr=model.method.lr, weight_decay=0.01)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@functools.cache
def backbone_count(arch: str, kind: str) -> int:
    """Backbone parameters the adapted model uses: tied weights once, an encoder's pooler not at all
    (the head pools the first real token itself, so AdaptedModel drops the pooler)."""
    backbone = load(arch, kind).backbone
    pooler = getattr(backbone, "pooler", None)
    unused = sum(p.numel() for p in pooler.parameters()) if pooler is not None else 0
    return sum(p.numel() for p in backbone.parameters()) - unused  # parameters() skips tied duplicates


@pytest.fixture
def attention_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records every call into the attention kernel: the key length/dtype it received (prefix included).
    Tests clear it after building a model: the attention-module discovery dry run goes through it too."""
    calls: list[dict[str, Any]] = []
    kernel = injection.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        calls.append(
            {
                "module": module,
                "key": tuple(key.shape),
                "dtype": key.dtype,
                "prefix": getattr(module, injection._PREFIX_ATTR, None),
            }
        )
        return kernel(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(injection, "sdpa_attention_forward", spy)
    return calls


# ---- declarations ---------------------------------------------------------------------------------
def test_the_six_builtin_methods_are_registered_with_their_declarations() -> None:
    """The built-ins' declarations as the brief defines the methods; the registry may hold more."""
    expected = {  # input_tokens, attention_prefix, reparameterized, attention_weights, trains_backbone, baseline
        "prompt_tuning": (True, False, False, False, False, False),
        "prefix_tuning": (False, True, True, False, False, False),
        "p_tuning_v2": (True, True, True, False, False, False),
        "full_finetune": (False, False, False, True, True, True),
        "head_only": (False, False, False, False, False, True),
        "lora": (False, False, False, True, False, True),
    }
    table = methods.declarations()
    assert {name: tuple(table[name][f] for f in methods.DECLARATIONS) for name in expected} == expected


@pytest.mark.parametrize("method,overrides", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_declarations_match_behaviour(arch: str, method: str, overrides: dict, attention_calls: list) -> None:
    """input_tokens: the backbone sees L+N positions; attention_prefix: every attention call gets N
    more keys; reparameterized: what is stored (MLP folded) is not what is trained; trains_backbone:
    backbone weights require grad; attention_weights: parameters inside the attention modules train."""
    model, tok = adapted(arch, method, **overrides)
    attention_calls.clear()
    declared = model.method.declared()
    inputs = batch(tok, TEXTS)
    seen: list[int] = []
    model.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
    length = inputs["input_ids"].shape[1]
    assert seen == [length + (N if declared["input_tokens"] else 0)]
    spec = model.spec
    assert len(attention_calls) == spec.num_layers
    assert len({id(c["module"]) for c in attention_calls}) == spec.num_layers
    extra_keys = N if declared["attention_prefix"] else 0
    assert all(c["key"][2] == seen[0] + extra_keys for c in attention_calls)
    counts = model.parameter_counts()
    assert (counts["method_trainable"] != counts["method_stored"]) == declared["reparameterized"]
    backbone_trains = any(p.requires_grad for n, p in model.backbone.named_parameters() if "lora_" not in n)
    assert backbone_trains == declared["trains_backbone"]
    attention_trains = any(p.requires_grad for m in model.attention_modules for p in m.parameters())
    assert attention_trains == declared["attention_weights"]


def test_flat_prefix_declares_itself_not_reparameterized() -> None:
    assert method_config("prefix_tuning").declared()["reparameterized"] is True
    assert method_config("prefix_tuning", prefix_projection=False).declared()["reparameterized"] is False


# ---- frozen backbone, gradients -------------------------------------------------------------------
@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_frozen_and_gradients_reach_only_method_and_head(arch: str, method: str) -> None:
    model, tok = adapted(arch, method)
    inputs = batch(tok, TEXTS, "left" if arch in DECODERS else "right")
    before = backbone_hash(model.backbone)
    model.train()
    model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    own = {n for n in with_grad if n.startswith(("soft_prompt.", "head.")) or "lora_" in n}
    if model.method.trains_backbone:
        assert with_grad - own  # the control: full fine-tuning does reach the backbone
    else:
        assert with_grad == own
    for name, parameter in model.named_parameters():
        if name.startswith("soft_prompt.") and parameter.grad is not None:
            assert parameter.grad.abs().sum() > 0, f"{name}: zero gradient, not wired into the loss"
    train_steps(model, inputs, torch.tensor([0, 1, 2, 0]), 2)
    assert (backbone_hash(model.backbone) == before) != model.method.trains_backbone


# ---- K/V prefix geometry --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_kv_shapes_follow_kv_heads_and_head_dim(arch: str, attention_calls: list) -> None:
    _, layers, _, kv_heads, head_dim = GEOMETRY[arch]
    model, tok = adapted(arch, "prefix_tuning")
    attention_calls.clear()
    assert model.spec.prefix_width == 2 * layers * kv_heads * head_dim
    prefixes = model.soft_prompt.prefixes()
    assert len(prefixes) == layers
    assert all(k.shape == v.shape == (1, kv_heads, N, head_dim) for k, v in prefixes)
    with torch.no_grad():
        model(**batch(tok, TEXTS))
    assert [c["prefix"][0].shape[1] for c in attention_calls] == [kv_heads] * layers
    assert all(c["key"][1] == kv_heads for c in attention_calls)  # the model's own keys: same head count


def test_prefix_head_dim_comes_from_config_not_hidden_over_heads() -> None:
    """Llama with head_dim=12 while hidden/heads = 8, and 2 KV heads for 6 query heads."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=12,
        intermediate_size=64,
    )
    model = AdaptedModel(
        LlamaModel(config), method_config("prefix_tuning"), "token_classification", num_labels=2
    ).eval()
    assert model.spec.prefix_width == 2 * 2 * 2 * 12
    assert all(k.shape == (1, 2, N, 12) for k, _ in model.soft_prompt.prefixes())
    ids = torch.randint(1, 100, (2, 7))
    with torch.no_grad():
        shown = model.encode(ids, torch.ones_like(ids))
        hidden = model.encode(ids, torch.ones_like(ids), prefix_visible=False)
    assert (shown - hidden).abs().max() > 1e-4


# ---- positions ------------------------------------------------------------------------------------
POSITION_CASES = [(a, "token_classification") for a in ARCHS] + [(a, "generation") for a in DECODERS]


@pytest.mark.parametrize("projection", [True, False], ids=["mlp", "flat"])
@pytest.mark.parametrize("arch,kind", POSITION_CASES)
def test_prefix_masked_out_equals_base_model(arch: str, kind: str, projection: bool) -> None:
    """Real tokens keep their positions: with the prefix invisible the outputs are the base model's."""
    base = load(arch, kind).backbone.eval()
    model, tok = adapted(arch, "prefix_tuning", kind, prefix_projection=projection)
    inputs = batch(tok, TEXTS, "right")
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        out = base(**inputs)
        expected = out.logits if kind == "generation" else out.last_hidden_state
        hidden = model.encode(**inputs, prefix_visible=False)
        shown = model.encode(**inputs)
    assert torch.allclose(hidden[mask], expected[mask], atol=ATOL)
    assert (shown[mask] - expected[mask]).abs().max() > 1e-4  # the control: the prefix does act


# ---- padding --------------------------------------------------------------------------------------
PADDING = [(a, "right") for a in ARCHS] + [(a, "left") for a in DECODERS]


@pytest.mark.parametrize("method,overrides", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("arch,side", PADDING)
def test_example_output_same_alone_and_in_padded_batch(arch: str, side: str, method: str, overrides: dict) -> None:
    model, tok = adapted(arch, method, **overrides)
    inputs = batch(tok, TEXTS, side)
    with torch.no_grad():
        states, logits = model.encode(**inputs), model(**inputs).logits
        for i, text in enumerate(TEXTS):
            alone = batch(tok, [text], side)
            real = inputs["attention_mask"][i].bool()
            assert torch.allclose(states[i][real], model.encode(**alone)[0], atol=ATOL)
            assert torch.allclose(logits[i], model(**alone).logits[0], atol=ATOL)
    assert real.sum() < len(real)  # the batch really was padded


@pytest.mark.parametrize("arch,side", PADDING)
def test_classification_head_reads_the_token_the_model_pools(arch: str, side: str) -> None:
    """First real token ([CLS]) for encoders, last real token for decoders, as their own
    *ForSequenceClassification pool; with the prefix invisible the head sees the base model's state."""
    base = load(arch).backbone.eval()
    model, tok = adapted(arch, "prefix_tuning")
    inputs = batch(tok, TEXTS, side)
    mask = inputs["attention_mask"]
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    if arch in DECODERS:
        index = (positions * mask).argmax(-1)
    else:
        index = torch.where(mask.bool(), positions, mask.shape[1]).argmin(-1)
    with torch.no_grad():
        states = (
            base(**inputs).last_hidden_state
            if side == "right"
            else base(**inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
        )
        logits = model(**inputs, prefix_visible=False).logits
    assert torch.allclose(logits, model.head(states[torch.arange(len(TEXTS)), index]), atol=ATOL)


@pytest.mark.parametrize("method", SOFT)
@pytest.mark.parametrize("arch", ARCHS)
def test_multiple_choice_pads_choices_and_masks_missing_ones(arch: str, method: str) -> None:
    """COPA-style (B, K, L) input: a choice's score is the same alone; a masked choice never wins."""
    model, tok = adapted(arch, method, "multiple_choice")
    side = "left" if arch in DECODERS else "right"
    flat = batch(tok, ["the sun rose", "it was dark outside", "cats purr", "a dog barked at the mailman"], side)
    inputs = {k: v.view(2, 2, -1) for k, v in flat.items()}
    with torch.no_grad():
        logits = model(**inputs).logits
        alone = model(**{k: v.unsqueeze(0) for k, v in batch(tok, ["cats purr"], side).items()}).logits
        masked = model(**inputs, choice_mask=torch.tensor([[1, 0], [1, 1]])).logits
    assert logits.shape == (2, 2)
    assert torch.allclose(logits[1, 0], alone[0, 0], atol=ATOL)
    assert masked[0].argmax() == 0 and torch.equal(masked[1], logits[1])
    labels = torch.tensor([0, 1])
    loss = model(**inputs, labels=labels).loss
    assert torch.allclose(loss, F.cross_entropy(logits, labels), atol=ATOL)


# ---- alignment ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", SOFT)
@pytest.mark.parametrize("arch", ARCHS)
def test_virtual_positions_are_stripped_before_token_heads_and_losses(arch: str, method: str) -> None:
    """NER logits have the labels' length L (PEFT's prompt tuning returns L+N) and position i is token i."""
    model, tok = adapted(arch, method, "token_classification")
    inputs = batch(tok, TEXTS)
    raw: list[torch.Tensor] = []
    model.backbone.register_forward_hook(lambda module, args, out: raw.append(out.last_hidden_state))
    labels = (inputs["input_ids"] % 3).masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    n = model.num_virtual_tokens
    assert raw[0].shape[1] == labels.shape[1] + n
    assert out.logits.shape == (*labels.shape, 3)
    assert torch.equal(out.logits, model.head(raw[0][:, n:]))
    assert torch.allclose(out.loss, F.cross_entropy(out.logits.reshape(-1, 3), labels.reshape(-1)), atol=ATOL)


@pytest.mark.parametrize("method", SOFT)
@pytest.mark.parametrize("arch", DECODERS)
def test_lm_logits_and_labels_line_up(arch: str, method: str) -> None:
    model, tok = adapted(arch, method, "generation")
    inputs = batch(tok, TEXTS, "left")
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert out.logits.shape[:2] == labels.shape
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, expected, atol=ATOL)


# ---- non-identity and generation ------------------------------------------------------------------
@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("arch", ARCHS)
def test_each_method_changes_the_backbone_output_as_declared(arch: str, method: str) -> None:
    """Soft prompts act from initialisation; LoRA (B=0) and full fine-tuning after one step; head-only never."""
    base = load(arch).backbone.eval()
    model, tok = adapted(arch, method)
    inputs = batch(tok, TEXTS)
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        reference = base(**inputs).last_hidden_state[mask]

    def change() -> float:
        with torch.no_grad():
            return (model.eval().encode(**inputs)[mask] - reference).abs().max().item()

    initial = change()
    train_steps(model, inputs, torch.tensor([0, 1, 2, 0]), 1)
    stepped = change()
    declared = model.method.declared()
    if declared["input_tokens"] or declared["attention_prefix"]:
        assert initial > 1e-4 and stepped > 1e-4
    elif not acts_on_backbone(method):
        assert initial < ATOL and stepped < ATOL
    else:
        assert initial < ATOL < stepped


@pytest.mark.parametrize("method", [m for m in ALL if acts_on_backbone(m) and not get_method(m).trains_backbone])
@pytest.mark.parametrize("arch", DECODERS)
def test_generate_matches_forward_and_differs_from_base(arch: str, method: str) -> None:
    """New tokens only; each greedy step's logits equal a plain forward pass over the sequence so far
    (first step included), in a left-padded batch; and the adapter changes what is generated."""
    model, tok = adapted(arch, method, "generation")
    for name, parameter in model.backbone.named_parameters():
        if "lora_B" in name:  # LoRA's B = 0 at init: give it something to change
            torch.nn.init.normal_(parameter, std=0.1)
    inputs = batch(tok, TEXTS, "left")
    settings = dict(
        max_new_tokens=3,
        min_new_tokens=3,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    out = model.generate(inputs["input_ids"], inputs["attention_mask"], **settings)
    assert out.sequences.shape == (len(TEXTS), 3)
    full = torch.cat([inputs["input_ids"], out.sequences], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(out.sequences)], dim=1)
    with torch.no_grad():
        logits = model(full, mask).logits
    length = inputs["input_ids"].shape[1]
    for step, step_logits in enumerate(out.logits):
        assert torch.allclose(step_logits, logits[:, length - 1 + step], atol=1e-4), f"step {step}"
    base = load(arch, "generation").backbone.eval()
    plain = base.generate(**inputs, **settings)
    assert (plain.logits[0] - out.logits[0]).abs().max() > 1e-3


def test_generate_needs_the_generation_kind() -> None:
    model, tok = adapted("gpt2", "prefix_tuning")
    with pytest.raises(ValueError, match="generation"):
        model.generate(**batch(tok, TEXTS[:1], "left"), max_new_tokens=1)


# ---- parameter accounting -------------------------------------------------------------------------
def expected_counts(arch: str, method: str, overrides: dict, head: int, backbone: int, kind: str) -> tuple[int, int]:
    """(trainable, stored) written out from the brief's formulas."""
    d, layers, heads, kv_heads, head_dim = GEOMETRY[arch]
    lm_head = VOCAB * d if kind == "generation" else 0  # head-only's probe where no task head exists
    p = 2 * layers * kv_heads * head_dim
    mlp = d * HIDDEN + HIDDEN + HIDDEN * p + p
    projection = overrides.get("prefix_projection", True)
    r = 8
    lora = {
        "bert": layers * 2 * r * (d + d),
        "roberta": layers * 2 * r * (d + d),
        "gpt2": layers * r * (d + 3 * d),  # fused c_attn: d -> 3d
        "llama": layers * r * ((d + heads * head_dim) + (d + kv_heads * head_dim)),
    }[arch]
    cls = get_method(method)
    if method in SOFT:  # from the declarations: the table E (shared by the MLP), the MLP, the K/V prefix
        table = N * d if cls.input_tokens or (cls.attention_prefix and projection) else 0
        prefix_trained = (mlp if projection else N * p) if cls.attention_prefix else 0
        stored = (N * d if cls.input_tokens else 0) + (N * p if cls.attention_prefix else 0)
        method_counts = (table + prefix_trained, stored)
    else:
        formulas = {"head_only": (lm_head, lm_head), "lora": (lora, lora), "full_finetune": (backbone, backbone)}
        if method not in formulas:
            pytest.skip(f"no parameter formula written for the baseline '{method}'")
        method_counts = formulas[method]
    return method_counts[0] + head, method_counts[1] + head


# encoders do not generate
COUNT_CASES = [
    (arch, kind, method, overrides)
    for arch in ARCHS
    for kind in ("classification", "multiple_choice", "generation")
    for method, overrides in CASES
    if kind != "generation" or arch in DECODERS
]


@pytest.mark.parametrize(
    "arch,kind,method,overrides", COUNT_CASES, ids=[f"{a}-{k}-{m}{'-flat' if o else ''}" for a, k, m, o in COUNT_CASES]
)
def test_parameter_counts_follow_the_formulas(arch: str, kind: str, method: str, overrides: dict) -> None:
    backbone = backbone_count(arch, kind)
    model, _ = adapted(arch, method, kind, **overrides)
    d = GEOMETRY[arch][0]
    head = {"classification": d * 3 + 3, "multiple_choice": d + 1, "generation": 0}[kind]
    trainable_count, stored = expected_counts(arch, method, overrides, head, backbone, kind)
    counts = model.parameter_counts()
    assert (counts["trainable"], counts["stored"], counts["head"], counts["backbone"]) == (
        trainable_count,
        stored,
        head,
        backbone,
    )
    assert counts["trainable"] == sum(p.numel() for p in trainable(model))
    assert counts["trainable_percent"] == pytest.approx(100 * trainable_count / backbone)


def test_default_prefix_mlp_formula() -> None:
    """Defaults N=20, h=512: trainable = N·d + d·h + h + h·P + P, stored = N·P (MLP folded)."""
    model, _ = adapted("llama", "prefix_tuning", num_virtual_tokens=20, prefix_hidden_size=512)
    d, p, h, n = 48, 2 * 2 * 2 * 8, 512, 20
    counts = model.parameter_counts()
    assert counts["method_trainable"] == n * d + d * h + h + h * p + p
    assert counts["method_stored"] == n * p


# ---- save / load ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,overrides", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_round_trip_gives_identical_logits(arch: str, method: str, overrides: dict, tmp_path: Path) -> None:
    """Save after training, load into a model built with another seed (another MLP, another head)."""
    model, tok = adapted(arch, method, **overrides)
    inputs = batch(tok, TEXTS)
    train_steps(model, inputs, torch.tensor([0, 1, 2, 0]), 2)
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
    model.save_adapter(tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    # the prefix MLP is folded into its output: only the prompt table and the per-layer K/V are kept
    assert {k for k in tensors if k.startswith("soft_prompt.")} <= {"soft_prompt.prompt", "soft_prompt.prefix"}
    if method != "full_finetune":  # full fine-tuning also stores tied copies, counted once
        assert sum(t.numel() for t in tensors.values()) == model.parameter_counts()["stored"]
    fresh, _ = adapted(arch, method, seed=1, **overrides)
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).logits, expected, atol=ATOL)
        fresh.load_adapter(tmp_path)
        assert torch.allclose(fresh(**inputs).logits, expected, atol=1e-6)


def test_folded_prefix_loads_into_a_model_with_another_mlp_size(tmp_path: Path) -> None:
    model, tok = adapted("llama", "p_tuning_v2", "generation")
    inputs = batch(tok, TEXTS, "left")
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_adapter(tmp_path)
    other, _ = adapted("llama", "p_tuning_v2", "generation", seed=3, prefix_hidden_size=7)
    other.load_adapter(tmp_path)
    with torch.no_grad():
        assert torch.allclose(other(**inputs).logits, expected, atol=1e-6)


# ---- parity with PEFT -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_prompt_tuning_matches_peft_on_encoders(arch: str) -> None:
    """Same prompt table in both ⇒ same hidden states and logits at the real positions."""
    from peft import PromptTuningConfig, get_peft_model

    model, tok = adapted(arch, "prompt_tuning")
    peft_model = get_peft_model(
        load(arch).backbone, PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=N)
    ).eval()
    inputs = batch(tok, TEXTS)
    inputs.pop("token_type_ids")  # PEFT's feature-extraction path drops them; ours would pad them with 0s
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.soft_prompt.embedding.weight)
        theirs = peft_model(**inputs).last_hidden_state[:, N:]
        ours = model.encode(**inputs)
        logits = model(**inputs).logits
    assert torch.allclose(ours[mask], theirs[mask], atol=ATOL)
    assert torch.allclose(logits, model.head(theirs[:, 0]), atol=ATOL)  # first real token, after the prompt


def copy_prefix_into_peft(model: AdaptedModel, prompt_encoder: torch.nn.Module) -> None:
    """Ours → PEFT.  Both order a prefix row as (layer, key|value, head, head_dim).  PEFT sizes its
    GQA prefix MLP input as kv_heads·head_dim (not d_model), so an MLP prefix on GQA goes in folded."""
    soft = model.soft_prompt
    with torch.no_grad():
        if hasattr(prompt_encoder, "transform"):
            prompt_encoder.embedding.weight.copy_(soft.embedding.weight)
            prompt_encoder.transform.load_state_dict(soft.mlp.state_dict())
        else:
            prompt_encoder.embedding.weight.copy_(soft.prefix_table())


@pytest.mark.parametrize("arch,projection", [("gpt2", True), ("gpt2", False), ("llama", True), ("llama", False)])
def test_prefix_tuning_matches_peft_on_decoders(arch: str, projection: bool) -> None:
    """Compared on what PEFT computes.

    PEFT puts the prefix into the KV cache (``past_key_values``), so the model numbers the real
    tokens N..N+L-1; ours keep 0..L-1 (the brief: real tokens keep their positions).  Shifting our
    positions by N (``position_offset``) reproduces PEFT to 1e-5 on both decoders.  Without the shift:
    * GPT-2 (learned absolute positions) differs everywhere: every real token gets another position
      embedding, so PEFT changes the base model's computation even where the prefix has no weight;
    * Llama (RoPE) differs only a little: query-key scores between real tokens depend on the position
      difference only, which the shift keeps, but the prefix keys carry no rotation, so a query
      rotated by N+i instead of i scores them differently.
    """
    from peft import PrefixTuningConfig, get_peft_model

    model, tok = adapted(arch, "prefix_tuning", "generation", prefix_projection=projection, prefix_dropout=0.0)
    peft_gqa_mlp = arch == "llama" and projection
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=N,
        encoder_hidden_size=HIDDEN,
        prefix_projection=projection and not peft_gqa_mlp,
    )
    peft_model = get_peft_model(load(arch, "generation").backbone, config).eval()
    copy_prefix_into_peft(model, peft_model.prompt_encoder["default"])
    inputs = batch(tok, TEXTS[2:3], "left")  # unpadded: PEFT numbers positions from its cache, not the mask
    with torch.no_grad():
        theirs = peft_model(**inputs).logits
        ours = model(**inputs).logits
        model.position_offset += N
        shifted = model(**inputs).logits
    assert torch.allclose(shifted, theirs, atol=ATOL)
    assert (ours - theirs).abs().max() > (1e-2 if arch == "gpt2" else 1e-6)


# ---- initialisation and configuration -------------------------------------------------------------
@pytest.mark.parametrize("method", SOFT)
def test_initialisation_options(method: str) -> None:
    """random: the vocabulary's scale; vocab: rows of ordinary frequent tokens; text: the text's rows."""
    loaded = load("bert")
    table = loaded.backbone.get_input_embeddings().weight.detach()
    text = "positive or negative"
    text_ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(init: str, seed: int = 0, **extra: Any) -> torch.Tensor:
        model, _ = adapted("bert", method, seed=seed, num_virtual_tokens=8, init=init, **extra)
        return model.soft_prompt.embedding.weight.detach()

    random = prompt("random")
    assert 0.5 < random.std() / table.std() < 2
    assert torch.cdist(random, table).min() > 1e-3
    vocab = prompt("vocab")
    rows = torch.cdist(vocab, table).argmin(-1)
    assert torch.equal(vocab, table[rows])
    allowed = set(frequent_token_ids(loaded.tokenizer, table.shape[0]).tolist())
    assert set(rows.tolist()) <= allowed and not set(rows.tolist()) & set(loaded.tokenizer.all_special_ids)
    assert torch.equal(vocab, prompt("vocab")) and not torch.equal(vocab, prompt("vocab", seed=1))
    from_text = prompt("text", init_text=text)
    cyclic = (text_ids * 8)[:8]
    assert torch.equal(from_text, table[cyclic])


def test_prefix_dropout_and_mlp_size_defaults_and_overrides() -> None:
    for method in PREFIX:
        default = get_method(method)()
        assert (default.prefix_projection, default.prefix_hidden_size, default.prefix_dropout) == (True, 512, 0.1)
    model, _ = adapted("gpt2", "prefix_tuning", num_virtual_tokens=20, prefix_hidden_size=512)
    assert model.soft_prompt.prefix_dropout.p == 0.1 and model.soft_prompt.mlp[0].out_features == 512
    model, _ = adapted("gpt2", "prefix_tuning", prefix_hidden_size=64, prefix_dropout=0.3)
    soft = model.soft_prompt
    assert soft.prefix_dropout.p == 0.3 and soft.mlp[0].out_features == 64
    soft.train()
    assert not torch.equal(soft.prefixes()[0][0], soft.prefixes()[0][0])  # dropout acts in training
    soft.eval()
    assert torch.equal(soft.prefixes()[0][0], soft.prefixes()[0][0])


@pytest.mark.parametrize("method", SOFT)
@pytest.mark.parametrize("arch", ARCHS)
def test_one_batch_overfits_at_the_default_lr(arch: str, method: str) -> None:
    """Default config (N=20, h=512, dropout 0.1), default LR, 100 AdamW steps: the eval loss on the batch
    falls below 40% of its start.  Baselines overfit MiniLM in test_methods_pretrained.py: their default
    LRs are sized for pretrained weights, not tiny random ones."""
    loaded = load(arch, "token_classification")
    model = AdaptedModel(
        loaded.backbone, get_method(method)(), "token_classification", num_labels=3, tokenizer=loaded.tokenizer, seed=0
    )
    inputs = batch(loaded.tokenizer, TEXTS)
    labels = (inputs["input_ids"] % 3).masked_fill(inputs["attention_mask"] == 0, -100)

    def eval_loss() -> float:
        with torch.no_grad():
            return model.eval()(**inputs, labels=labels).loss.item()

    start = eval_loss()
    train_steps(model, inputs, labels, 100)
    assert eval_loss() < 0.4 * start


# ---- errors ---------------------------------------------------------------------------------------
def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_head_only_without_a_head_or_an_lm_head_has_nothing_to_train() -> None:
    """A bare decoder stack (no LM head) asked to generate: head-only would train nothing."""
    loaded = load("llama", "classification")  # LlamaModel: hidden states, no LM head
    with pytest.raises(NothingToTrainError) as error:
        AdaptedModel(loaded.backbone, get_method("head_only")(), "generation")
    assert issubclass(NothingToTrainError, ValueError) and "head_only" in one_line(error)


def test_attention_outside_the_interface_is_refused_in_one_line() -> None:
    """The dry run counts attention calls; a layer that computed attention itself would be missed."""
    loaded = load("bert")
    loaded.backbone.config.num_hidden_layers = 3  # 2 layers call the interface: one "layer" is unseen
    with pytest.raises(UnsupportedArchitectureError) as error:
        AdaptedModel(loaded.backbone, get_method("prefix_tuning")(), "classification", num_labels=2)
    assert issubclass(UnsupportedArchitectureError, ValueError) and "AttentionInterface" in one_line(error)


@pytest.mark.parametrize("method", SOFT)
def test_unknown_or_incomplete_init_is_refused_in_one_line(method: str) -> None:
    with pytest.raises(MethodConfigError) as error:
        get_method(method).from_dict({"init": "zeros"})
    assert "random" in one_line(error)
    with pytest.raises(MethodConfigError):
        get_method(method).from_dict({"init": "text"})
    if method == "prefix_tuning":  # a flat prefix has no embedding for init to set
        with pytest.raises(MethodConfigError, match="prefix_projection"):
            get_method(method).from_dict({"init": "vocab", "prefix_projection": False})
    loaded = load("bert")
    with pytest.raises(MethodConfigError):  # built directly, skipping from_dict
        AdaptedModel(loaded.backbone, get_method(method)(init="zeros"), "classification", num_labels=2)


# ---- gradient checkpointing and bf16 --------------------------------------------------------------
@pytest.mark.parametrize("method", PREFIX)
def test_gradient_checkpointing_gives_the_same_gradients(method: str) -> None:
    def gradients(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        model, tok = adapted("llama", method, "generation")
        calls = []
        for module in model.attention_modules:
            module.register_forward_hook(lambda *args: calls.append(1))
        if checkpointing:
            model.enable_gradient_checkpointing()
        inputs = batch(tok, TEXTS, "left")
        torch.manual_seed(0)  # the same dropout masks in both runs
        model.train()(**inputs, labels=inputs["input_ids"]).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = gradients(False)
    checkpointed, checkpointed_calls = gradients(True)
    assert checkpointed_calls == 2 * plain_calls  # attention really was recomputed in backward
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


@pytest.mark.parametrize("method", SOFT)
def test_bf16_backbone_with_fp32_trainable_parameters(method: str, attention_calls: list) -> None:
    """As the runner places a model: frozen weights bf16, trainable fp32; the prefix meets bf16 keys."""
    model, tok = adapted("llama", method, "generation")
    inputs = batch(tok, TEXTS, "left")
    with torch.no_grad():
        reference = model(**inputs).logits
    for parameter in model.backbone.parameters():
        parameter.data = parameter.data.to(torch.bfloat16)
    attention_calls.clear()
    model.train()
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for parameter in trainable(model):
        assert parameter.dtype == torch.float32 and torch.isfinite(parameter.grad).all()
    assert {c["dtype"] for c in attention_calls} == {torch.bfloat16}
    with torch.no_grad():
        logits = model.eval()(**inputs).logits.float()
    assert (logits - reference).abs().max() < 0.1
    generated = model.generate(
        inputs["input_ids"],
        inputs["attention_mask"],
        max_new_tokens=2,
        min_new_tokens=2,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    assert generated.shape == (len(TEXTS), 2)
