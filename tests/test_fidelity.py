"""The two fidelity knobs: method.virtual_positions (shift | keep) and model.pooling."""

from __future__ import annotations

import pytest
import torch

from bench.models import load_model
from methods import get_method
from methods.model import AdaptedModel
from methods.registry import MethodConfigError

TINY = {
    "tiny_bert": {"name": "tiny_bert", "source": "tiny", "family": "bert"},
    "tiny_roberta": {"name": "tiny_roberta", "source": "tiny", "family": "roberta"},
    "tiny_llama": {"name": "tiny_llama", "source": "tiny", "family": "llama", "decoder": True},
}


def build(model: str, method: str, pooling: str = "auto", **fields) -> tuple[AdaptedModel, object]:
    loaded = load_model(TINY[model], "classification")
    cls = get_method(method)
    config = cls.from_dict({"num_virtual_tokens": 3, **fields} if cls.input_tokens or cls.attention_prefix else fields)
    model_ = AdaptedModel(
        loaded.backbone, config, "classification", num_labels=2, tokenizer=loaded.tokenizer, seed=0, pooling=pooling
    ).eval()
    return model_, loaded.tokenizer


def embedding_output(model: AdaptedModel, batch) -> torch.Tensor:
    """What the backbone's embedding layer hands to the first layer."""
    seen = {}
    handle = model.backbone.embeddings.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    return seen["out"]


@pytest.mark.parametrize("family", ["tiny_bert", "tiny_roberta"])
def test_keep_leaves_real_tokens_at_their_positions_and_virtual_tokens_without_one(family, one_thread) -> None:
    model, tokenizer = build(family, "prompt_tuning", virtual_positions="keep")
    batch = tokenizer(["a short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    out = embedding_output(model, batch)
    embeddings = model.backbone.embeddings
    with torch.no_grad():
        plain = embeddings(input_ids=batch["input_ids"], token_type_ids=torch.zeros_like(batch["input_ids"]))
        types = embeddings.token_type_embeddings(torch.zeros(1, 3, dtype=torch.long))
        virtual = embeddings.LayerNorm(model.soft_prompt.prompt().unsqueeze(0) + types)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(out[:, 3:][mask], plain[mask])  # real tokens: exactly their embeddings alone
    torch.testing.assert_close(out[:, :3], virtual.expand(2, -1, -1))  # virtual: no position term
    shifted, _ = build(family, "prompt_tuning", virtual_positions="shift")
    assert not torch.allclose(embedding_output(shifted, batch)[:, 3:][mask], plain[mask], atol=1e-3)


def test_keep_does_not_depend_on_padding(one_thread) -> None:
    model, tokenizer = build("tiny_bert", "p_tuning_v2", virtual_positions="keep")
    alone = tokenizer(["a short one"], return_tensors="pt")
    padded = tokenizer(
        ["a short one", "a much longer sentence than the first one is"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        one = model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"]).logits
        two = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    torch.testing.assert_close(one[0], two[0], atol=1e-5, rtol=1e-5)


def test_keep_is_refused_where_it_cannot_mean_anything(one_thread) -> None:
    with pytest.raises(MethodConfigError, match="absolute position embeddings"):
        build("tiny_llama", "prompt_tuning", virtual_positions="keep")  # rotary positions
    with pytest.raises(MethodConfigError, match="choices"):
        get_method("prompt_tuning").from_dict({"virtual_positions": "middle"})
    with pytest.raises(MethodConfigError, match="unknown field"):
        get_method("prefix_tuning").from_dict({"virtual_positions": "keep"})  # no input tokens to place


def test_pooling_choices_read_what_they_say(one_thread) -> None:
    batch = None
    pooled = {}
    for pooling in ("first", "mean", "pooler"):
        model, tokenizer = build("tiny_bert", "head_only", pooling=pooling)
        batch = batch or tokenizer(
            ["a short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = model.encode(batch["input_ids"], batch["attention_mask"])
            pooled[pooling] = model.pool(hidden, batch["attention_mask"])
            mask = batch["attention_mask"].unsqueeze(-1).float()
            if pooling == "pooler":
                expected = torch.tanh(model.backbone.pooler.dense(hidden[:, 0]))
            else:
                expected = hidden[:, 0] if pooling == "first" else (hidden * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(pooled[pooling], expected)
        assert (getattr(model.backbone, "pooler", None) is not None) == (pooling == "pooler")


def test_the_pooler_trains_only_with_the_backbone(one_thread) -> None:
    frozen, _ = build("tiny_bert", "prompt_tuning", pooling="pooler")
    assert not any(p.requires_grad for p in frozen.backbone.pooler.parameters())
    full, _ = build("tiny_bert", "full_finetune", pooling="pooler")
    assert all(p.requires_grad for p in full.backbone.pooler.parameters())
    assert full.parameter_counts()["trainable"] > build("tiny_bert", "full_finetune")[0].parameter_counts()["trainable"]


def test_pooling_is_refused_where_it_cannot_work(one_thread) -> None:
    with pytest.raises(MethodConfigError, match="no pretrained pooler"):
        build("tiny_llama", "head_only", pooling="pooler")
    with pytest.raises(MethodConfigError, match="attends to nothing"):
        build("tiny_llama", "head_only", pooling="first")
    with pytest.raises(MethodConfigError, match="choices"):
        build("tiny_bert", "head_only", pooling="max")
