"""Training loop and evaluation: AdamW/Adafactor, warm-up + linear decay, clipping, best checkpoint.

Everything a record needs is measured here: per-step times (median after warm-up), real and
virtual token counts, eval and generation throughput, peak memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.data import (
    EVAL_PADDING_TOLERANCE,
    IGNORE_INDEX,
    Encoded,
    batch_indices,
    collate,
    eval_batch_indices,
    padded_and_real,
    restore_order,
)
from bench.diagnostics import LossWatch
from bench.distributed import Group
from bench.eval_cache import CachePass, EvalFeatureCache
from bench.measure import StepTimer, synchronize
from bench.settings import OPTIMIZERS, TrainerConfig, TrainerConfigError
from bench.tasks.metrics import orient


class Diverged(RuntimeError):
    """The training loss became NaN or infinite, or exploded (bench.diagnostics.LossWatch)."""


class Pruned(RuntimeError):
    """A search's pruner ended the run after a validation pass: not a failure, a hopeless trial
    (bench.search); the record's status is ``pruned`` and its history the passes it ran."""

    history: list[dict[str, Any]] = []


PASS_HOOK: contextvars.ContextVar[Callable[[int, Mapping[str, Any]], None] | None] = contextvars.ContextVar(
    "validation_pass_hook", default=None
)
"""Called with (step, history entry) after every validation pass of the run in progress; it may raise
:class:`Pruned`. Set by a hyperparameter search (bench.search), None otherwise; a contextvar, so the
runner's signatures stay as they are."""


@dataclass(frozen=True)
class Runtime:
    """What every training step and evaluation needs besides the model and the data."""

    settings: TrainerConfig
    device: torch.device
    dtype: torch.dtype
    seed: int = 0
    group: Group | None = None  # this rank's process group in a distributed run (bench.distributed)


@dataclass
class Splits:
    """Tokenised splits plus what collation needs."""

    encoded: dict[str, Encoded]
    pad_id: int
    left_pad: bool


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None
    reported: dict[str, dict[str, float]] = field(default_factory=dict)  # test / held-out validation scores
    by_length: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # reported split -> by-length scores
    wording: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # split -> perturbation -> metrics
    timer: StepTimer | None = None
    eval_time_s: float = 0.0
    eval_tokens: int = 0
    eval_padded_tokens: int = 0  # positions computed in evaluation, padding included
    generation_tokens: int = 0
    generation_time_s: float = 0.0
    diagnostics: dict[str, Any] = field(default_factory=dict)  # the record's diagnostics section
    eval_feature_cache: dict[str, Any] | None = None  # bench.eval_cache.EvalFeatureCache.summary()
    optimizer_groups: list[dict[str, Any]] = field(default_factory=list)
    stop: dict[str, Any] = field(default_factory=dict)  # why and when training ended (see StopRule)


@dataclass
class LoopState:
    """The training loop's running state between validation passes."""

    step: int = 0
    epoch: int = 0
    best_score: float = -math.inf  # oriented (bench.tasks.metrics.orient): larger is better for every metric
    best_params: dict[str, torch.Tensor] | None = None
    losses: list[float] = field(default_factory=list)  # training losses since the last validation pass
    passes_without_gain: int = 0  # validation passes in a row without a gain > stop_margin
    last_gain_step: int = 0  # the step of the last pass that brought such a gain


@dataclass
class Checkpointable:
    """What a training checkpoint saves and a resumed run restores (bench.checkpoint)."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: LoopState
    result: TrainResult
    watch: LossWatch


@dataclass(frozen=True)
class StopRule:
    """Convergence stopping: a plateau of ``patience`` validation passes without a gain of more than
    ``margin`` ends the run; the step budget (``cap``) ends it otherwise. ``patience=None``: fixed budget.
    Scores are oriented (larger is better; a lower-is-better metric is negated), so a gain is a step in
    the metric's own direction."""

    patience: int | None
    margin: float
    cap: int

    def observe(self, state: LoopState, score: float) -> None:
        """Count a validation pass (before ``state.best_score`` takes it in): a gain of more than ``margin``
        over the best so far resets the plateau; anything less extends it."""
        if state.best_score == -math.inf or score > state.best_score + self.margin:
            state.passes_without_gain, state.last_gain_step = 0, state.step
        else:
            state.passes_without_gain += 1

    def plateaued(self, state: LoopState) -> bool:
        return self.patience is not None and state.passes_without_gain >= self.patience

    def describe(self, state: LoopState, plateau: bool) -> dict[str, Any]:
        """The record's account of the stop: ``plateau`` or ``cap``, at which step, and the rule."""
        return {
            "reason": "plateau" if plateau else "cap",
            "step": state.step,
            "cap": self.cap,
            "patience": self.patience,
            "margin": self.margin,
            "passes_without_gain": state.passes_without_gain,
            "last_gain_step": state.last_gain_step,
        }


