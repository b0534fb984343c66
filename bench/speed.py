"""``python -m bench.speed``: what a training step and a generation cost, per method, on one batch.

In the style of nanoGPT's ``bench.py``: build every contender first, warm up, synchronise, then
time.  Contenders are timed round-robin (one step of each per round, in a fresh random order
every round) in one process, so noise from other processes hits all of them alike; ratios are
taken per round (paired) and their median reported, which is robust to slow drift in load.

Sections (each fails on its own: a failure is reported as ``n/a (...)``, never a crash):

* ``cls``  - a classification training step (forward + backward + AdamW) on the encoder
  (default MiniLM): our methods, full fine-tuning, head-only and PEFT's prompt/prefix tuning;
* ``lm``   - an LM-loss training step on the decoder (default SmolLM2): ours vs PEFT;
* ``generation`` - greedy ``generate`` with the KV cache, ours vs the plain base model (and PEFT);
* ``load`` - a second ``load_model`` of the decoder (the GGUF is dequantised once, then cached);
* ``data`` - the tokenised-split cache cold vs warm, and padding with / without length grouping.

Figures go to ``<out>/<name>/speed.json`` (a record, written atomically) and to stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench.measure import synchronize
from bench.record import PROJECT_ROOT, error_line, git_state, package_versions, write_record

SOFT = ("prompt_tuning", "prefix_tuning", "p_tuning_v2")
CLS_METHODS = ("full_finetune", "head_only", *SOFT)
PEFT_METHODS = ("prompt_tuning", "prefix_tuning")  # what PEFT implements as we define it
SPEED_SCHEMA = 1
LR = 1e-5  # timing only: the learning rate does not change what a step costs
RELOAD_TARGET_S = 3.0


@dataclass
class SpeedConfig:
    """Every knob of the benchmark (the command line maps onto these one to one)."""

    cls_model: str | None = "minilm"
    lm_model: str | None = "smollm2"
    batch: int = 16
    length: int = 128
    virtual: int = 20
    lm_batch: int = 4  # SmolLM2's LM head alone is 49k x 576; 16 x 128 would take ~30 s a step on 2 cores
    lm_length: int = 128
    lm_methods: tuple[str, ...] = ("prefix_tuning",)
    gen_methods: tuple[str, ...] = SOFT
    gen_batch: int = 4
    prompt_length: int = 64
    new_tokens: int = 32
    warmup: int = 1
    steps: int = 4
    gen_steps: int = 2
    repeats: int = 3
    device: str = "auto"
    dtype: str = "fp32"
    threads: int | None = None
    profile: bool = False
    profile_steps: int = 10
    out: str = "results/speed"
    name: str | None = None
    quick: bool = False
    sections: tuple[str, ...] = ("load", "data", "cls", "lm", "generation")


QUICK = dict(cls_model="tiny_bert", lm_model="tiny_llama", batch=2, length=16, virtual=4, lm_batch=2,
             lm_length=16, gen_batch=2, prompt_length=8, new_tokens=4, warmup=1, steps=2, gen_steps=1,
             repeats=1, profile_steps=2)


@dataclass
class Contender:
    """One thing to time: a training step or one ``generate`` call; ``error`` marks it n/a."""

    name: str
    run: Callable[[], Any]
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


# ---- small helpers ---------------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    """A contender's error as the table prints it: one line, at most 200 characters."""
    return error_line(error, limit=200)


def model_config(name: str) -> dict[str, Any]:
    """``conf/model/<name>.yaml`` as a plain dict."""
    from omegaconf import OmegaConf

    path = PROJECT_ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r} (no {path})")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def synthetic_batch(vocab: int, batch: int, length: int, device: torch.device, seed: int = 0,
                    lm: bool = False) -> dict[str, torch.Tensor]:
    """Random ids, every position real (no padding), so all contenders do identical work."""
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, vocab // 2)  # clear of special tokens at the low end of every vocabulary here
    ids = torch.randint(low, vocab, (batch, length), generator=generator)
    labels = ids.clone() if lm else torch.randint(0, 2, (batch,), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device)}


def quiet() -> contextlib.ExitStack:
    """Silence progress bars and deprecation chatter from transformers/peft while timing."""
    import transformers

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    stack.callback(logging.set_verbosity, verbosity)
    if bars:
        stack.callback(logging.enable_progress_bar)
    return stack


