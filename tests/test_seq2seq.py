"""Encoder-decoder backbones (issue #13): tiny random T5 (relative position bias) and BART.

The same guarantees as for encoders and decoders (tests/test_methods.py): the three attention kinds
are found and prefixed by placement, parameter formulas, masked-out prefix = base model, padding
invariance, cached generation = step-by-step forward, gradients only where trainable, save/load,
PEFT parity for prompt tuning on T5, and the T5 bias rule: prefix keys get zero bias.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import methods.injection as injection
from bench.data import choices_as_text, collate, encode_seq2seq_generation, encode_split
from bench.runner import execute
from methods import MethodConfigError
from methods.model import AdaptedModel
from methods.seq2seq import IGNORE_INDEX, count_invalid, label_targets, label_word_ids, map_generations
from tests.conftest import compose
from tests.test_methods import (  # noqa: F401  (attention_calls is a fixture)
    ATOL,
    HIDDEN,
    SOFT,
    TEXTS,
    N,
    attention_calls,
    backbone_hash,
    load,
    method_config,
    one_line,
    trainable,
)

FAMILIES = ("t5", "bart")
ALL = SOFT + ("full_finetune", "lora")  # head_only trains the LM head here: tests/test_head_only_lm.py
# tiny configs (bench/models.py): d_model, encoder layers, decoder layers, heads, head_dim
GEOMETRY = {"t5": (32, 2, 2, 4, 8), "bart": (32, 2, 2, 4, 8)}
LABELS = ["entailment", "contradiction", "neutral"]
TARGETS = ["a small cat", "dogs", "green apples today", "rain"]

pytestmark = pytest.mark.usefixtures("one_thread")


def adapted(
    family: str, method: str, kind: str = "generation", seed: int = 0, num_labels: int | None = 3, **overrides
) -> tuple:
    """(AdaptedModel in eval mode, tokenizer) on a fresh tiny encoder-decoder."""
    loaded = load(family, kind)
    model = AdaptedModel(
        loaded.backbone,
        method_config(method, **overrides),
        kind,
        num_labels=num_labels if kind != "generation" else None,
        tokenizer=loaded.tokenizer,
        seed=seed,
        label_names=LABELS if kind == "classification" else None,
    )
    return model.eval(), loaded.tokenizer


def source_batch(tok, texts: list[str]) -> dict[str, torch.Tensor]:
    """Encoder inputs, right-padded as the harness pads them (token type ids are not used by T5/BART)."""
    tok.padding_side = "right"
    encoded = tok(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def target_batch(tok, targets: list[str]) -> torch.Tensor:
    rows = [ids + [tok.eos_token_id] for ids in tok(targets, add_special_tokens=False)["input_ids"]]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in rows])


# ---- where the prefixes go ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_three_attention_kinds_are_found_and_placed(family: str) -> None:
    """Encoder self-attention first, then per decoder layer self- then cross-attention; placement picks."""
    _, enc, dec, heads, head_dim = GEOMETRY[family]
    model, _ = adapted(family, "prefix_tuning")
    assert [site.role for site in model.sites] == ["encoder"] * enc + ["decoder", "cross"] * dec
    expected = {"all": enc + 2 * dec, "decoder_cross": 2 * dec, "decoder": dec, "encoder": enc}
    for placement, count in expected.items():
        placed, _ = adapted(family, "prefix_tuning", prefix_placement=placement)
        roles = [s.role for s in placed.sites if any(s.module is m for m in placed.attention_modules)]
        assert len(placed.attention_modules) == placed.spec.num_layers == count
        assert set(roles) == set(injection.PLACEMENTS[placement])
        assert placed.spec.prefix_width == 2 * count * heads * head_dim


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", ["all", "decoder_cross", "decoder", "encoder"])
def test_every_placed_attention_call_gets_n_more_keys(family: str, placement: str, attention_calls: list) -> None:  # noqa: F811
    model, tok = adapted(family, "prefix_tuning", prefix_placement=placement)
    attention_calls.clear()
    inputs = source_batch(tok, TEXTS)
    with torch.no_grad():
        model(**inputs, labels=target_batch(tok, TARGETS))
    placed = {id(m) for m in model.attention_modules}
    assert len(attention_calls) == len(model.sites)
    for call in attention_calls:
        assert (call["prefix"] is not None) == (id(call["module"]) in placed)
        if call["prefix"] is not None:
            assert call["prefix"][0].shape[2] == N


# ---- parameter formulas ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", ["all", "decoder_cross", "decoder", "encoder"])
@pytest.mark.parametrize("method", SOFT)
def test_parameter_counts_follow_the_formulas(family: str, placement: str, method: str) -> None:
    """P = 2·(L_enc·[enc] + L_dec·[dec self] + L_dec·[cross])·heads·head_dim; the rest as for other models."""
    d, enc, dec, heads, head_dim = GEOMETRY[family]
    layers = {"all": enc + 2 * dec, "decoder_cross": 2 * dec, "decoder": dec, "encoder": enc}[placement]
    p = 2 * layers * heads * head_dim
    mlp = d * HIDDEN + HIDDEN + HIDDEN * p + p
    expected = {
        "prompt_tuning": (N * d, N * d),
        "prefix_tuning": (N * d + mlp, N * p),
        "p_tuning_v2": (N * d + mlp, N * d + N * p),
    }[method]
    shared = {"prefix_mlp": "shared"} if method == "prefix_tuning" else {}  # per kind: the next test
    model, _ = adapted(family, method, prefix_placement=placement, **shared)
    counts = model.parameter_counts()
    assert (counts["trainable"], counts["stored"], counts["head"]) == (*expected, 0)
    assert counts["trainable"] == sum(p.numel() for p in trainable(model))


KIND_LAYERS = {"all": ("enc", "dec", "dec"), "decoder_cross": ("dec", "dec"), "decoder": ("dec",), "encoder": ("enc",)}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", sorted(KIND_LAYERS))
@pytest.mark.parametrize("prefix_mlp", ["per_kind", "shared"])
def test_prefix_mlp_counts_follow_their_formulas(family: str, placement: str, prefix_mlp: str) -> None:
    """per_kind (Li & Liang): Σ over the placed attention kinds k of N·d + d·h + h + h·P_k + P_k, with
    P_k = 2·L_k·heads·head_dim; shared: N·d + d·h + h + h·P + P with P = Σ P_k. Stored: N·P for both."""
    d, enc, dec, heads, head_dim = GEOMETRY[family]
    widths = [2 * {"enc": enc, "dec": dec}[kind] * heads * head_dim for kind in KIND_LAYERS[placement]]

    def generator(p: int) -> int:
        return N * d + d * HIDDEN + HIDDEN + HIDDEN * p + p

    expected = sum(map(generator, widths)) if prefix_mlp == "per_kind" else generator(sum(widths))
    model, _ = adapted(family, "prefix_tuning", prefix_placement=placement, prefix_mlp=prefix_mlp)
    counts = model.parameter_counts()
    assert (counts["trainable"], counts["stored"]) == (expected, N * sum(widths))
    assert counts["trainable"] == sum(p.numel() for p in trainable(model))
    split = prefix_mlp == "per_kind" and len(widths) > 1  # one kind placed: the shared generator itself
    assert len(model.soft_prompt.generators) == (len(widths) if split else 0)


def test_per_kind_generators_feed_only_their_own_layers() -> None:
    """Each kind's MLP writes exactly its layers' rows: a gradient through one layer's prefix reaches only
    that layer's kind; with one kind placed, per_kind is the shared generator, draw for draw."""
    model, _ = adapted("t5", "prefix_tuning", prefix_dropout=0.0)
    roles = [site.role for site in model.sites]  # placement all: every site, in prefix order
    prefixes = model.soft_prompt.prefixes()
    cross = roles.index("cross")
    prefixes[cross][0].sum().backward()
    grads = {kind: gen.embedding.weight.grad for kind, gen in model.soft_prompt.generators.items()}
    touched = {kind for kind, grad in grads.items() if grad is not None and grad.abs().sum() > 0}
    assert touched == {"cross"}
    one, _ = adapted("t5", "prefix_tuning", prefix_placement="decoder", prefix_mlp="per_kind")
    shared, _ = adapted("t5", "prefix_tuning", prefix_placement="decoder", prefix_mlp="shared")
    assert one.soft_prompt.state_dict().keys() == shared.soft_prompt.state_dict().keys()
    assert all(
        torch.equal(a, b)
        for a, b in zip(one.soft_prompt.state_dict().values(), shared.soft_prompt.state_dict().values())
    )


