"""Export a trained adapter as a Hub-ready PEFT folder: ``AutoPeftModelFor…`` (or ``PeftModel``) loads it.

Which of our adapters PEFT can represent, and when its outputs equal ours (tests/test_peft_export.py
checks each to 1e-5 on the tiny models):

* **Prompt tuning** → ``PromptTuningConfig``, the N × d table as ``prompt_embeddings``.  Equal outputs
  at the real positions for unpadded or right-padded inputs: both number the virtual tokens 0..N-1 and
  the real ones from N.  With left padding the base model numbers positions 0.. over the pads too (ours
  follow the mask), and PEFT's feature-extraction path drops ``token_type_ids`` (sentence pairs get
  segment 0 throughout; its token-classification path keeps them, as ours does).
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
full fine-tuning and head-only.

The task head: where transformers' task class reads what ours reads with the same layers (:data:`HF_HEADS`),
the export is ``TOKEN_CLS`` / ``SEQ_CLS`` and our head is that class's ``classifier``/``score``, in
``modules_to_save``; otherwise it is ``FEATURE_EXTRACTION`` (``CAUSAL_LM`` for generation), the head stays
in ``adapter.safetensors`` only, and the card says why.  The folder is written by PEFT's own
``save_pretrained`` on the task model built on the meta device (no second copy of the weights): its
``adapter_config.json`` (``base_model_name_or_path`` = the model's Hub id, ``task_type``,
``modules_to_save``, ``peft_version``), ``adapter_model.safetensors`` and the metadata of ``README.md``,
our model card (methods/model_card.py); beside them the run's tokenizer and ``labels.json``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from methods.model_card import ExportFacts, RunFacts, render_card

PEFT_DIR = "peft"
"""The PEFT folder's name, beside the record (``<run>/peft/``)."""
LABELS_FILE = "labels.json"
"""``{"id2label": …, "label2id": …}`` beside the adapter: what ``AutoPeftModelFor…`` needs for the labels."""

# transformers' task classes whose head is ours (dropout, then one Linear with a bias) reading what ours
# reads: every token's state (TOKEN_CLS), or BERT's pooler output on the first token (SEQ_CLS, which our
# model.pooling=pooler reads); the value is the head module PEFT keeps in modules_to_save.  Only the
# families tests/test_peft_export.py checks; any other keeps its head out of the PEFT folder.
HF_HEADS: dict[str, dict[str, str]] = {
    "TOKEN_CLS": {"bert": "classifier", "roberta": "classifier", "gpt2": "classifier", "llama": "score"},
    "SEQ_CLS": {"bert": "classifier"},
}
_TASK_TYPES = {"classification": "SEQ_CLS", "token_classification": "TOKEN_CLS"}


@dataclass(frozen=True)
class HeadPlan:
    """An export's PEFT task type and where the task head goes."""

    task_type: str
    head: str | None = None  # the transformers module that holds our head (modules_to_save)
    reason: str | None = None  # why a task head stays out of the PEFT folder


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


def head_plan(model: Any) -> HeadPlan:
    """The task type of ``model``'s export, with our head in ``modules_to_save`` where PEFT can hold it."""
    if model.kind == "generation":
        return HeadPlan("CAUSAL_LM")
    task_type = _TASK_TYPES.get(model.kind)
    if task_type is None:
        return HeadPlan("FEATURE_EXTRACTION", reason=f"PEFT has no task type for {model.kind.replace('_', ' ')}")
    reason = _head_mismatch(model, task_type)
    if reason is not None:
        return HeadPlan("FEATURE_EXTRACTION", reason=reason)
    return HeadPlan(task_type, head=HF_HEADS[task_type][model.backbone.config.model_type])


def _head_mismatch(model: Any, task_type: str) -> str | None:
    """Why transformers' task class for this model would not compute our head's outputs (None: it would)."""
    if model.backbone.config.model_type not in HF_HEADS[task_type]:
        task_model = _task_model(model, task_type, None, None)
        heads = [(name, module) for name, module in task_model.named_children() if name in ("classifier", "score")]
        described = ", ".join(f"`{name}` = {_describe(module)}" for name, module in heads) or "no classifier/score"
        read = "every token" if task_type == "TOKEN_CLS" else "the pooled token"
        return (
            f"transformers' {type(task_model).__name__} ({described}) is not checked to compute our head "
            f"(dropout, then one linear layer with a bias, on {read})"
        )
    if model.soft_prompt is not None and not model.soft_prompt.input_tokens and not _takes_prefix(model, task_type):
        return (
            f"PEFT's {task_type} prefix path needs a `past_key_values` argument in the task model's forward, "
            "which this transformers version does not name so"
        )
    if task_type == "SEQ_CLS" and model.num_virtual_tokens:
        return (
            "PEFT puts the virtual tokens first, where BertForSequenceClassification's pooler reads; "
            "our head reads the first real token"
        )
    if task_type == "SEQ_CLS" and model.pooling != "pooler":
        return (
            "BertForSequenceClassification reads its pooler (dense + tanh) on the first token; this run's head "
            f"read the hidden state itself (model.pooling={model.pooling}): train with model.pooling=pooler"
        )
    return None