# ---- contenders ------------------------------------------------------------------------------------
def build_ours(loaded, method: str, kind: str, cfg: SpeedConfig, device: torch.device):
    """Our AdaptedModel for a registered method (frozen backbones may be shared between soft methods)."""
    from methods import get_method
    from methods.model import AdaptedModel

    values = {"num_virtual_tokens": cfg.virtual} if method in SOFT else {}
    config = get_method(method).from_dict(values)
    return AdaptedModel(loaded.backbone.to(device), config, kind, num_labels=2 if kind != "generation" else None,
                        tokenizer=loaded.tokenizer, seed=0)


def peft_config(method: str, task_type: str, cfg: SpeedConfig):
    """PEFT's equivalent of our method at the same N (prefix: the same 512-wide MLP, as ours by default)."""
    from peft import PrefixTuningConfig, PromptTuningConfig

    if method == "prompt_tuning":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.virtual)
    if method == "prefix_tuning":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=cfg.virtual, prefix_projection=True,
                                  encoder_hidden_size=512)
    raise ValueError(f"PEFT has no equivalent of {method!r}")


def build_peft_classifier(model_name: str, method: str, cfg: SpeedConfig, device: torch.device):
    """PEFT SEQ_CLS model on the same backbone weights (an XForSequenceClassification around them)."""
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from bench.models import load_model

    loaded = load_model(model_config(model_name), "classification")
    config = loaded.backbone.config
    config.num_labels, config.pad_token_id = 2, loaded.tokenizer.pad_token_id
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    # pooler/score weights absent from a bare backbone stay at their init: timing only
    model.base_model.load_state_dict(loaded.backbone.state_dict(), strict=False)
    return get_peft_model(model, peft_config(method, "SEQ_CLS", cfg)).to(device)


def build_peft_lm(model_name: str, method: str, cfg: SpeedConfig, device: torch.device):
    """PEFT CAUSAL_LM model around a fresh load of the decoder."""
    from peft import get_peft_model

    from bench.models import load_model

    loaded = load_model(model_config(model_name), "generation")
    return get_peft_model(loaded.backbone.to(device), peft_config(method, "CAUSAL_LM", cfg))


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
               dtype: torch.dtype) -> Callable[[], None]:
    """One optimiser step as the trainer takes it: forward, backward, AdamW, zero_grad."""
    from bench.train import autocast_context

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)
    model.train()

    def run() -> None:
        with autocast_context(device, dtype):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def guarded(name: str, build: Callable[[], Callable[[], Any]], info: dict | None = None) -> Contender:
    """A contender whose construction failure becomes ``n/a (<error>)`` instead of a crash."""
    info = info if info is not None else {}  # the same dict: a build may record checks in it
    try:
        return Contender(name, build(), info=info)
    except Exception as error:  # noqa: BLE001 — any library failure is a reportable n/a
        return Contender(name, lambda: None, error=one_line(error), info=info)


# ---- timing ----------------------------------------------------------------------------------------
def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call; CPU time is less sensitive to other processes."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def warm_up(contenders: list[Contender], steps: int, device: torch.device) -> list[Contender]:
    """Run each contender ``steps`` times (allocations, kernel choice); a failing one becomes n/a."""
    for contender in contenders:
        if contender.error:
            continue
        try:
            for _ in range(max(steps, 1)):
                timed(contender.run, device)
        except Exception as error:  # noqa: BLE001
            contender.error = one_line(error)
    return [c for c in contenders if not c.error]