# ---- positions and the T5 bias rule ---------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", ["all", "decoder_cross", "decoder", "encoder"])
@pytest.mark.parametrize("projection", [True, False], ids=["mlp", "flat"])
def test_prefix_masked_out_equals_base_model(family: str, placement: str, projection: bool) -> None:
    """With the prefix invisible (mask columns off) the logits are the base model's: real tokens keep
    their positions (BART) and their relative position bias (T5) in all three attention kinds."""
    base = load(family, "generation").backbone.eval()
    model, tok = adapted(family, "prefix_tuning", prefix_placement=placement, prefix_projection=projection)
    if not projection:  # a flat table starts at the embeddings' tiny scale: make the control visible
        model.soft_prompt.flat.data.mul_(50)
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    decoder_ids = base.prepare_decoder_input_ids_from_labels(labels=targets)
    with torch.no_grad():
        expected = base(**inputs, decoder_input_ids=decoder_ids).logits
        hidden = model.decoder_logits(**inputs, targets=targets, prefix_visible=False)
        shown = model.decoder_logits(**inputs, targets=targets)
    assert torch.allclose(hidden, expected, atol=ATOL)
    assert (shown - expected).abs().max() > 1e-4  # the control: the prefix does act


def test_t5_prefix_keys_get_zero_bias_and_real_keys_keep_theirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule: prefix keys are position-less (bias 0); every real query-key pair keeps the bias T5
    computes without a prefix (so does PEFT's cache route: T5's bias depends only on the offset; there the
    prefix keys get the bias of N preceding tokens instead of 0)."""
    model, tok = adapted("t5", "prefix_tuning")
    seen: list[tuple[torch.nn.Module, torch.Tensor, int]] = []
    kernel = injection.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((module, kwargs["position_bias"], key.shape[2]))
        return kernel(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(injection, "sdpa_attention_forward", spy)
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    with torch.no_grad():
        model.decoder_logits(**inputs, targets=targets)
    stacks = {"encoder": model.backbone.encoder, "decoder": model.backbone.decoder}
    for site, (module, bias, keys) in zip(model.sites, seen):
        assert module is site.module and bias.shape[-1] == keys
        assert torch.equal(bias[..., :N], torch.zeros_like(bias[..., :N]))
        real = bias[..., N:]
        if site.role == "cross":  # T5 cross-attention has no relative bias at all
            assert torch.equal(real, torch.zeros_like(real))
            continue
        own = stacks[site.role].block[0].layer[0].SelfAttention
        assert torch.allclose(real, own.compute_bias(real.shape[-2], real.shape[-1]), atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ALL)
def test_example_output_same_alone_and_in_padded_batch(family: str, method: str) -> None:
    """Right-padded encoder input and target padding change no example's logits."""
    model, tok = adapted(family, method)
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    with torch.no_grad():
        logits = model.decoder_logits(**inputs, targets=targets)
        for i in range(len(TEXTS)):
            alone = source_batch(tok, [TEXTS[i]])
            alone_targets = target_batch(tok, [TARGETS[i]])
            width = alone_targets.shape[1]
            expected = model.decoder_logits(**alone, targets=alone_targets)[0]
            assert torch.allclose(logits[i, :width], expected, atol=ATOL)
    assert inputs["attention_mask"].sum() < inputs["attention_mask"].numel()  # really padded