def _no_decay_names(model: torch.nn.Module) -> set[str]:
    """Parameters exempt from weight decay: biases, normalisation weights, soft-prompt/prefix tables."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        is_norm = isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower()
        is_table = module_name.startswith("soft_prompt") and isinstance(module, torch.nn.Embedding)
        for name, _ in module.named_parameters(recurse=False):
            # the flat prefix table of SoftPrompt (prefix_projection=false) is a bare Parameter
            if is_norm or is_table or name == "bias" or (module_name == "soft_prompt" and name == "flat"):
                names.add(prefix + name)
    return names


def parameter_groups(model: torch.nn.Module, settings: TrainerConfig) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: ``method``/``head`` × ``decay``/``no_decay``.

    The head (``head.*``) trains at ``settings.head_lr``, everything else at ``settings.lr``
    (both resolved, see :meth:`TrainerConfig.with_method_lr`). With ``decay_exemptions`` biases,
    LayerNorm/RMSNorm weights and the prompt/prefix tables get no weight decay.
    """
    exempt = _no_decay_names(model) if settings.decay_exemptions else set()
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            part = "head" if name.startswith("head.") else "method"
            groups.setdefault((part, name not in exempt), []).append(parameter)
    return [
        {
            "name": f"{part}.{'decay' if decay else 'no_decay'}",
            "params": params,
            "lr": settings.head_lr if part == "head" else settings.lr,
            "weight_decay": settings.weight_decay if decay else 0.0,
        }
        for (part, decay), params in sorted(groups.items())
    ]


def make_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainerConfig, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up over ``warmup_ratio`` of the cap, then linear decay to 0 at the cap or a constant LR.

    The factors are transformers' ``get_{linear,constant}_schedule_with_warmup`` (a test checks them step
    for step); they are written here because importing ``transformers.optimization`` pulls in peft, about
    1.2 s of every run process's start."""
    warmup = int(settings.warmup_ratio * steps)
    constant = settings.lr_schedule == "constant"

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return 1.0 if constant else max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(groups: list[dict[str, Any]], name: str) -> torch.optim.Optimizer:
    """AdamW, or Adafactor with a fixed LR as Lester et al. train prompts (lr 0.3); one entry per group."""
    if not any(group["params"] for group in groups):
        raise TrainerConfigError("nothing to train: the method and task leave no trainable parameters")
    if name == "adamw":
        # the fused kernel updates all tensors in one pass; the default per-tensor loop on CPU costs a MiniLM
        # full fine-tuning step ~4.5x more optimizer time (`python -m bench.speed.optimizer` prints the ratio)
        return torch.optim.AdamW(groups, fused=fusable(groups))
    if name == "adafactor":
        from transformers.optimization import Adafactor  # only here: the module imports peft (see make_scheduler)

        return Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False)
    raise TrainerConfigError(f"trainer.optimizer={name!r} is not allowed; allowed: {list(OPTIMIZERS)}")


