"""What gets timed: our adapted models, PEFT's equivalents, the trainer's step, one ``generate`` call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.measure import StepTimer
from bench.models import load_model, model_config
from bench.speed.config import LR, SpeedConfig, soft_methods
from bench.speed.memory import step_memory


def synthetic_batch(
    vocab: int, batch: int, length: int, device: torch.device, seed: int = 0, lm: bool = False
) -> dict[str, torch.Tensor]:
    """Random ids, every position real (no padding), so all contenders do identical work."""
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, vocab // 2)  # clear of special tokens at the low end of every vocabulary here
    ids = torch.randint(low, vocab, (batch, length), generator=generator)
    labels = ids.clone() if lm else torch.randint(0, 2, (batch,), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def seq2seq_batch(vocab: int, batch: int, length: int, target_length: int, device: torch.device) -> dict:
    """An encoder input as :func:`synthetic_batch` gives it, with random decoder targets of their own length."""
    out = synthetic_batch(vocab, batch, length, device)
    out["labels"] = synthetic_batch(vocab, batch, target_length, device, seed=1)["input_ids"]
    return out


def build_ours(
    loaded,
    method: str,
    kind: str,
    cfg: SpeedConfig,
    device: torch.device,
    num_labels: int = 2,
    overrides: dict[str, Any] | None = None,
):
    """Our AdaptedModel for a registered method (frozen backbones may be shared between soft methods);
    ``overrides``: method settings besides N (e.g. ``prefix_placement``)."""
    from methods import get_method
    from methods.model import AdaptedModel

    config_class = get_method(method)
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {"num_virtual_tokens": cfg.virtual} if "num_virtual_tokens" in fields else {}
    values.update(overrides or {})
    return AdaptedModel(
        loaded.backbone.to(device),
        config_class.from_dict(values),
        kind,
        num_labels=num_labels if kind != "generation" else None,
        tokenizer=loaded.tokenizer,
        seed=0,
    )


def _peft_prompt(task_type: str, cfg: SpeedConfig):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.virtual)


def _peft_prefix(task_type: str, cfg: SpeedConfig):
    from peft import PrefixTuningConfig

    # the same 512-wide reparameterisation MLP as ours by default
    return PrefixTuningConfig(
        task_type=task_type, num_virtual_tokens=cfg.virtual, prefix_projection=True, encoder_hidden_size=512
    )


# PEFT method (PeftType, as a method declares its ``peft_counterpart``) -> its config at the same N as ours
PEFT_BUILDERS: dict[str, Callable[[str, SpeedConfig], Any]] = {
    "PROMPT_TUNING": _peft_prompt,
    "PREFIX_TUNING": _peft_prefix,
}


def peft_methods() -> tuple[str, ...]:
    """Our soft methods whose declared PEFT counterpart is built here (the PEFT contenders), in registry order."""
    from methods import peft_counterparts

    return tuple(m for m, peft in peft_counterparts().items() if peft in PEFT_BUILDERS and m in soft_methods())


def peft_config(method: str, task_type: str, cfg: SpeedConfig):
    """PEFT's config for our ``method`` (its declared counterpart)."""
    from methods import peft_counterparts

    counterpart = peft_counterparts().get(method)
    if counterpart not in PEFT_BUILDERS:
        raise ValueError(f"PEFT has no equivalent of {method!r} here (counterpart {counterpart!r})")
    return PEFT_BUILDERS[counterpart](task_type, cfg)


def build_peft_classifier(model_name: str, method: str, cfg: SpeedConfig, device: torch.device):
    """PEFT SEQ_CLS model on the same backbone weights (an XForSequenceClassification around them)."""
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    loaded = load_model(model_config(model_name), "classification")
    config = loaded.backbone.config
    config.num_labels, config.pad_token_id = 2, loaded.tokenizer.pad_token_id
    with torch.device(device):  # initialised where it runs: a second of GPU time, not 7 s of CPU at RoBERTa-large
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    # pooler/score weights absent from a bare backbone stay at their init: timing only
    model.base_model.load_state_dict(loaded.backbone.state_dict(), strict=False)
    return get_peft_model(model, peft_config(method, "SEQ_CLS", cfg)).to(device)


