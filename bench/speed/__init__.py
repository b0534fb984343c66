"""``python -m bench.speed``: what a training step, an evaluation pass and a generation cost, per method.

In the style of nanoGPT's ``bench.py``: build every contender first, warm up, synchronise, then
time.  Contenders are timed round-robin (one call of each per round, in a fresh random order every
round) in one process, so noise from other processes hits all of them alike; ratios are taken
per round (paired) and their median reported, which is robust to slow drift in load.

Sections (each fails on its own: a failure is reported as ``n/a (...)``, never a crash):

* ``cls``  - a classification training step (the trainer's step) on the encoder (default MiniLM):
  every registered method and PEFT's equivalents;
* ``lm``   - an LM-loss training step on the decoder (default SmolLM2): ours vs PEFT;
* ``generation`` - greedy ``generate`` with the KV cache, ours vs the plain base model (and PEFT);
* ``load`` - a second ``load_model`` of the decoder (the GGUF is dequantised once, then cached);
* ``data`` - the tokenised-split cache cold vs warm, and padding with / without length grouping;
* ``eval`` - evaluation (sorted batches) vs head-only training on a realistic length mix, and
  generation over mixed-length prompts sorted vs in file order;
* ``s2s``, ``s2s_generation`` - on one encoder-decoder (default tiny_t5, ``--s2s-model t5_base``): a
  text-to-text training step of every soft method, prefix tuning at PEFT's decoder-only placement,
  full fine-tuning and PEFT's seq2seq prompt/prefix tuning; greedy generation vs the base model.

Modules: ``config`` (settings, method lists from the registry), ``timing`` (pure timing and ratio
functions), ``contenders``, ``sections``, ``eval_section``, ``s2s_section``, ``profile``, ``targets`` (as data),
``output`` (record, tables, summaries) and ``cli``.  Figures go to ``<out>/<name>/speed.json``.
"""

from bench.speed.cli import main, parse_args, run_speed
from bench.speed.config import SpeedConfig, s2s_contenders, s2s_peft_pairs, soft_methods, step_methods
from bench.speed.contenders import peft_methods
from bench.speed.output import summarize_records
from bench.speed.targets import TARGETS, Target, evaluate_targets
from bench.speed.timing import combined_overhead, overhead_key, paired_ratio

__all__ = [
    "main",
    "parse_args",
    "run_speed",
    "SpeedConfig",
    "s2s_contenders",
    "s2s_peft_pairs",
    "soft_methods",
    "step_methods",
    "peft_methods",
    "summarize_records",
    "TARGETS",
    "Target",
    "evaluate_targets",
    "paired_ratio",
    "combined_overhead",
    "overhead_key",
]