# ---- generation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", SOFT + ("lora",))
def test_generate_matches_forward_and_differs_from_base(family: str, method: str) -> None:
    """Each cached greedy step's logits equal a teacher-forced forward over the tokens so far."""
    model, tok = adapted(family, method)
    if method == "lora":  # B = 0 at init: give it something to change
        for name, parameter in model.backbone.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.1)
    inputs = source_batch(tok, TEXTS)
    settings = dict(
        max_new_tokens=4,
        min_new_tokens=4,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    out = model.generate(inputs["input_ids"], inputs["attention_mask"], **settings)
    assert out.sequences.shape == (len(TEXTS), 4)  # new tokens only: the decoder start token is dropped
    with torch.no_grad():
        logits = model.decoder_logits(**inputs, targets=out.sequences)
    for step, step_logits in enumerate(out.logits):
        assert torch.allclose(step_logits, logits[:, step], atol=1e-4), f"step {step}"
    base = load(family, "generation").backbone.eval()
    plain = base.generate(**inputs, **settings)
    assert (plain.logits[0] - out.logits[0]).abs().max() > 1e-3


def test_past_position_bias_cached_generation_matches_forward() -> None:
    """With ``past``, a cached greedy step places its query after the N prefix positions as a full forward does."""
    model, tok = adapted("t5", "prefix_tuning", prefix_position_bias="past", prefix_dropout=0.0)
    inputs = source_batch(tok, TEXTS)
    settings = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    out = model.generate(
        inputs["input_ids"], inputs["attention_mask"], return_dict_in_generate=True, output_logits=True, **settings
    )
    with torch.no_grad():
        logits = model.decoder_logits(**inputs, targets=out.sequences)
    for step, step_logits in enumerate(out.logits):
        assert torch.allclose(step_logits, logits[:, step], atol=1e-4), f"step {step}"


# ---- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["generation", "classification"])
@pytest.mark.parametrize("method", ALL)
def test_gradients_reach_only_trainable_parameters(family: str, kind: str, method: str) -> None:
    model, tok = adapted(family, method, kind)
    inputs = source_batch(tok, TEXTS)
    labels = target_batch(tok, TARGETS) if kind == "generation" else torch.tensor([0, 1, 2, 0])
    before = backbone_hash(model.backbone)
    model.train()
    model(**inputs, labels=labels).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    own = {n for n in with_grad if n.startswith("soft_prompt.") or "lora_" in n}
    assert (with_grad != own) == model.method.trains_backbone
    for name, parameter in model.named_parameters():
        if name.startswith("soft_prompt.") and parameter.grad is not None:
            assert parameter.grad.abs().sum() > 0, f"{name}: zero gradient, not wired into the loss"
    optimizer = torch.optim.AdamW(trainable(model), lr=1e-2)
    optimizer.step()
    assert (backbone_hash(model.backbone) == before) != model.method.trains_backbone


@pytest.mark.parametrize("family", FAMILIES)
def test_text_to_text_classification_loss_and_mapped_prediction(family: str) -> None:
    """Loss = LM loss on the label word + EOS; eval logits = the greedy generation mapped to a label,
    with an extra last column for a generation that is no label word (counted wrong)."""
    model, tok = adapted(family, "prompt_tuning", "classification")
    inputs, labels = source_batch(tok, TEXTS), torch.tensor([0, 1, 2, 0])
    targets = label_targets(model.label_words, labels)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        logits = model.decoder_logits(**inputs, targets=targets)
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(out.loss, expected, atol=ATOL)
    assert out.logits.shape == (len(TEXTS), len(LABELS) + 1) and torch.all(out.logits.sum(-1) == 1)
    longest = max(len(w) for w in model.label_words)
    generated = model.generate(
        **inputs, max_new_tokens=longest, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    assert torch.equal(out.logits, map_generations(generated, model.label_words, tok.eos_token_id))


def test_label_words_map_exactly_and_anything_else_is_invalid() -> None:
    tok = load("t5", "classification").tokenizer
    words = label_word_ids(tok, ["not_entailment", "entailment"], tok.eos_token_id)
    assert words[0][:-1] == tok("not entailment", add_special_tokens=False)["input_ids"]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    rows = [words[1], words[0], words[1][:-1] + [7, eos], [words[0][0]] * 4]
    width = max(len(r) for r in rows)
    generated = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    assert map_generations(generated, words, eos).argmax(-1).tolist() == [1, 0, 2, 2]
    targets = label_targets(words, torch.tensor([1, 0]))
    assert targets[0].tolist() == words[1] + [IGNORE_INDEX] * (len(words[0]) - len(words[1]))
    with pytest.raises(ValueError, match="distinct"):
        label_word_ids(tok, ["yes", "yes"], eos)


# ---- checkpoints, PEFT ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ALL)
def test_adapter_round_trip_gives_identical_logits(family: str, method: str, tmp_path: Path) -> None:
    model, tok = adapted(family, method)
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    model.train()
    model(**inputs, labels=targets).loss.backward()
    torch.optim.SGD(trainable(model), lr=0.5).step()
    model.eval()
    with torch.no_grad():
        expected = model.decoder_logits(**inputs, targets=targets)
    model.save_adapter(tmp_path)
    fresh, _ = adapted(family, method, seed=1)
    with torch.no_grad():
        assert not torch.allclose(fresh.decoder_logits(**inputs, targets=targets), expected, atol=ATOL)
        fresh.load_adapter(tmp_path)
        assert torch.allclose(fresh.decoder_logits(**inputs, targets=targets), expected, atol=1e-6)


def test_prompt_tuning_matches_peft_on_t5() -> None:
    """PEFT's seq2seq prompt tuning prepends the prompt to the encoder input too: same table, same logits."""
    from peft import PromptTuningConfig, get_peft_model

    model, tok = adapted("t5", "prompt_tuning")
    peft_model = get_peft_model(
        load("t5", "generation").backbone, PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=N)
    ).eval()
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight[:N].copy_(model.soft_prompt.embedding.weight)
        theirs = peft_model(**inputs, labels=targets).logits
        ours = model.decoder_logits(**inputs, targets=targets)
    assert torch.allclose(ours, theirs, atol=ATOL)


def test_decoder_prefix_tuning_matches_peft_on_t5_where_peft_is_position_free() -> None:
    """PEFT (0.21) puts a seq2seq prefix in the decoder self-attention only (our ``decoder`` placement), as
    N cached past tokens.  Two differences are by design or PEFT's own, and neutralised here:
    * the cache makes T5 count the prefix as N past tokens: real query-key pairs keep their bias (it depends
      on the offset only), but the prefix keys get the bias of N preceding tokens where ours get 0; with the
      decoder's bias table zeroed, positions cannot matter;
    * PEFT splits its duplicated (self, cross) prefix rows in blocks of four, so decoder layer 1 reads layer
      0's self-attention rows; our table gives both layers the same rows, so this cannot matter either.
    """
    from peft import PrefixTuningConfig, get_peft_model

    model, tok = adapted("t5", "prefix_tuning", prefix_placement="decoder", prefix_projection=False, prefix_dropout=0.0)
    base = load("t5", "generation").backbone
    with torch.no_grad():
        for backbone in (model.backbone, base):
            backbone.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.zero_()
        table = model.soft_prompt.flat.view(N, 2, -1)  # (N, decoder layer, key|value x heads x head_dim)
        table[:, 1] = table[:, 0] * 1.0
    config = PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=N, prefix_projection=False)
    peft_model = get_peft_model(base, config).eval()
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.soft_prompt.flat)
        theirs = peft_model(**inputs, labels=targets).logits
        ours = model.decoder_logits(**inputs, targets=targets)
        plain = base(**inputs, labels=targets).logits
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert (ours - plain).abs().max() > 1e-4  # the control: the prefix does act