def build_peft_lm(model_name: str, method: str, cfg: SpeedConfig, device: torch.device, task_type: str = "CAUSAL_LM"):
    """PEFT LM model (``CAUSAL_LM``, or ``SEQ_2_SEQ_LM`` for an encoder-decoder) around a fresh load."""
    from peft import get_peft_model

    loaded = load_model(model_config(model_name), "generation")
    return get_peft_model(loaded.backbone.to(device), peft_config(method, task_type, cfg))


def speed_runtime(device: torch.device, dtype: torch.dtype, **settings: Any):
    """The trainer's :class:`~bench.train.Runtime` for timing: default settings, a fixed LR (cost-neutral)."""
    from bench.settings import TrainerConfig
    from bench.train import Runtime

    return Runtime(TrainerConfig(**settings).with_method_lr(LR), device, dtype)


def trainer_step(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype
) -> tuple[Callable[[dict[str, torch.Tensor]], float], StepTimer, torch.optim.Optimizer]:
    """The trainer's own step (:func:`bench.train.train_step`) as ``step(batch)``, the timer it reports to and
    the optimizer it steps.

    A step is what the trainer does: forward, backward, clipping, the optimizer (the trainer's parameter
    groups), the scheduler and zero_grad.  It works for PEFT models too: any module whose forward takes
    the batch and returns ``.loss``.
    """
    from transformers import get_linear_schedule_with_warmup

    from bench.train import make_optimizer, parameter_groups, train_step as the_trainers_step

    runtime = speed_runtime(device, dtype)
    optimizer = make_optimizer(parameter_groups(model, runtime.settings), runtime.settings.optimizer)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 10**9)  # constant enough: timing only
    timer = StepTimer(device)
    if not hasattr(model, "num_virtual_tokens"):  # PEFT models: the timer's virtual-token count is ours only
        model.num_virtual_tokens = 0

    def step(batch: dict[str, torch.Tensor]) -> float:
        return the_trainers_step(model, batch, optimizer, scheduler, runtime, timer)

    return step, timer, optimizer


@dataclass
class StepRun:
    """The trainer's step on one fixed batch, as a callable (what the step sections time), with what it trains."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[], float]

    def __call__(self) -> float:
        return self.step()

    def memory(self, device: torch.device) -> dict[str, Any]:
        """One more, untimed step: what it holds in memory, by part (:func:`bench.speed.memory.step_memory`)."""
        return step_memory(self.model, self.optimizer, self.step, device)


def train_step(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> StepRun:
    """The trainer's step on one fixed batch: what the step sections time."""
    step, _, optimizer = trainer_step(model, device, dtype)
    return StepRun(model, optimizer, lambda: step(batch))


def generate_kwargs(cfg: SpeedConfig, tokenizer) -> dict[str, Any]:
    """Greedy, KV cache on, exactly ``new_tokens`` new tokens for everyone (EOS cannot end one early)."""
    return {
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "max_new_tokens": cfg.new_tokens,
        "min_new_tokens": cfg.new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def generation_call(
    model, batch: dict[str, torch.Tensor], kwargs: dict, device: torch.device, dtype: torch.dtype, ours: bool
) -> Callable[[], torch.Tensor]:
    """One batched ``generate``; checked once here: how many new tokens, how often the prefix is computed."""
    from bench.train import autocast_context

    model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def run() -> torch.Tensor:
        with torch.no_grad(), autocast_context(device, dtype):
            if ours:
                return model.generate(ids, mask, **kwargs)
            return model.generate(input_ids=ids, attention_mask=mask, **kwargs)

    return run


def prefix_computations(model, run: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """(times the prefix table was computed, new tokens) during one call of our ``generate``."""
    prompt = model.soft_prompt
    original, calls = prompt.prefix_table, []
    prompt.prefix_table = lambda: (calls.append(1), original())[1]  # instance attribute shadows the method
    try:
        new = run().shape[1]
    finally:
        del prompt.prefix_table
    return len(calls), new
