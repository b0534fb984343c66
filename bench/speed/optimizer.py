"""``python -m bench.speed.optimizer``: AdamW's per-tensor loop against its fused kernel, as ratios.

The trainer builds AdamW with ``fused=True`` wherever torch allows it (:func:`bench.train.fusable`). This
command shows why, on the parameter sets the harness trains: a random-initialised BERT encoder of MiniLM-L6's
shape (every weight: full fine-tuning) and the largest trainable set of a soft-prompt method on it (the prefix
MLP of prefix tuning / P-Tuning v2). Steps are timed round-robin after a warm-up (:mod:`bench.speed.timing`), so
load from other processes hits every contender alike; the ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from bench.speed.timing import Contender, paired_ratio, round_robin, summarize

# MiniLM-L6 (all-MiniLM-L6-v2): 6 layers, hidden 384, FFN 1536, BERT's uncased vocabulary
MINILM_SHAPE = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
}
PREFIX_MLP_HIDDEN = 512  # the prefix methods' prefix_hidden_size (conf/method/*.yaml)


def minilm_parameters() -> list[torch.nn.Parameter]:
    """Every weight of a random BERT encoder of MiniLM-L6's shape (no download: built from a config)."""
    from transformers import BertConfig, BertModel

    return list(BertModel(BertConfig(**MINILM_SHAPE)).parameters())


def prefix_mlp_parameters(tokens: int = 20) -> list[torch.nn.Parameter]:
    """The prefix embedding and reparameterisation MLP on MiniLM: what prefix tuning trains."""
    hidden, layers = MINILM_SHAPE["hidden_size"], MINILM_SHAPE["num_hidden_layers"]
    mlp = torch.nn.Sequential(
        torch.nn.Embedding(tokens, hidden),
        torch.nn.Linear(hidden, PREFIX_MLP_HIDDEN),
        torch.nn.Linear(PREFIX_MLP_HIDDEN, 2 * layers * hidden),
    )
    return list(mlp.parameters())


def adamw_step(params: list[torch.nn.Parameter], fused: bool) -> Callable[[], None]:
    """One AdamW update over ``params`` with fixed random gradients (the step alone is timed)."""
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p in copies:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(copies, lr=1e-4, fused=fused)
    return optimizer.step


def main(argv: list[str] | None = None) -> int:
    """Time both implementations on both parameter sets and print each median and the loop/fused ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed.optimizer", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per repeat (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (default 3)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    for label, params in (("full fine-tuning", minilm_parameters()), ("prefix MLP", prefix_mlp_parameters())):
        count = sum(p.numel() for p in params)
        contenders = [Contender(name, adamw_step(params, fused=name == "fused")) for name in ("loop", "fused")]
        times = round_robin(contenders, warmup=3, steps=args.steps, repeats=args.repeats, device=device)
        medians = {name: summarize(entry)["median_s"] * 1000 for name, entry in times.items()}
        ratio = paired_ratio(times, {}, ("loop", "fused"))["value"]
        print(
            f"{label} ({count / 1e6:.2f}M params): loop {medians['loop']:.1f} ms, fused {medians['fused']:.1f} ms,"
            f" loop/fused {ratio:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