def fusable(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused AdamW can take these parameters: floating point, all on one CPU or CUDA device."""
    params = [p for group in groups for p in group["params"]]
    devices = {p.device for p in params}
    return (
        len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    )


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The record's view of the optimizer: each group's name, LR, weight decay and parameter count."""
    return [
        {
            "name": group.get("name"),
            "lr": group["initial_lr"] if "initial_lr" in group else group["lr"],
            "weight_decay": group["weight_decay"],
            "params": sum(p.numel() for p in group["params"]),
        }
        for group in optimizer.param_groups
    ]


def autocast_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16: frozen weights in low precision, trainable ones in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def total_steps(settings: TrainerConfig, train_size: int) -> tuple[int, int]:
    """(optimizer steps, steps per epoch) from max_steps or epochs."""
    per_epoch = max(1, math.ceil(train_size / settings.batch_size))
    if settings.max_steps:
        return settings.max_steps, per_epoch
    return settings.epochs * per_epoch, per_epoch


def _epoch_batches(splits: Splits, settings: TrainerConfig, seed: int, skip: int = 0):
    """One shuffled epoch of collated training batches (length-grouped when the settings say so), less
    the first ``skip`` (a resumed run trained on them: an epoch's batches depend on its seed only)."""
    train = splits.encoded["train"]
    indices = batch_indices(train.features, settings.batch_size, True, seed, settings.group_by_length)
    for batch in itertools.islice(indices, skip, None):
        yield collate([train.features[i] for i in batch], splits.pad_id, splits.left_pad)


def _optimization(model, splits: Splits, runtime: Runtime, result: TrainResult) -> tuple[Any, Any, int, int]:
    """The optimizer, its LR schedule, the total and per-epoch step counts; ``result`` gets the optimizer's
    groups and a fresh step timer."""
    settings = runtime.settings
    optimizer = make_optimizer(parameter_groups(model, settings), settings.optimizer)
    steps, per_epoch = total_steps(settings, len(splits.encoded["train"].features))
    result.optimizer_groups = describe_groups(optimizer)
    result.timer = StepTimer(runtime.device, warmup=settings.timing_warmup_steps)
    return optimizer, make_scheduler(optimizer, settings, steps), steps, per_epoch


def train(
    model,
    task,
    splits: Splits,
    runtime: Runtime,
    evaluate: Callable[[str], dict],
    result: TrainResult | None = None,
    tracker: Any = None,
    checkpoints: Any = None,
) -> TrainResult:
    """Train the model's trainable parameters; evaluate on validation every ``eval_every`` steps.

    ``runtime.settings`` must have its LRs resolved (:meth:`TrainerConfig.with_method_lr`).
    ``tracker`` (optional, see :mod:`bench.tracking`) gets ``on_train_step(step, loss, lr)`` after every
    optimizer step and ``on_eval(step, history_entry)`` after every validation pass. ``checkpoints``
    (optional, :class:`bench.checkpoint.Checkpoints`) resumes the loop and saves it at safe points.
    """
    settings = runtime.settings
    result = result or TrainResult()
    # DDP's wrapper (or the model FSDP2 sharded in place): built before the optimizer, which must see
    # the sharded parameters; evaluation and bookkeeping keep using ``model``
    engine = runtime.group.wrap(model, runtime.device) if runtime.group is not None else None
    optimizer, scheduler, steps, per_epoch = _optimization(model, splits, runtime, result)
    eval_every = settings.eval_every or per_epoch
    rule = StopRule(settings.stop_patience, settings.stop_margin, steps)
    state, watch, plateau = LoopState(), LossWatch(), False
    live = Checkpointable(model, optimizer, scheduler, state, result, watch)
    if checkpoints is not None:
        checkpoints.resume(live)
    progress = tqdm(total=steps, initial=state.step, desc=f"train {model.method.name}", leave=False, disable=None)
    while state.step < steps and not plateau:
        skip = state.step - state.epoch * per_epoch  # > 0 only in the epoch a resumed run stopped in
        for batch in _epoch_batches(splits, settings, runtime.seed + state.epoch, skip):
            loss = train_step(model, batch, optimizer, scheduler, runtime, result.timer, engine)
            state.step += 1
            state.losses.append(loss)
            progress.update(1)
            problem = watch.update(loss)
            if problem:
                raise Diverged(problem)
            if tracker is not None:
                tracker.on_train_step(state.step, loss, _method_lr(optimizer))
            if state.step % eval_every == 0 or state.step == steps:
                _evaluate_and_track(model, task, state.step / per_epoch, result, state, evaluate, rule)
                _announce_pass(tracker, result.history)
                plateau = rule.plateaued(state)
            if state.step >= steps or plateau:
                break
            if checkpoints is not None:
                checkpoints.at_safe_point(live)
        state.epoch += 1
    progress.close()
    if checkpoints is not None:
        checkpoints.finish(live)
    result.stop = rule.describe(state, plateau)
    if state.best_params is not None:
        _load_trainable(model, state.best_params)  # test metrics come from the best checkpoint
    return result


def _announce_pass(tracker: Any, history: list[dict[str, Any]]) -> None:
    """The latest validation pass to the tracker, then to a search's hook (:data:`PASS_HOOK`), which may
    end the run: its :class:`Pruned` carries the passes so far, for the record."""
    if tracker is not None:
        tracker.on_eval(history[-1]["step"], history[-1])
    if (hook := PASS_HOOK.get()) is not None:
        try:
            hook(history[-1]["step"], history[-1])
        except Pruned as error:
            error.history = list(history)
            raise


def _method_lr(optimizer: torch.optim.Optimizer) -> float:
    """The current LR of the method's parameters (the head's group may differ): what trackers log."""
    groups = optimizer.param_groups
    return next((g["lr"] for g in groups if str(g.get("name", "")).startswith("method")), groups[0]["lr"])


def train_step(
    model,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    runtime: Runtime,
    timer: StepTimer | None = None,
    engine: torch.nn.Module | None = None,
) -> float:
    """One optimizer step as the trainer takes it: forward, backward, clip, step, schedule; the loss.

    ``scheduler`` may be None (a fixed LR); ``timer`` (optional) records the step's time and tokens.
    In a distributed run (``runtime.group``) ``batch`` is the global batch: this rank computes its share
    through ``engine`` (DDP or FSDP), and the loss returned is the global batch's, as one process gets it;
    the timer counts the global batch's tokens, so tokens/s is the whole run's.
    """
    model.train()
    if timer is not None:
        timer.start()
    ranks = runtime.group
    local, factor = ranks.shard(batch) if ranks is not None else (batch, 1.0)
    local = _to(local, runtime.device)
    with autocast_context(runtime.device, runtime.dtype):
        loss = (engine or model)(**local).loss
    shown = None
    if ranks is not None:
        loss, shown = ranks.scaled_loss(loss, factor)
    loss.backward()
    if runtime.settings.max_grad_norm:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, runtime.settings.max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if timer is not None:
        mask = batch["attention_mask"]
        sequences = mask.shape[0] * (mask.shape[1] if batch["input_ids"].dim() == 3 else 1)
        timer.stop(int(mask.sum()), model.num_virtual_tokens * sequences, int(batch["input_ids"].shape[0]))
    return shown if shown is not None else float(loss.detach())


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def _evaluate_and_track(
    model,
    task,
    epoch: float,
    result: TrainResult,
    state: LoopState,
    evaluate: Callable[[str], dict],
    rule: StopRule | None = None,
) -> None:
    metrics = evaluate("validation")
    entry = {
        "step": state.step,
        "epoch": round(epoch, 4),
        "split": "validation",
        "time_s": round(result.timer.total_s, 4),
        "train_loss": sum(state.losses) / len(state.losses) if state.losses else None,
        **metrics,
    }
    state.losses = []
    result.history.append(entry)
    result.final = dict(metrics)
    score = orient(task.primary_metric, metrics[task.primary_metric])
    if rule is not None:
        rule.observe(state, score)
    if score > state.best_score:  # strictly better: ties keep the earlier, cheaper checkpoint
        state.best_score, result.best, result.best_step = score, dict(metrics), state.step
        state.best_params = _trainable_state(model)


@torch.no_grad()
def predict(
    model,
    task,
    encoded: Encoded,
    splits: Splits,
    runtime: Runtime,
    tokenizer,
    result: TrainResult,
    sort_by_length: bool = True,
    feature_cache: EvalFeatureCache | None = None,
) -> tuple[list, float | None]:
    """Predictions in the split's order (the task's format), and the mean eval loss (None for generation).

    Batches are cut from the examples sorted longest first (``sort_by_length``): padding stays small,
    generation prompts of similar length decode together, and the first batch shows the memory peak.
    The loss is averaged over the labels it covers, so it does not depend on how batches were cut.
    With ``feature_cache``, a model whose backbone features cannot change (head-only) computes them on
    the split's first pass and runs only the head on later passes (:mod:`bench.eval_cache`).
    """
    model.eval()
    device, dtype = runtime.device, runtime.dtype
    # generation keeps full batches: every batch pays its decoding steps, so fewer, fuller batches win
    tolerance = None if task.kind == "generation" else EVAL_PADDING_TOLERANCE
    batches = eval_batch_indices(encoded.features, runtime.settings.eval_batch_size, sort_by_length, tolerance)
    mine = runtime.group.eval_share(batches) if runtime.group is not None else range(len(batches))
    cache = feature_cache if feature_cache is not None else EvalFeatureCache(budget_mb=0)  # 0: never stores
    cached = cache.begin(model, task.kind, encoded, [batches[n] for n in mine], dtype)
    counts = _eval_counts(result)  # before this pass: a sharded pass adds the other ranks' tokens of it
    outputs: dict[int, list] = {}
    losses: dict[int, tuple[float, int]] = {}  # batch number -> (loss × labels, labels)
    for position, number in enumerate(mine):
        features = [encoded.features[i] for i in batches[number]]
        batch = _to(collate(features, splits.pad_id, splits.left_pad), device)
        synchronize(device)
        start = time.perf_counter()
        with autocast_context(device, dtype):
            if task.kind == "generation":
                outputs[number] = _generate(model, batch, task, tokenizer, result)
            else:
                out = _eval_forward(model, batch, cached, position)
                weight = int((batch["labels"] != IGNORE_INDEX).sum())
                losses[number] = (float(out.loss) * weight, weight)
                outputs[number] = _decode(task, out.logits, batch, features, splits.left_pad)
        synchronize(device)
        result.eval_time_s += time.perf_counter() - start
        padded, real = padded_and_real(batch)
        result.eval_tokens += real
        result.eval_padded_tokens += padded
    cache.finish(cached)
    if runtime.group is not None and runtime.group.strategy != "fsdp":
        outputs, losses = _gathered(runtime.group, outputs, losses, result, counts)
    # summed in batch order, as one process sums them, so a sharded evaluation gives the same loss
    loss_sum = sum(losses[n][0] for n in sorted(losses))
    loss_weight = sum(losses[n][1] for n in sorted(losses))
    ordered = [outputs[n] for n in range(len(batches))]
    return restore_order(batches, ordered), (loss_sum / loss_weight if loss_weight else None)


def _eval_counts(result: TrainResult) -> tuple[int, int, int]:
    return result.eval_tokens, result.eval_padded_tokens, result.generation_tokens


def _gathered(
    group: Group, outputs: dict, losses: dict, result: TrainResult, before: tuple[int, int, int]
) -> tuple[dict, dict]:
    """Every rank's share of an evaluation pass, merged on every rank; ``result`` counts all ranks'
    tokens of the pass (so evaluation tokens/s is the run's, over this rank's evaluation time)."""
    mine = tuple(now - then for now, then in zip(_eval_counts(result), before))
    merged_outputs, merged_losses = {}, {}
    for rank, (their_outputs, their_losses, counts) in enumerate(group.gather((outputs, losses, mine))):
        merged_outputs.update(their_outputs)
        merged_losses.update(their_losses)
        if rank != group.rank:
            result.eval_tokens += counts[0]
            result.eval_padded_tokens += counts[1]
            result.generation_tokens += counts[2]
    return merged_outputs, merged_losses


def _eval_forward(model, batch: dict[str, torch.Tensor], cached: CachePass, number: int):
    """The model's output on eval batch ``number``: the head alone on stored features when the cache
    has them, the whole model otherwise (storing the head's input when this pass fills the cache)."""
    if cached.reuse is None and cached.fill is None:
        return model(**batch)
    if cached.reuse is not None:
        features = cached.reuse[number]
    else:
        features = model.head_features(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        cached.fill.append(features)
    return model.from_features(features, batch.get("labels"), batch.get("choice_mask"))


def _decode(task, logits: torch.Tensor, batch, features: list[dict], left_pad: bool) -> list:
    best = logits.argmax(-1).tolist()
    if task.kind != "token_classification":
        return best
    outside = task.label_names.index("O") if "O" in task.label_names else 0
    width = batch["input_ids"].shape[1]
    words = []
    for row, feature in zip(best, features):
        offset = width - len(feature["input_ids"]) if left_pad else 0
        # words cut off by max_length are predicted "O" (and counted as truncated in the record)
        words.append([row[start + offset] if start >= 0 else outside for start in feature["word_starts"]])
    return words


def _generate(model, batch, task, tokenizer, result: TrainResult) -> list[str]:
    options = dict(task.config.get("generation") or {})
    start = time.perf_counter()
    tokens = model.generate(
        batch["input_ids"],
        batch["attention_mask"],
        do_sample=False,
        num_beams=int(options.get("num_beams", 1)),
        max_new_tokens=int(options.get("max_new_tokens", 64)),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    synchronize(tokens.device)
    result.generation_time_s += time.perf_counter() - start
    result.generation_tokens += int((tokens != tokenizer.pad_token_id).sum())
    return [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
