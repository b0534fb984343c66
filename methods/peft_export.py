"""Export a trained adapter as a PEFT adapter folder that ``peft.PeftModel.from_pretrained`` loads.

Which of our adapters PEFT can represent, and when its outputs equal ours (tests/test_peft_export.py
checks each to 1e-5 on the tiny models):

* **Prompt tuning** → ``PromptTuningConfig``, the N × d table as ``prompt_embeddings``.  Equal hidden
  states / LM logits at the real positions for unpadded or right-padded inputs: both number the
  virtual tokens 0..N-1 and the real ones from N.  With left padding the base model numbers positions
  0.. over the pads too (ours follow the mask), and on encoders PEFT's feature-extraction path drops
  ``token_type_ids`` (sentence pairs get segment 0 throughout), so those differ.
* **Prefix tuning on RoPE decoders** (Llama, Qwen, Mistral) → ``PrefixTuningConfig`` with the folded
  N × (2·layers·kv_heads·head_dim) table.  PEFT passes the prefix as ``past_key_values``, so real
  tokens sit at positions N.. instead of our 0..; scores between real tokens depend only on position
  differences, and rotating every prefix key by the rotation of position N makes the scores against
  the prefix equal too: q·R(N+i)ᵀR(N)k = q·R(i)ᵀk.  Exact for unpadded or right-padded inputs.
* **LoRA** → the ``LoraConfig`` our backbone was injected with and its ``lora_*`` tensors.  Exact for
  unpadded or right-padded inputs (with left padding on a decoder, pass PEFT's model
  ``position_ids = attention_mask.cumsum(-1) - 1``, which is how ours numbers positions).

Not representable (the record's ``adapter`` entry says why; ``adapter.safetensors`` remains):
prefixes on encoders, prefixes on decoders with absolute position embeddings (GPT-2), P-Tuning v2,
full fine-tuning and head-only.  The task head is never in ``peft/``: it stays in
``adapter.safetensors`` (``head.*``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

PEFT_DIR = "peft"
"""The PEFT folder's name, beside the record (``<run>/peft/``)."""


def _uses_rope(backbone: torch.nn.Module) -> bool:
    return any(name.endswith("rotary_emb") for name, _ in backbone.named_modules())


def unsupported_reason(model: Any) -> str | None:
    """Why PEFT cannot represent this adapter (None when it can, with outputs equal to ours)."""
    declared = model.method.declared()
    soft = model.soft_prompt
    if getattr(model.backbone, "peft_config", None):
        return None  # LoRA: injected through peft itself
    if getattr(model, "seq2seq", False) or getattr(model.backbone.config, "is_encoder_decoder", False):
        return "encoder-decoder adapters (T5, BART) are not exported to PEFT yet"
    if soft is None:
        return (
            f"method '{model.method.name}' trains the head or the backbone itself; "
            "a PEFT adapter holds added parameters only"
        )
    if declared["input_tokens"] and declared["attention_prefix"]:
        return (
            "P-Tuning v2 inserts input tokens and attention prefixes from one table; "
            "a PEFT adapter holds one of the two (PEFT's 'P_TUNING' is a different, input-only method)"
        )
    if declared["attention_prefix"] and not model.causal:
        return "prefixes on an encoder: PEFT passes prefixes as past_key_values, which encoders do not accept"
    if declared["attention_prefix"] and not _uses_rope(model.backbone):
        return (
            "prefix on a decoder with absolute position embeddings: PEFT's past_key_values prefix "
            "moves every real token to position N.., so outputs would differ (ours keep 0..L-1)"
        )
    return None


def _task_type(model: Any) -> str:
    return "CAUSAL_LM" if model.kind == "generation" else "FEATURE_EXTRACTION"


def _rotate_keys_to_position(model: Any, table: torch.Tensor, position: int) -> torch.Tensor:
    """The prefix table with every key rotated as RoPE rotates a token at ``position``."""
    spec, backbone = model.spec, model.backbone
    rotary = next(module for name, module in backbone.named_modules() if name.endswith("rotary_emb"))
    apply_rope = importlib.import_module(type(backbone).__module__).apply_rotary_pos_emb
    n = model.soft_prompt.n
    rows = table.detach().float().reshape(n, spec.num_layers, 2, spec.num_kv_heads, spec.head_dim).clone()
    keys = rows[:, :, 0].permute(1, 2, 0, 3)  # layers, kv_heads, N, head_dim: layers act as the batch
    positions = torch.full((1, 1), position, dtype=torch.long, device=keys.device)
    cos, sin = rotary(keys, positions)
    _, rotated = apply_rope(keys, keys, cos.float(), sin.float())
    rows[:, :, 0] = rotated.permute(2, 0, 1, 3)
    return rows.reshape(n, -1)


def _prompt_learning(model: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    from peft import PrefixTuningConfig, PromptTuningConfig

    soft, spec, config = model.soft_prompt, model.spec, model.backbone.config
    common = {
        "task_type": _task_type(model),
        "num_virtual_tokens": soft.n,
        "num_layers": spec.num_layers,
        "num_attention_heads": config.num_attention_heads,
        "token_dim": spec.hidden_size,
        "num_transformer_submodules": 1,
    }
    if soft.input_tokens:
        return PromptTuningConfig(**common), {"prompt_embeddings": soft.prompt().detach().float()}
    table = _rotate_keys_to_position(model, soft.stored_state()["prefix"], soft.n)
    return PrefixTuningConfig(prefix_projection=False, **common), {"prompt_embeddings": table}


def _lora(model: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    import copy

    from peft import get_peft_model_state_dict

    config = copy.deepcopy(model.backbone.peft_config["default"])
    config.task_type = _task_type(model)
    state = get_peft_model_state_dict(model.backbone, adapter_name="default")
    # PeftModel.from_pretrained reads keys relative to itself: base_model (the tuner) . model (the backbone)
    return config, {f"base_model.model.{key}": value.detach().float() for key, value in state.items()}


def export_peft(model: Any, directory: str | Path) -> dict[str, Any]:
    """Write ``directory`` (adapter_config.json + adapter_model.safetensors) where PEFT can represent
    the adapter; return the record's ``adapter`` entry: ``{"peft": True, "peft_path", "peft_type", "task_type"}`` or
    ``{"peft": False, "reason"}``; ``peft_path`` is relative to the run folder."""
    from peft.utils.constants import SAFETENSORS_WEIGHTS_NAME

    reason = unsupported_reason(model)
    if reason is not None:
        return {"peft": False, "reason": reason}
    build = _lora if getattr(model.backbone, "peft_config", None) else _prompt_learning
    with torch.no_grad():
        config, tensors = build(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    save_file(
        {key: value.contiguous().cpu() for key, value in tensors.items()}, str(directory / SAFETENSORS_WEIGHTS_NAME)
    )
    return {
        "peft": True,
        "peft_path": directory.name,
        "peft_type": str(config.peft_type.value),
        "task_type": _task_type(model),
    }
