"""``python -m bench.report.dtype RUNS_DIR [--noise DIR]``: what a lower training precision costs and buys.

For every method × model × task × seed × hyperparameters run at two precisions (``dtype``: fp32 and bf16),
prints the median step time at each and their ratio (fp32 ÷ bf16, > 1 when bf16 is faster), the best
validation score at each and the difference, and — when ``--noise`` names records of the same setting at
several seeds — the seed standard deviation that difference is to be compared with. Step times are only
comparable between runs that ran side by side (the same load), as the measurement in docs/PERFORMANCE.md did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench.report.loading import ReportError, load_records

PAIR = ("fp32", "bf16")
"""The precisions compared: reference first."""


def _dtype(config: object) -> str | None:
    return config.get("dtype") if isinstance(config, dict) else None


def _point(label: str) -> str:
    """A run's hparams label without the precision: the two runs of a pair share it."""
    return ", ".join(part for part in str(label).split(", ") if part and not part.startswith("dtype="))


def paired_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per method × model × task × seed × point run at both precisions of :data:`PAIR`."""
    ok = df[df["usable"]].assign(
        dtype=[_dtype(c) for c in df.loc[df["usable"], "provenance.config"]],
        point=[_point(h) for h in df.loc[df["usable"], "hparams"]],
    )
    keys = ["method", "model", "task", "seed", "point"]
    wide = ok.pivot_table(
        index=keys, columns="dtype", values=["throughput.step_time_s_median", "score_best"], aggfunc="first"
    )
    wide.columns = [f"{'step_s' if q.startswith('throughput') else 'best'}_{d}" for q, d in wide.columns]
    needed = [f"{q}_{d}" for q in ("step_s", "best") for d in PAIR]
    if not set(needed) <= set(wide.columns):
        return pd.DataFrame(columns=keys + needed + ["speedup", "delta"])
    wide = wide.dropna(subset=needed).reset_index()
    wide["speedup"] = wide[f"step_s_{PAIR[0]}"] / wide[f"step_s_{PAIR[1]}"]
    wide["delta"] = wide[f"best_{PAIR[1]}"] - wide[f"best_{PAIR[0]}"]
    return wide


def seed_noise(df: pd.DataFrame) -> pd.Series:
    """Per method × model × task, the largest standard deviation over seeds of the best validation score
    among the points run at two or more seeds."""
    ok = df[df["usable"]]
    per_point = ok.groupby(["method", "model", "task", "hparams"])["score_best"].agg(["std", "count"])
    return per_point[per_point["count"] >= 2].groupby(level=[0, 1, 2])["std"].max()


def render(pairs: pd.DataFrame, noise: pd.Series | None) -> str:
    """A Markdown table of :func:`paired_runs`, scores ×100, with the seed noise where known."""
    header = ["method", "model", "task", "seed", "step fp32 (s)", "step bf16 (s)", "fp32 ÷ bf16"]
    header += ["best fp32", "best bf16", "Δ", "seed std"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in pairs.itertuples(index=False):
        std = noise.get((row.method, row.model, row.task)) if noise is not None else None
        lines.append(
            f"| {row.method} | {row.model} | {row.task} | {row.seed} | {row.step_s_fp32:.3f} | {row.step_s_bf16:.3f} "
            f"| {row.speedup:.2f} | {100 * row.best_fp32:.1f} | {100 * row.best_bf16:.1f} | {100 * row.delta:+.1f} "
            f"| {'-' if std is None or pd.isna(std) else f'{100 * std:.1f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 2 with one line when a folder holds no record or no pair."""
    parser = argparse.ArgumentParser(prog="python -m bench.report.dtype", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="records of the same runs at dtype=fp32 and dtype=bf16")
    parser.add_argument("--noise", type=Path, default=None, help="records of the same setting at several seeds")
    args = parser.parse_args(argv)
    try:
        pairs = paired_runs(load_records(args.runs_dir))
        noise = seed_noise(load_records(args.noise)) if args.noise else None
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if pairs.empty:
        print(f"error: {args.runs_dir}: no run was found at both {' and '.join(PAIR)}", file=sys.stderr)
        return 2
    print(render(pairs, noise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