def test_past_position_bias_matches_peft_on_t5_with_its_bias() -> None:
    """``prefix_position_bias=past`` gives the prefix keys the bias T5 computes for N cached past tokens: with
    the decoder's bias table left as it is, our decoder placement equals PEFT (0.21) to 1e-5 (PEFT's block-of-four
    row split neutralised as above); with ``zero`` it does not, which is the control."""
    from peft import PrefixTuningConfig, get_peft_model

    settings = dict(prefix_placement="decoder", prefix_projection=False, prefix_dropout=0.0)
    model, tok = adapted("t5", "prefix_tuning", prefix_position_bias="past", **settings)
    zero, _ = adapted("t5", "prefix_tuning", prefix_position_bias="zero", **settings)
    base = load("t5", "generation").backbone
    with torch.no_grad():
        table = model.soft_prompt.flat.view(N, 2, -1)
        table[:, 1] = table[:, 0] * 1.0
        zero.soft_prompt.flat.copy_(model.soft_prompt.flat)
    config = PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=N, prefix_projection=False)
    peft_model = get_peft_model(base, config).eval()
    inputs, targets = source_batch(tok, TEXTS), target_batch(tok, TARGETS)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.soft_prompt.flat)
        theirs = peft_model(**inputs, labels=targets).logits
        ours = model.decoder_logits(**inputs, targets=targets)
        without = zero.decoder_logits(**inputs, targets=targets)
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert (without - theirs).abs().max() > 1e-4  # zero bias on the prefix keys is a different computation