def _takes_prefix(model: Any, task_type: str) -> bool:
    """PEFT's own test before it passes a prefix to a classifier: ``past_key_values`` in the task model's
    forward or its base model's."""
    task_model = _task_model(model, task_type, None, None)
    forwards = (task_model.forward, task_model.base_model.forward)
    return any("past_key_values" in inspect.signature(forward).parameters for forward in forwards)


def _describe(module: torch.nn.Module) -> str:
    if isinstance(module, torch.nn.Linear):
        return f"Linear {'with' if module.bias is not None else 'without'} bias"
    return type(module).__name__


def _task_model(model: Any, task_type: str, base_model: str | None, label_names: list[str] | None) -> Any:
    """transformers' model for ``task_type`` with our backbone's config, on the meta device: PEFT builds its
    adapter around it and saves what we assign, so the backbone's weights are never copied."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    config = copy.deepcopy(model.backbone.config)
    config._name_or_path = base_model or ""  # PEFT writes it as base_model_name_or_path and the card's base_model
    if task_type in ("SEQ_CLS", "TOKEN_CLS"):
        if label_names:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {name: index for index, name in enumerate(label_names)}
        else:
            config.num_labels = model.num_labels
    with torch.device("meta"):
        if task_type == "SEQ_CLS":
            return AutoModelForSequenceClassification.from_config(config)
        if task_type == "TOKEN_CLS":
            return AutoModelForTokenClassification.from_config(config)
        return type(model.backbone)(config)


def _prompt_learning(model: Any, task_type: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """PEFT's prompt-learning config and the prompt encoder's ``embedding.weight``."""
    from peft import PrefixTuningConfig, PromptTuningConfig

    soft, spec, config = model.soft_prompt, model.spec, model.backbone.config
    common = {
        "task_type": task_type,
        "num_virtual_tokens": soft.n,
        "num_layers": spec.num_layers,
        "num_attention_heads": config.num_attention_heads,
        "token_dim": spec.hidden_size,
        "num_transformer_submodules": 1,
    }
    if soft.input_tokens:
        return PromptTuningConfig(**common), {"embedding.weight": soft.prompt().detach().float()}
    table = _rotate_keys_to_position(model, soft.stored_state()["prefix"], soft.n)
    return PrefixTuningConfig(prefix_projection=False, **common), {"embedding.weight": table}


def _lora(model: Any, task_type: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """The LoraConfig our backbone was injected with, and its ``lora_*`` tensors named as in the backbone."""
    config = copy.deepcopy(model.backbone.peft_config["default"])
    config.task_type = task_type
    return config, {key: value.detach().float() for key, value in model.method.adapter_state(model.backbone).items()}


def _assign(peft_model: Any, model: Any, plan: HeadPlan, tensors: dict[str, torch.Tensor]) -> None:
    """Put our tensors into PEFT's (meta) adapter, body and head; a name or shape that does not fit raises."""
    task_model = peft_model.get_base_model()
    clones = {key: value.detach().float().cpu().clone() for key, value in tensors.items()}
    if peft_model.peft_config["default"].is_prompt_learning:
        peft_model.prompt_encoder["default"].load_state_dict(clones, assign=True)
    else:  # LoRA: the backbone is the task model itself (generation, features) or its base (bert, model...)
        body = task_model if type(task_model) is type(model.backbone) else task_model.base_model
        result = body.load_state_dict(clones, strict=False, assign=True)
        left = [key for key in result.missing_keys if "lora_" in key]
        if result.unexpected_keys or left:
            raise RuntimeError(f"PEFT export: LoRA tensors do not fit {type(task_model).__name__}: {result}")
    if plan.head is not None:
        linear = model.head[-1]  # our head: Dropout, Linear
        state = {key: value.detach().float().cpu().clone() for key, value in linear.state_dict().items()}
        getattr(task_model, plan.head).modules_to_save["default"].load_state_dict(state, assign=True)
        peft_model.peft_config["default"].modules_to_save = [plan.head]  # PEFT lists classifier and score, twice


