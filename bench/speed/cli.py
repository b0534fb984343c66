"""``python -m bench.speed [options]`` and ``python -m bench.speed summarize RECORD_OR_DIR...``."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.models import model_spec, shared_shape_weights
from bench.record import write_record
from bench.speed.config import QUICK, SpeedConfig
from bench.speed.eval_section import eval_section
from bench.speed.output import build_record, busy, load_average, print_section, print_targets, quiet, summarize_records
from bench.speed.profile import profile_prefix
from bench.speed.s2s_section import s2s_generation_section, s2s_section
from bench.speed.sections import cls_section, data_section, generation_section, lm_section, load_section
from bench.speed.targets import evaluate_targets
from bench.speed.timing import one_line

# section name -> (function, the model it needs: "cls" = the encoder option, "lm" = a decoder,
# "s2s" = an encoder-decoder)
SECTIONS = {
    "load": (lambda cfg, device, dtype: load_section(cfg), "lm"),
    "data": (lambda cfg, device, dtype: data_section(cfg), "cls"),
    "cls": (cls_section, "cls"),
    "lm": (lm_section, "lm"),
    "generation": (generation_section, "lm"),
    "eval": (eval_section, "cls"),
    "s2s": (s2s_section, "s2s"),
    "s2s_generation": (s2s_generation_section, "s2s"),
}
# what a section's model must be: (its model config key, what to call it, the option that names it)
_MODEL_NEEDS = {"lm": ("decoder", "a decoder", "--lm-model"), "s2s": ("seq2seq", "an encoder-decoder", "--s2s-model")}


def section_model(needs: str, cfg: SpeedConfig) -> str | None:
    """The model a section runs on (None: switched off); a model of the wrong kind is a one-line error."""
    model = {"cls": cfg.cls_model, "lm": cfg.lm_model, "s2s": cfg.s2s_model}[needs]
    if model and needs in _MODEL_NEEDS:
        key, noun, option = _MODEL_NEEDS[needs]
        if not getattr(model_spec(model), key):
            raise ValueError(f"model {model!r} is not {noun}; this section needs {noun} ({option})")
    return model


def run_section(name: str, cfg: SpeedConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any] | None:
    """One section, or None when its model is switched off; any failure becomes ``{"error": ...}``."""
    if name not in SECTIONS:
        return {"error": f"unknown section {name!r}; choices: {sorted(SECTIONS)}"}
    function, needs = SECTIONS[name]
    try:
        if not section_model(needs, cfg):
            return None
        return function(cfg, device, dtype)
    except Exception as error:  # noqa: BLE001 — one broken section must not hide the others
        return {"error": one_line(error)}


def announce(cfg: SpeedConfig, device: torch.device, start_load: tuple | None) -> None:
    """The run's conditions, and a warning when other processes already hold the cores."""
    print(
        f"bench.speed: {device} {cfg.dtype}, {torch.get_num_threads()} threads, load average {start_load}; "
        f"{cfg.warmup} warm-up + {cfg.repeats} x {cfg.steps} timed rounds ({cfg.repeats} for eval), contenders"
        " alternate in random order"
    )
    if busy(device, start_load):
        print(
            "warning: the load average says other processes use the cores this run needs; with several "
            "threads each op then waits for a descheduled thread and timings become erratic - prefer an idle "
            "machine or --threads 1"
        )


def run_speed(cfg: SpeedConfig) -> dict[str, Any]:
    """Run the selected sections, print them, check the targets and write ``<out>/<name>/speed.json``."""
    from bench.runner import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = f"-{torch.get_num_threads()}t" if device.type == "cpu" else ""
    cfg.name = cfg.name or ("quick" if cfg.quick else f"{device.type}{threads}-{cfg.cls_model}-{cfg.lm_model}")
    started, start_load = time.perf_counter(), load_average()
    announce(cfg, device, start_load)
    sections: dict[str, Any] = {}
    profile = None
    with quiet():
        for name in cfg.sections:
            with shared_shape_weights(device):  # a shape model's contenders share one random init, made on device
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
    record = build_record(cfg, device, sections, targets, profile, start_load, started)
    path = write_record(record, Path(cfg.out) / cfg.name / "speed.json")
    print(f"\nrecord: {path}")
    return record


INT_OPTIONS = (
    "batch",
    "length",
    "virtual",
    "lm-batch",
    "lm-length",
    "gen-batch",
    "prompt-length",
    "new-tokens",
    "eval-examples",
    "eval-batch",
    "eval-train-batch",
    "sorted-prompts",
    "sorted-gen-batch",
    "sorted-new-tokens",
    "warmup",
    "steps",
    "gen-steps",
    "repeats",
    "threads",
    "profile-steps",
)
LIST_OPTIONS = ("lm_methods", "gen_methods", "sections")


def make_parser() -> argparse.ArgumentParser:
    """The command line; every option maps onto a :class:`SpeedConfig` field."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed",
        description="What training, evaluation and generation cost, per method, timed in one process.",
    )
    add = parser.add_argument
    add("--model", help="one model for every section it fits (an encoder skips lm/generation/load/s2s*)")
    add("--cls-model", help="encoder for the cls, data and eval sections (default minilm; 'none' skips)")
    add("--lm-model", help="decoder for LM step, generation, load and eval generation (default smollm2; 'none' skips)")
    add("--s2s-model", help="encoder-decoder for the s2s sections (default tiny_t5, e.g. t5_base; 'none' skips)")
    add("--s2s-target-length", type=int, help="decoder target length of the s2s step (default 32)")
    for option in INT_OPTIONS:
        add(f"--{option}", type=int)
    add(
        "--lm-methods",
        help="comma list of our methods for the LM step (default: those PEFT implements with an attention prefix)",
    )
    add("--gen-methods", help="comma list of our methods for generation (default: every non-baseline method)")
    add("--sections", help=f"comma list from {','.join(SECTIONS)} (default all)")
    add("--eval-data", help="CoNLL-2003 folder for the eval section (default ../shared/data/ner/conll2003)")
    add("--device", help="auto (default) | cpu | cuda | mps")
    add("--dtype", choices=("fp32", "bf16", "fp16"))
    add(
        "--profile",
        action="store_true",
        help="also profile the LM step's first method (prefix tuning) on the cls model -> <out>/<name>/profile.txt",
    )
    add("--quick", action="store_true", help="tiny models and shapes (a CI-safe smoke check, not a benchmark)")
    add("--out", help="output folder (default results/speed)")
    add("--name", help="record folder name (default <device>-<cls model>-<lm model>, or quick)")
    return parser


def parse_args(argv: list[str] | None = None) -> SpeedConfig:
    """Command line -> SpeedConfig; ``--quick`` swaps in tiny shapes, explicit options still win."""
    args = vars(make_parser().parse_args(argv))
    quick = args.pop("quick")
    cfg = SpeedConfig(**(QUICK if quick else {}), quick=quick)
    model = args.pop("model")
    if model:
        spec = model_spec(model)
        cfg.cls_model = None if spec.seq2seq else model
        cfg.lm_model = model if spec.decoder else None
        cfg.s2s_model = model if spec.seq2seq else None
    for key, value in args.items():
        if value is None or value is False:
            continue
        if key in LIST_OPTIONS:
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        elif key in ("cls_model", "lm_model", "s2s_model") and value == "none":
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