def test_past_position_bias_is_refused_without_a_relative_bias() -> None:
    with pytest.raises(MethodConfigError, match="prefix_position_bias=past needs a relative position bias"):
        adapted("bart", "prefix_tuning", prefix_position_bias="past")


# ---- NER on the encoder, refusals -----------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", SOFT)
def test_ner_tags_the_encoder_outputs(family: str, method: str) -> None:
    """Token classification keeps the encoder stack only: prefixes in its self-attention, the head on its
    states at the real positions, and the masked-out prefix gives the base encoder's states."""
    model, tok = adapted(family, method, "token_classification")
    _, enc, _, heads, head_dim = GEOMETRY[family]
    assert not model.seq2seq and len(model.sites) == enc
    inputs = source_batch(tok, TEXTS)
    labels = (inputs["input_ids"] % 3).masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert out.logits.shape == (*labels.shape, 3)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits.reshape(-1, 3), labels.reshape(-1)), atol=ATOL)
    if method == "prefix_tuning":
        assert model.spec.prefix_width == 2 * enc * heads * head_dim
        base = load(family, "token_classification").backbone.eval()
        mask = inputs["attention_mask"].bool()
        with torch.no_grad():
            expected = base(**inputs).last_hidden_state
            hidden, shown = model.encode(**inputs, prefix_visible=False), model.encode(**inputs)
        assert torch.allclose(hidden[mask], expected[mask], atol=ATOL)
        assert (shown[mask] - expected[mask]).abs().max() > 1e-4


