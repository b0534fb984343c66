"""Real model shapes with random weights (``source: shape``): cost figures at real size without a download."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from bench.models import ModelLoadError, load_model, model_config, model_spec, shape_config, shared_shape_weights

# the parameter counts of the published checkpoints (RoBERTa-large's with a second segment embedding row)
PUBLISHED = {
    "roberta_large_shape": (AutoModel, 355_359_744 + 1024),
    "llama3_2_1b_shape": (AutoModelForCausalLM, 1_235_814_400),
    "llama3_8b_shape": (AutoModelForCausalLM, 8_030_261_248),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_a_shape_config_has_the_published_model_s_size(name: str) -> None:
    model_class, count = PUBLISHED[name]
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        model = model_class.from_config(shape_config(model_spec(name), pad_id=0))
    assert sum(p.numel() for p in model.parameters()) == count


def test_a_shape_model_loads_with_random_weights_and_runs() -> None:
    config = model_config("llama3_2_1b_shape")
    config["shape"] = {**config["shape"], "hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 32}
    config["shape"].update(num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=30522)
    loaded = load_model(config, "generation")
    batch = loaded.tokenizer(["a table for two"], return_tensors="pt")
    assert loaded.backbone(**batch).logits.shape[-1] == 30522 and loaded.weights_id == "random:0"
    with pytest.raises(ModelLoadError, match="needs model.shape"):
        load_model({**config, "shape": None}, "generation")


def test_shared_shape_weights_init_once_and_each_load_owns_its_parameters() -> None:
    config = model_config("llama3_2_1b_shape")
    config["shape"] = {**config["shape"], "hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 32}
    config["shape"].update(num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=30522)
    with shared_shape_weights("cpu"):
        first, second = (load_model(config, "generation").backbone for _ in range(2))
    alone = load_model(config, "generation").backbone  # outside the context: a model of its own
    a, b, c = (dict(m.named_parameters()) for m in (first, second, alone))
    assert all(a[n].data_ptr() == b[n].data_ptr() != c[n].data_ptr() and a[n] is not b[n] for n in a)
    assert first.lm_head.weight is first.model.embed_tokens.weight  # Llama-3.2-1B's tie survives the copy
    first.requires_grad_(False)  # a method freezing its copy leaves the other's parameters trainable
    assert all(p.requires_grad for p in second.parameters())
    ids = torch.tensor([[101, 2023, 102]])
    assert torch.equal(first(input_ids=ids).logits, second(input_ids=ids).logits)