def round_robin(contenders: list[Contender], warmup: int, steps: int, repeats: int,
                device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Per contender: ``wall``/``cpu`` seconds per round and the round's repeat index; one call each per round."""
    live = warm_up(contenders, warmup, device)
    times = {c.name: {"wall": [], "cpu": [], "repeat": []} for c in live}
    shuffle = random.Random(0)
    for round_index in range(steps * repeats):
        # a fresh order every round: no contender always follows the same one (allocator, cache state)
        for contender in shuffle.sample(live, len(live)):
            wall, cpu = timed(contender.run, device)
            entry = times[contender.name]
            entry["wall"].append(wall)
            entry["cpu"].append(cpu)
            entry["repeat"].append(round_index // steps)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3); a single value gives it three times."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarize(entry: dict[str, list[float]]) -> dict[str, Any]:
    """Median, IQR and per-repeat medians of one contender's step times."""
    q1, median, q3 = quartiles(entry["wall"])
    repeats = sorted(set(entry["repeat"]))
    per_repeat = [statistics.median([w for w, r in zip(entry["wall"], entry["repeat"]) if r == k]) for k in repeats]
    return {"median_s": round(median, 5), "q1_s": round(q1, 5), "q3_s": round(q3, 5), "iqr_s": round(q3 - q1, 5),
            "repeat_medians_s": [round(v, 5) for v in per_repeat], "n": len(entry["wall"]),
            "cpu_median_s": round(statistics.median(entry["cpu"]), 5),
            "wall_s": [round(v, 5) for v in entry["wall"]]}


def paired_ratio(times: dict, errors: dict[str, str], needed: tuple[str, str]) -> dict[str, Any]:
    """Median over rounds of ``needed[0] / needed[1]`` per round, its IQR, and the ratio of the medians.

    Every round holds one step of each contender, taken back to back, so a per-round ratio compares
    steps that saw the same machine load.
    """
    missing = [name for name in needed if name not in times]
    if missing:
        return {"value": None, "na": errors.get(missing[0]) or f"{missing[0]} not run"}
    top, bottom = times[needed[0]]["wall"], times[needed[1]]["wall"]
    q1, median, q3 = quartiles([a / b for a, b in zip(top, bottom)])
    return {"value": round(median, 4), "iqr": round(q3 - q1, 4), "n": len(top),
            "of_medians": round(statistics.median(top) / statistics.median(bottom), 4)}


def timing_results(contenders: list[Contender], times: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-contender summaries (or their n/a error) and the errors by name."""
    errors = {c.name: c.error for c in contenders if c.error}
    results: dict[str, Any] = {}
    for contender in contenders:
        body = summarize(times[contender.name]) if contender.name in times else {"error": contender.error}
        results[contender.name] = {**body, **contender.info}
    return results, errors


# ---- sections --------------------------------------------------------------------------------------
def cls_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Classification training step on the same batch: ours, the baselines and PEFT."""
    from bench.models import load_model

    model_cfg = model_config(cfg.cls_model)
    vocab = load_model(model_cfg, "classification").backbone.config.vocab_size
    batch = synthetic_batch(vocab, cfg.batch, cfg.length, device)

    def ours(method: str) -> Callable[[], None]:
        model = build_ours(load_model(model_cfg, "classification"), method, "classification", cfg, device)
        return train_step(model, batch, device, dtype)

    def peft(method: str) -> Callable[[], None]:
        return train_step(build_peft_classifier(cfg.cls_model, method, cfg, device), batch, device, dtype)

    contenders = [guarded(m, lambda m=m: ours(m)) for m in CLS_METHODS]
    contenders += [guarded(f"peft_{m}", lambda m=m: peft(m)) for m in PEFT_METHODS]
    times = round_robin(contenders, cfg.warmup, cfg.steps, cfg.repeats, device)
    results, errors = timing_results(contenders, times)
    ratios = {f"{m}/peft_{m}": paired_ratio(times, errors, (m, f"peft_{m}")) for m in PEFT_METHODS}
    for m in SOFT:
        ratios[f"{m}/full_finetune"] = paired_ratio(times, errors, (m, "full_finetune"))
        ratios[f"{m}/head_only"] = paired_ratio(times, errors, (m, "head_only"))
    ratios["head_only/full_finetune"] = paired_ratio(times, errors, ("head_only", "full_finetune"))
    ratios["peft_prompt_tuning/full_finetune"] = paired_ratio(times, errors, ("peft_prompt_tuning", "full_finetune"))
    ratios["p_tuning_v2_overhead/(prompt+prefix)"] = overhead_ratio(times, errors)
    shapes = {"model": cfg.cls_model, "batch": cfg.batch, "length": cfg.length, "virtual": cfg.virtual}
    return {"shapes": shapes, "methods": results, "ratios": ratios}


def ptv2_overhead(walls: dict[str, float]) -> float:
    """P-Tuning v2's cost over a frozen forward (head-only), over prompt's plus prefix's costs over it."""
    head = walls["head_only"]
    combined = (walls["prompt_tuning"] - head) + (walls["prefix_tuning"] - head)
    return (walls["p_tuning_v2"] - head) / combined if combined > 0 else float("nan")


def overhead_ratio(times: dict, errors: dict[str, str]) -> dict[str, Any]:
    """:func:`ptv2_overhead` of the medians (differences of single steps are too noisy to pair)."""
    needed = ("p_tuning_v2", "prompt_tuning", "prefix_tuning", "head_only")
    missing = [name for name in needed if name not in times]
    if missing:
        return {"value": None, "na": errors.get(missing[0]) or f"{missing[0]} not run"}
    value = ptv2_overhead({name: statistics.median(times[name]["wall"]) for name in needed})
    if value != value:  # NaN: the methods' costs over head-only were not measurable
        return {"value": None, "na": "prompt/prefix steps not slower than head-only here"}
    per_round = [v for v in (ptv2_overhead({n: times[n]["wall"][i] for n in needed})
                             for i in range(len(times["head_only"]["wall"]))) if v == v]
    q1, _, q3 = quartiles(per_round) if per_round else (value, value, value)
    return {"value": round(value, 4), "iqr": round(q3 - q1, 4), "n": len(times["head_only"]["wall"])}


def lm_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """LM-loss training step on the decoder: ours vs PEFT (the LM head is a large, equal share)."""
    from bench.models import load_model

    loaded = load_model(model_config(cfg.lm_model), "generation")  # one frozen backbone for our methods
    batch = synthetic_batch(loaded.backbone.config.vocab_size, cfg.lm_batch, cfg.lm_length, device, lm=True)

    def ours(method: str) -> Callable[[], None]:
        return train_step(build_ours(loaded, method, "generation", cfg, device), batch, device, dtype)

    def peft(method: str) -> Callable[[], None]:
        return train_step(build_peft_lm(cfg.lm_model, method, cfg, device), batch, device, dtype)

    contenders = [guarded(m, lambda m=m: ours(m)) for m in cfg.lm_methods]
    contenders += [guarded(f"peft_{m}", lambda m=m: peft(m)) for m in cfg.lm_methods if m in PEFT_METHODS]
    times = round_robin(contenders, cfg.warmup, cfg.steps, cfg.repeats, device)
    results, errors = timing_results(contenders, times)
    ratios = {f"{m}/peft_{m}": paired_ratio(times, errors, (m, f"peft_{m}"))
              for m in cfg.lm_methods if m in PEFT_METHODS}
    shapes = {"model": cfg.lm_model, "batch": cfg.lm_batch, "length": cfg.lm_length, "virtual": cfg.virtual}
    return {"shapes": shapes, "methods": results, "ratios": ratios}


def generate_kwargs(cfg: SpeedConfig, tokenizer) -> dict[str, Any]:
    """Greedy, KV cache on, exactly ``new_tokens`` new tokens for everyone (EOS cannot end one early)."""
    return {"do_sample": False, "num_beams": 1, "use_cache": True, "max_new_tokens": cfg.new_tokens,
            "min_new_tokens": cfg.new_tokens, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id}


def generation_call(model, batch: dict[str, torch.Tensor], kwargs: dict, device: torch.device,
                    dtype: torch.dtype, ours: bool) -> Callable[[], torch.Tensor]:
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


def generation_section(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Greedy generation with the KV cache: our adapters vs the plain base model, same prompts."""
    from bench.models import load_model

    model_cfg = model_config(cfg.lm_model)
    base = load_model(model_cfg, "generation")
    shared = load_model(model_cfg, "generation")
    batch = synthetic_batch(base.backbone.config.vocab_size, cfg.gen_batch, cfg.prompt_length, device)
    kwargs = generate_kwargs(cfg, base.tokenizer)
    contenders = [guarded("base", lambda: generation_call(base.backbone.to(device), batch, kwargs, device, dtype,
                                                         False), {"returns_prompt": True})]
    for method in cfg.gen_methods:
        info: dict[str, Any] = {}
        contenders.append(guarded(method, lambda m=method, i=info: ours_generation(shared, m, batch, kwargs, cfg,
                                                                                  device, dtype, i), info))
    contenders.append(guarded("peft_prefix_tuning", lambda: generation_call(
        build_peft_lm(cfg.lm_model, "prefix_tuning", cfg, device), batch, kwargs, device, dtype, False),
        {"returns_prompt": True}))
    times = round_robin(contenders, 1, cfg.gen_steps, cfg.repeats, device)
    results, errors = timing_results(contenders, times)
    new_tokens = cfg.gen_batch * cfg.new_tokens
    for body in results.values():
        if "median_s" in body:
            body["tokens_per_s"] = round(new_tokens / body["median_s"], 2)
    ratios = {f"{m}/base": paired_ratio(times, errors, (m, "base")) for m in [*cfg.gen_methods, "peft_prefix_tuning"]}
    shapes = {"model": cfg.lm_model, "batch": cfg.gen_batch, "prompt_length": cfg.prompt_length,
              "new_tokens": cfg.new_tokens, "virtual": cfg.virtual}
    return {"shapes": shapes, "methods": results, "ratios": ratios}


def ours_generation(loaded, method: str, batch: dict, kwargs: dict, cfg: SpeedConfig, device: torch.device,
                    dtype: torch.dtype, info: dict[str, Any]) -> Callable[[], torch.Tensor]:
    """Our adapter's ``generate``; fails loudly if the prefix is computed more than once per call."""
    model = build_ours(loaded, method, "generation", cfg, device)
    run = generation_call(model, batch, kwargs, device, dtype, True)
    computed, new = prefix_computations(model, run)
    info.update(prefix_computations_per_generate=computed, new_tokens_per_sequence=new)
    if new != cfg.new_tokens:
        raise RuntimeError(f"{method}: generated {new} new tokens, expected {cfg.new_tokens}")
    if model.soft_prompt.attention_prefix and computed != 1:
        raise RuntimeError(f"{method}: prefix computed {computed} times in one generate call, expected once")
    return run


def load_section(cfg: SpeedConfig) -> dict[str, Any]:
    """Two loads of the decoder: the first may dequantise the GGUF, the second must hit the cache."""
    from bench.models import load_model

    model_cfg = model_config(cfg.lm_model)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        load_model(model_cfg, "generation")
        seconds.append(round(time.perf_counter() - start, 3))
        gc.collect()
    return {"model": cfg.lm_model, "source": model_cfg.get("source"), "first_s": seconds[0],
            "second_s": seconds[1], "target_s": RELOAD_TARGET_S}


def data_section(cfg: SpeedConfig) -> dict[str, Any]:
    """Tokenised-split cache cold vs warm, and padding waste with and without length grouping."""
    import bench.cache
    from bench.data import batch_indices, encode_split
    from bench.models import load_model
    from bench.tasks import load_task, task_config

    sizes = {"n_train": 64, "n_validation": 8, "n_test": 8} if cfg.quick else {}
    task = load_task(task_config("synth_cls", **sizes))
    tokenizer = load_model(model_config(cfg.cls_model), "classification").tokenizer
    length = int(task.config.get("max_length") or cfg.length)
    saved = bench.cache.TOKENIZED_DIR
    with tempfile.TemporaryDirectory() as folder:
        bench.cache.TOKENIZED_DIR = Path(folder)  # a private cache: the first call is truly cold
        try:
            seconds = [timed(lambda: bench.cache.cached_encode(task, tokenizer, "train", length, False),
                             torch.device("cpu"))[0] for _ in range(2)]
        finally:
            bench.cache.TOKENIZED_DIR = saved
    features = encode_split(task, tokenizer, "train", length, False).features
    waste = {}
    for group in (False, True):
        padded = real = 0
        for indices in batch_indices(features, cfg.batch, True, 0, group):
            lengths = [len(features[i]["input_ids"]) for i in indices]
            padded, real = padded + max(lengths) * len(lengths), real + sum(lengths)
        waste["grouped" if group else "ungrouped"] = round(1 - real / padded, 4)
    return {"task": "synth_cls", "examples": len(features), "encode_cold_s": round(seconds[0], 4),
            "encode_warm_s": round(seconds[1], 4), "cache_disabled": bool(os.environ.get("SOFTPROMPT_NO_CACHE")),
            "padding_waste": waste}


# ---- profile ---------------------------------------------------------------------------------------
def profile_prefix(cfg: SpeedConfig, device: torch.device, dtype: torch.dtype, path: Path) -> dict[str, Any]:
    """Profile prefix-tuning steps on the classification model: torch ops, then Python frames (cProfile)."""
    from torch.profiler import ProfilerActivity, profile

    from bench.models import load_model

    loaded = load_model(model_config(cfg.cls_model), "classification")
    model = build_ours(loaded, "prefix_tuning", "classification", cfg, device)
    step = train_step(model, synthetic_batch(loaded.backbone.config.vocab_size, cfg.batch, cfg.length, device),
                      device, dtype)
    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(cfg.profile_steps):
            step()
        synchronize(device)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in ops) or 1.0
    top_ops = [{"name": e.key, "calls_per_step": e.count / cfg.profile_steps,
                "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / cfg.profile_steps, 3),
                "percent": round(100 * e.self_cpu_time_total / total_us, 2)} for e in ops[:12]]
    python = python_profile(step, cfg.profile_steps, device)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=48)
    write_profile(path, cfg, top_ops, python, table)
    return {"file": str(path), "steps": cfg.profile_steps, "top_ops": top_ops,
            **{k: v for k, v in python.items() if k != "text"}}


def python_profile(step: Callable[[], None], steps: int, device: torch.device) -> dict[str, Any]:
    """cProfile over ``steps`` steps: self time of Python frames by origin, per step."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        step()
    synchronize(device)
    profiler.disable()
    wall = (time.perf_counter() - start) / steps
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(25)
    origins = {"methods": 0.0, "bench": 0.0, "transformers": 0.0, "peft": 0.0, "torch (python)": 0.0}
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        path = filename.replace("\\", "/")
        origin = next((o for o, key in (("methods", "/methods/"), ("bench", "/bench/"),
                                         ("transformers", "/transformers/"), ("peft", "/peft/"),
                                         ("torch (python)", "/torch/")) if key in path), None)
        if origin and path.endswith(".py"):
            origins[origin] += tottime
    per_step = {k: round(v / steps * 1e3, 3) for k, v in origins.items()}
    return {"step_wall_ms": round(wall * 1e3, 2), "python_self_ms_per_step": per_step, "text": stream.getvalue()}


def write_profile(path: Path, cfg: SpeedConfig, top_ops: list[dict], python: dict, table: str) -> None:
    """profile.txt: summary, the torch op table and the top Python frames by self time."""
    lines = [f"# bench.speed --profile: prefix_tuning on {cfg.cls_model}, batch {cfg.batch}x{cfg.length}, "
             f"N={cfg.virtual}, {cfg.profile_steps} steps, {torch.get_num_threads()} threads",
             f"# step wall under cProfile: {python['step_wall_ms']} ms (cProfile inflates Python-side costs)",
             "# Python self time per step by origin (ms): " + ", ".join(
                 f"{k} {v}" for k, v in python["python_self_ms_per_step"].items()), "",
             "## torch.profiler, top ops by self CPU time", table, "",
             "## cProfile, top frames by self time (all steps)", python["text"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# ---- targets, record, printing ---------------------------------------------------------------------
def target_specs(cfg: SpeedConfig) -> list[tuple[str, str, str, float]]:
    """(label, section, ratio key, limit): issue #7's targets as ratios that must stay at or below limit."""
    specs = [("prompt_tuning step <= 1.0x PEFT (cls)", "cls", "prompt_tuning/peft_prompt_tuning", 1.0),
             ("prefix_tuning step <= 1.0x PEFT (cls)", "cls", "prefix_tuning/peft_prefix_tuning", 1.0),
             ("p_tuning_v2 overhead <= prompt + prefix overheads", "cls", "p_tuning_v2_overhead/(prompt+prefix)",
              1.0)]
    specs += [(f"{m} step <= 0.8x full fine-tuning", "cls", f"{m}/full_finetune", 0.8) for m in SOFT]
    specs += [(f"{m} step <= 1.0x PEFT (lm)", "lm", f"{m}/peft_{m}", 1.0) for m in cfg.lm_methods
              if m in PEFT_METHODS]
    specs += [(f"{m} generate <= 1.2x base model", "generation", f"{m}/base", 1.2) for m in cfg.gen_methods]
    return specs


def evaluate_targets(cfg: SpeedConfig, sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target's value, limit and met (None when it could not be measured here)."""
    targets = {}
    for label, section, key, limit in target_specs(cfg):
        ratio = (sections.get(section) or {}).get("ratios", {}).get(key)
        if ratio is None:
            continue
        value = ratio.get("value")
        targets[label] = {"ratio": f"{section}:{key}", "value": value, "limit": limit,
                          "met": None if value is None else value <= limit, "na": ratio.get("na")}
    load = sections.get("load") or {}
    if "second_s" in load:
        targets[f"second load of {load['model']} < {RELOAD_TARGET_S:g} s"] = {
            "ratio": None, "value": load["second_s"], "limit": RELOAD_TARGET_S,
            "met": load["second_s"] < RELOAD_TARGET_S, "na": None}
    return targets


def build_record(cfg: SpeedConfig, device: torch.device, sections: dict, targets: dict, profile: dict | None,
                 load_average: tuple, started: float) -> dict[str, Any]:
    """The speed record: like a run's (schema, status, provenance), with sections/ratios/targets."""
    sha, dirty = git_state()
    measured = [t["met"] for t in targets.values() if t["met"] is not None]
    failed = {name: body["error"] for name, body in sections.items() if "error" in body}
    return {"schema": SPEED_SCHEMA, "kind": "speed", "status": "ok" if not failed else "partial",
            "error": "; ".join(f"{k}: {v}" for k, v in failed.items()) or None,
            "name": cfg.name, "device": str(device), "dtype": cfg.dtype, "threads": torch.get_num_threads(),
            "sections": sections, "targets": targets,
            "all_targets_met": bool(measured) and all(measured) and len(measured) == len(targets),
            "profile": profile,
            "provenance": {"git_sha": sha, "git_dirty": dirty, "versions": package_versions(), "config": asdict(cfg),
                           "argv": sys.argv[1:], "platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "load_average": {"start": load_average, "end": _load_average()},
                           "busy_at_start": busy(device, load_average),
                           "wall_s": round(time.perf_counter() - started, 1)}}


def busy(device: torch.device, load_average: tuple[float, ...] | None) -> bool:
    """True when, before we start, other processes already occupy cores our CPU threads would use."""
    if device.type != "cpu" or not load_average:
        return False
    spare = (os.cpu_count() or 1) - torch.get_num_threads()
    return load_average[0] > spare + 1.0  # the 1-minute average still carries a just-finished run's tail


def _load_average() -> tuple[float, ...] | None:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except (OSError, AttributeError):
        return None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_section(name: str, body: dict[str, Any]) -> None:
    """Per-contender medians and the section's ratios, as plain text."""
    if "error" in body:
        print(f"\n== {name}: n/a ({body['error']})")
        return
    if name in ("load", "data"):
        print(f"\n== {name}: " + ", ".join(f"{k}={v}" for k, v in body.items()))
        return
    print(f"\n== {name}: " + ", ".join(f"{k}={v}" for k, v in body["shapes"].items()))
    print(f"   {'contender':22} {'median s':>9} {'IQR s':>8} {'cpu s':>8} {'n':>3}  repeat medians")
    for contender, stats in body["methods"].items():
        if "error" in stats:
            print(f"   {contender:22} n/a (PEFT: {stats['error']})" if contender.startswith("peft_")
                  else f"   {contender:22} n/a ({stats['error']})")
            continue
        extra = f"  {stats['tokens_per_s']} tok/s" if "tokens_per_s" in stats else ""
        print(f"   {contender:22} {stats['median_s']:9.4f} {stats['iqr_s']:8.4f} {stats['cpu_median_s']:8.3f} "
              f"{stats['n']:3d}  {stats['repeat_medians_s']}{extra}")
    for key, ratio in body["ratios"].items():
        text = _fmt(ratio["value"]) + (f"  (IQR {ratio['iqr']:.3f})" if ratio.get("iqr") is not None else "")
        print(f"   ratio {key:38} {text if ratio['value'] is not None else 'n/a (' + ratio['na'] + ')'}")


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    print("\n== targets (ratios: medians of paired per-round ratios)")
    for label, target in targets.items():
        state = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        note = f"  ({target['na']})" if target.get("na") else ""
        print(f"   {label:48} {_fmt(target['value']):>7}  limit {target['limit']:<4g} {state}{note}")


# ---- command line ----------------------------------------------------------------------------------
def run_section(name: str, cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any] | None:
    """One section, or None when its model is switched off; any failure becomes ``{"error": ...}``."""
    model = cfg.cls_model if name in ("cls", "data") else cfg.lm_model
    if not model:
        return None
    try:
        if name not in ("cls", "data") and not model_config(model).get("decoder"):
            raise ValueError(f"model {model!r} is an encoder; this section needs a decoder (--lm-model)")
        if name == "load":
            return load_section(cfg)
        if name == "data":
            return data_section(cfg)
        return {"cls": cls_section, "lm": lm_section, "generation": generation_section}[name](cfg, device, dtype)
    except Exception as error:  # noqa: BLE001 — one broken section must not hide the others
        return {"error": one_line(error)}


def run_speed(cfg: SpeedConfig) -> dict[str, Any]:
    """Run the selected sections, print them, check the targets and write ``<out>/<name>/speed.json``."""
    from bench.runner import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = f"-{torch.get_num_threads()}t" if device.type == "cpu" else ""
    cfg.name = cfg.name or ("quick" if cfg.quick else f"{device.type}{threads}-{cfg.cls_model}-{cfg.lm_model}")
    started, load_average = time.perf_counter(), _load_average()
    print(f"bench.speed: {device} {cfg.dtype}, {torch.get_num_threads()} threads, load average {load_average}; "
          f"{cfg.warmup} warm-up + {cfg.repeats} x {cfg.steps} timed rounds, contenders alternate in random order")
    if busy(device, load_average):
        print("warning: the load average says other processes use the cores this run needs; with several "
              "threads each op then waits for a descheduled thread and timings become erratic - prefer an idle "
              "machine or --threads 1")
    sections: dict[str, Any] = {}
    profile = None
    with quiet():
        for name in cfg.sections:
            body = run_section(name, cfg, device, dtype)
            gc.collect()
            if body is not None:
                sections[name] = body
                print_section(name, body)
                sys.stdout.flush()
        if cfg.profile and cfg.cls_model:
            profile = profile_prefix(cfg, device, dtype, Path(cfg.out) / cfg.name / "profile.txt")
            print(f"\n== profile: {profile['file']}; Python self ms/step {profile['python_self_ms_per_step']}")
    targets = evaluate_targets(cfg, sections)
    print_targets(targets)
    record = build_record(cfg, device, sections, targets, profile, load_average, started)
    path = write_record(record, Path(cfg.out) / cfg.name / "speed.json")
    print(f"\nrecord: {path}")
    return record


def summarize_records(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Median over several speed records (files or folders holding ``speed.json``) of every ratio and figure."""
    import json

    files = [p / "speed.json" if p.is_dir() else p for p in map(Path, paths)]
    records = [json.loads(f.read_text()) for f in files if f.is_file()]
    values: dict[str, list[float]] = {}
    for record in records:
        for section, body in record["sections"].items():
            for key, ratio in body.get("ratios", {}).items():
                if ratio.get("value") is not None:
                    values.setdefault(f"{section}:{key}", []).append(ratio["value"])
            for name, stats in body.get("methods", {}).items():
                for figure in ("median_s", "tokens_per_s"):
                    if stats.get(figure) is not None:
                        values.setdefault(f"{section}:{name}:{figure}", []).append(stats[figure])
            if "second_s" in body:
                values.setdefault(f"{section}:second_s", []).append(body["second_s"])
    limits = {t["ratio"] or "load:second_s": t["limit"] for r in records for t in r["targets"].values()}
    print(f"{len(records)} records: " + ", ".join(str(f) for f in files if f.is_file()))
    summary = {}
    for key, found in values.items():
        median = statistics.median(found)
        limit = limits.get(key)
        met = None if limit is None else (median < limit if key.endswith("second_s") else median <= limit)
        summary[key] = {"median": round(median, 4), "runs": [round(v, 4) for v in found], "limit": limit, "met": met}
        state = "" if met is None else ("  met" if met else "  NOT met")
        print(f"   {key:58} {median:9.4f}  runs {summary[key]['runs']}" + (f"  limit {limit:g}{state}" if limit else ""))
    return summary


def parse_args(argv: list[str] | None = None) -> SpeedConfig:
    """Command line -> SpeedConfig; ``--quick`` swaps in tiny shapes, explicit options still win."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--model", help="one model for every section it fits (an encoder skips lm/generation/load)")
    add("--cls-model", help="classification-step model (default minilm; 'none' skips)")
    add("--lm-model", help="decoder for LM step, generation and load (default smollm2; 'none' skips)")
    for option in ("batch", "length", "virtual", "lm-batch", "lm-length", "gen-batch", "prompt-length",
                   "new-tokens", "warmup", "steps", "gen-steps", "repeats", "threads", "profile-steps"):
        add(f"--{option}", type=int)
    add("--lm-methods", help="comma list of our methods for the LM step (default prefix_tuning)")
    add("--gen-methods", help="comma list of our methods for generation (default: the three soft methods)")
    add("--sections", help="comma list from load,data,cls,lm,generation (default all)")
    add("--device", help="auto (default) | cpu | cuda | mps")
    add("--dtype", choices=("fp32", "bf16", "fp16"))
    add("--profile", action="store_true", help="also profile prefix-tuning steps -> <out>/<name>/profile.txt")
    add("--quick", action="store_true", help="tiny models and shapes (a CI-safe smoke check, not a benchmark)")
    add("--out", help="output folder (default results/speed)")
    add("--name", help="record folder name (default <device>-<cls model>-<lm model>, or quick)")
    args = vars(parser.parse_args(argv))
    quick = args.pop("quick")
    cfg = SpeedConfig(**(QUICK if quick else {}), quick=quick)
    model = args.pop("model")
    if model:
        cfg.cls_model, cfg.lm_model = model, model if model_config(model).get("decoder") else None
    for key, value in args.items():
        if value is None or value is False:
            continue
        if key in ("lm_methods", "gen_methods", "sections"):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        elif key in ("cls_model", "lm_model") and value == "none":
            value = None
        setattr(cfg, key, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.speed [options]``, or ``python -m bench.speed summarize RECORD_OR_DIR...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["summarize"]:
        summarize_records(argv[1:])
        return 0
    run_speed(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