def _conditions(model: Any, peft_type: str, task_type: str) -> tuple[str, ...]:
    """When PEFT's outputs equal ours (the module docstring says why)."""
    saved = "left, for generation" if task_type == "CAUSAL_LM" else "right"
    padding = f"unpadded or right-padded inputs (the saved tokenizer pads {saved})"
    conditions = [padding]
    if model.causal and peft_type == "LORA":  # prompt learning adds N positions PEFT numbers itself
        conditions.append("left padding: pass `position_ids = attention_mask.cumsum(-1) - 1` (ours follow the mask)")
    if peft_type == "PROMPT_TUNING" and task_type == "FEATURE_EXTRACTION" and "token_type_ids" in model.accepts:
        conditions.append("no `token_type_ids` (PEFT's feature-extraction path drops them; ours keep them)")
    return tuple(conditions)


def _save_beside(directory: Path, model: Any, tokenizer: Any, label_names: list[str] | None) -> None:
    """The tokenizer as the run fed the model, and the labels."""
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
        path = directory / "tokenizer_config.json"
        config = json.loads(path.read_text())
        # the inputs the run passed (our tiny decoders drop MiniLM's segment ids) and, for the classifiers,
        # right padding: the padding under which PEFT's outputs equal ours
        config["model_input_names"] = list(tokenizer.model_input_names)
        config["padding_side"] = tokenizer.padding_side if model.kind == "generation" else "right"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if label_names and model.kind in _TASK_TYPES:
        id2label = dict(enumerate(label_names))
        labels = {"id2label": id2label, "label2id": {name: index for index, name in id2label.items()}}
        (directory / LABELS_FILE).write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n")


def _without_empty_base(directory: Path) -> None:
    """PEFT's card metadata names an empty base model (and tags it) when there is no Hub id: drop both."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(directory / "README.md"))
    card.data.base_model = None
    tags = [tag for tag in card.data.tags or [] if tag != "base_model:adapter:"]
    card.data.tags = tags or None
    card.save(str(directory / "README.md"))


def export_peft(
    model: Any,
    directory: str | Path,
    base_model: str | None = None,
    tokenizer: Any = None,
    label_names: list[str] | None = None,
    run: RunFacts | None = None,
) -> dict[str, Any]:
    """Write ``directory`` where PEFT can represent the adapter (adapter_config.json, adapter_model.safetensors,
    README.md, tokenizer, labels.json); ``base_model`` is the Hub id (or path) PEFT loads the base from.

    Returns the record's ``adapter`` entry: ``{"peft": True, "peft_path", "peft_type", "task_type",
    "base_model", "head"}`` (+ ``"head_reason"`` when a task head stays out) or ``{"peft": False, "reason"}``;
    ``peft_path`` is relative to the run folder."""
    from peft import get_peft_model

    reason = unsupported_reason(model)
    if reason is not None:
        return {"peft": False, "reason": reason}
    plan = head_plan(model)
    build = _lora if getattr(model.backbone, "peft_config", None) else _prompt_learning
    with torch.no_grad():
        config, tensors = build(model, plan.task_type)
        config.base_model_name_or_path = base_model  # None: PEFT looks for one, finds none
        with warnings.catch_warnings():  # PEFT 0.21 reads a property transformers 5.2x deprecates: not ours to fix
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            peft_model = get_peft_model(_task_model(model, plan.task_type, base_model, label_names), config)
        _assign(peft_model, model, plan, tensors)
    peft_type = str(config.peft_type.value)
    facts = ExportFacts(
        peft_type=peft_type,
        task_type=plan.task_type,
        base_model=base_model,
        head=plan.head,
        head_reason=plan.reason,
        label_names=list(label_names) if label_names and model.kind in _TASK_TYPES else None,
        virtual_outputs=model.num_virtual_tokens,
        conditions=_conditions(model, peft_type, plan.task_type),
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "README.md").write_text(render_card(facts, run))
    _save_beside(directory, model, tokenizer, label_names)
    # the adapter, its config and PEFT's card metadata; no embedding layers: no method we export trains or
    # resizes them, and PEFT's "auto" would ask the Hub for the base model's config to find out
    peft_model.save_pretrained(str(directory), save_embedding_layers=False)
    if not base_model:
        _without_empty_base(directory)
    entry = {"peft": True, "peft_path": directory.name, "peft_type": peft_type, "task_type": plan.task_type}
    entry.update(base_model=base_model, head=plan.head)
    return {**entry, "head_reason": plan.reason} if plan.reason else entry