def test_refusals_are_one_line() -> None:
    with pytest.raises(MethodConfigError) as error:
        adapted("t5", "prefix_tuning", "token_classification", prefix_placement="decoder")
    assert "prefix_placement" in one_line(error)
    with pytest.raises(MethodConfigError) as error:
        adapted("bart", "prompt_tuning", "multiple_choice", num_labels=None)
    assert "num_labels" in one_line(error)
    with pytest.raises(MethodConfigError, match="prefix_placement"):
        method_config("prefix_tuning", prefix_placement="middle")


# ---- data and the harness -------------------------------------------------------------------------
def test_seq2seq_generation_features_and_collation() -> None:
    """Source -> encoder input (with specials), target + EOS -> labels of their own length."""
    tok = load("t5", "generation").tokenizer
    examples = [
        {"source": "name : aromi", "references": ["aromi is a pub .", "a pub"]},
        {"source": "name : the golden palace , food : chinese", "references": ["x"]},
    ]
    train = encode_seq2seq_generation(tok, examples, 64, training=True)
    assert len(train.features) == 3 and train.truncated == 0
    assert train.features[0]["input_ids"] == tok("name : aromi")["input_ids"]
    assert train.features[0]["labels"] == tok("aromi is a pub .", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert len(encode_seq2seq_generation(tok, examples, 64, training=False).features) == 2
    short = encode_seq2seq_generation(tok, examples, 6, training=True)
    assert short.truncated == 1 and all(len(f["input_ids"]) <= 6 for f in short.features)
    assert short.features[-1]["input_ids"][-1] == tok("x")["input_ids"][-1]  # the closing special token stays
    batch = collate(train.features, tok.pad_token_id, left=False)
    assert batch["labels"].shape == (3, max(len(f["labels"]) for f in train.features))


@pytest.mark.parametrize("model", ["tiny_t5", "tiny_bart"])
def test_text_to_text_run_records_invalid_predictions(model: str, tmp_path: Path) -> None:
    config = OmegaConf.to_container(
        compose(["method=prompt_tuning", f"model={model}", "task=synth_cls", "trainer=smoke"], hydra_node=False),
        resolve=True,
    )
    record = execute(config, tmp_path)
    assert record["status"] == "ok", record["error"]
    final = record["metrics"]["final"]
    assert 0 <= final["invalid_predictions"] <= config["trainer"]["max_eval_samples"]
    # an untrained tiny model rarely writes a label word: invalid generations are counted as wrong
    assert final["accuracy"] <= 1 - final["invalid_predictions"] / config["trainer"]["max_eval_samples"]


# ---- multiple choice as text-to-text --------------------------------------------------------------
COPA_ROWS = [
    {"premise": f"Event {i} happened.", "choice1": f"Reason {i} a.", "choice2": f"Reason {i} b.",
     "question": ("cause", "effect")[i % 2], "label": i % 2, "idx": i}
    for i in range(20)
]  # fmt: skip


def write_copa(folder: Path) -> Path:
    """A small COPA in SuperGLUE's jsonl layout: 12 training and 8 validation questions."""
    for name, rows in (("train.jsonl", COPA_ROWS[:12]), ("val.jsonl", COPA_ROWS[12:])):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_choices_are_listed_in_one_encoder_input_with_their_count() -> None:
    """A shared context is written once after the choices (truncation cuts the context, never a choice)."""
    assert choices_as_text([["P.", "because A."], ["P.", "because B."]]) == "choice1: because A. choice2: because B. P."
    assert choices_as_text([["P.", "A"], ["Q.", "B"], ["R.", None]]) == "choice1: P. A choice2: Q. B choice3: R."
    tok = load("t5", "classification").tokenizer
    task = SimpleNamespace(kind="multiple_choice", config={}, splits={"train": [
        {"pairs": [["P.", "A."], ["P.", "B."]], "label": 1},
        {"pairs": [["Q.", "C."], ["Q.", "D."], ["Q.", "E."]], "label": 2},
    ]})  # fmt: skip
    encoded = encode_split(task, tok, "train", 64, decoder=False, seq2seq=True)
    assert encoded.features[0]["input_ids"] == tok("choice1: A. choice2: B. P.")["input_ids"]
    batch = collate(encoded.features, tok.pad_token_id, left=False)
    assert batch["labels"].tolist() == [1, 2] and batch["choice_count"].tolist() == [2, 3]
    assert batch["input_ids"].dim() == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_choice_words_map_back_and_the_rest_is_invalid(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Label words are choice1..choiceK; a generation naming a choice the example lacks, or no choice, is
    the invalid column K (counted wrong); the loss is the LM loss on the gold choice word."""
    model, tok = adapted(family, "prompt_tuning", "multiple_choice")
    assert model.head is None
    assert model.label_words == label_word_ids(tok, ["choice1", "choice2", "choice3"], tok.eos_token_id)
    words, eos, pad = model.label_words, tok.eos_token_id, tok.pad_token_id
    rows = [words[1], words[0], words[2], [words[0][0], 7, eos]]
    width = max(len(r) for r in rows)
    generated = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: generated)
    inputs, labels = source_batch(tok, TEXTS), torch.tensor([1, 0, 2, 0])
    with torch.no_grad():
        out = model(**inputs, labels=labels, choice_count=torch.tensor([2, 2, 2, 3]))
        logits = model.decoder_logits(**inputs, targets=label_targets(words, labels))
    predictions = out.logits.argmax(-1).tolist()
    assert predictions == [1, 0, 3, 3] and count_invalid(predictions, len(words)) == 2
    assert torch.allclose(out.loss, F.cross_entropy(logits.flatten(0, 1), label_targets(words, labels).flatten()))


def test_an_invalid_record_prediction_scores_zero() -> None:
    """ReCoRD maps a choice index to its entity; the invalid index is no answer, not an error."""
    from bench.tasks.metrics import ScoringInput, score_split

    examples = [
        {"entities": ["Paris", "Rome"], "answers": ["Rome"]},
        {"entities": ["Oslo", "Bern"], "answers": ["Oslo"]},
    ]
    scores = score_split(["record"], ScoringInput([1, 5], examples, None, "record", invalid=5))
    assert scores == {"f1": 0.5, "em": 0.5}


@pytest.mark.parametrize("model", ["tiny_t5", "tiny_bart"])
def test_text_to_text_multiple_choice_run_ends_ok_and_counts_invalid(model: str, tmp_path: Path) -> None:
    data = write_copa(tmp_path)
    overrides = ["method=prompt_tuning", f"model={model}", "task=copa", f"task.data_dir={data}", "trainer=smoke"]
    config = OmegaConf.to_container(compose(overrides, hydra_node=False), resolve=True)
    record = execute(config, tmp_path / "run")
    assert record["status"] == "ok", record["error"]
    final, shown = record["metrics"]["final"], config["trainer"]["max_eval_samples"]
    assert record["params"]["head"] == 0 and 0 <= final["invalid_predictions"] <= shown
    assert final["accuracy"] <= 1 - final["invalid_predictions"] / shown
