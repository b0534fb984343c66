"""Main (quality), cost and failure tables.

Every table comes in two forms: ``*_data`` returns the numbers (metric values in [0, 1],
seconds, bytes, counts) and the display function formats them (scores ×100, one decimal).
Only ``usable`` runs (status ``ok`` with a finite primary metric) enter means; the others are
counted next to the numbers and listed by :func:`failures_table`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.style import order_methods

KEYS = ["method", "model", "task"]
VARIANTS = {"final": "score_final", "best": "score_best"}
"""Main-table variants: the score at the end of training, or at the best validation step."""


def score_column(variant: str) -> str:
    """The record column holding the primary metric for ``variant``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    return VARIANTS[variant]


def _sort(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows in method order (the claim's order, then baselines), then model, then task."""
    rank = {m: i for i, m in enumerate(order_methods(frame["method"]))}
    return frame.sort_values(keys, key=lambda s: s.map(rank) if s.name == "method" else s).reset_index(drop=True)


def task_metrics(df: pd.DataFrame) -> dict[str, str]:
    """The primary metric name of each task (joined with '/' if records disagree)."""
    named = df.dropna(subset=["task", "metrics.primary"])
    return {task: "/".join(sorted(set(group["metrics.primary"]))) for task, group in named.groupby("task")}


def main_stats(df: pd.DataFrame, variant: str = "final") -> pd.DataFrame:
    """Per method × model × task: mean, std (sample, ddof=1) and n of usable runs, and the runs
    left out (``not_ok`` count, ``not_ok_detail`` such as ``"1 diverged"``)."""
    column = score_column(variant)
    ok = df[df["usable"] & df[column].notna()]
    stats = ok.groupby(KEYS)[column].agg(mean="mean", std="std", n="count").reset_index()
    bad = df[~df["usable"] & (df["status"] != "unreadable")].dropna(subset=KEYS)
    bad = bad.assign(kind=bad["status"].where(bad["status"] != "ok", "invalid"))
    not_ok = bad.groupby(KEYS).agg(not_ok=("kind", "size"), not_ok_detail=("kind", _count_kinds)).reset_index()
    stats = stats.merge(not_ok, on=KEYS, how="outer")
    stats[["n", "not_ok"]] = stats[["n", "not_ok"]].fillna(0).astype(int)
    stats["not_ok_detail"] = stats["not_ok_detail"].fillna("")
    return _sort(stats, KEYS) if len(stats) else stats


def _count_kinds(kinds: pd.Series) -> str:
    """``"1 failed, 2 diverged"``: why runs of a cell are left out."""
    counts = kinds.value_counts()
    return ", ".join(f"{counts[k]} {k}" for k in sorted(counts.index))


def main_averages(stats: pd.DataFrame) -> pd.DataFrame:
    """Per method × model: mean over tasks of the per-task means, and how many tasks it covers.

    The average is only given (``average`` not NaN) when the row covers every task that has a
    usable run for that model; a partial average would compare rows over different tasks.
    """
    scored = stats.dropna(subset=["mean"])
    tasks_per_model = scored.groupby("model")["task"].nunique()
    rows = stats.groupby(["method", "model"]).agg(average=("mean", "mean"), tasks=("mean", "count")).reset_index()
    rows["model_tasks"] = rows["model"].map(tasks_per_model).fillna(0).astype(int)
    rows.loc[rows["tasks"] < rows["model_tasks"], "average"] = np.nan
    return rows


def _fmt_score(mean: float, std: float, n: int, not_ok: str, best: bool) -> str:
    lost = f"; {not_ok}" if not_ok else ""
    if n == 0:
        return f"- (0 ok{lost})" if not_ok else ""
    value = f"**{mean * 100:.1f}**" if best else f"{mean * 100:.1f}"
    spread = f" ± {std * 100:.1f}" if n > 1 and not math.isnan(std) else ""
    return f"{value}{spread} (n={n}{lost})"


def _fmt_average(average: float, tasks: int, model_tasks: int, best: bool) -> str:
    if math.isnan(average):
        return f"n/a ({tasks}/{model_tasks} tasks)" if tasks else "-"
    value = f"**{average * 100:.1f}**" if best else f"{average * 100:.1f}"
    return f"{value} ({tasks} task{'s' if tasks != 1 else ''})"


def _is_best(values: pd.Series, groups: pd.Series) -> pd.Series:
    """True where a value equals the maximum of its group (ties are all marked)."""
    top = values.groupby(groups).transform("max")
    return pd.Series(np.isclose(values, top) & values.notna(), index=values.index)


def main_table(df: pd.DataFrame, variant: str = "final") -> pd.DataFrame:
    """Method × model rows, task columns: ``mean ± std (n=k)`` ×100; best per column in bold.

    The best is marked among the methods of the same model.  The Average column is the mean of
    the per-task means (see :func:`main_averages`).
    """
    stats = main_stats(df, variant)
    if stats.empty:
        return pd.DataFrame(columns=["Method", "Model", "Average"])
    stats["best"] = _is_best(stats["mean"], stats["model"] + "\0" + stats["task"])
    stats["cell"] = [_fmt_score(r.mean, r.std, r.n, r.not_ok_detail, r.best) for r in stats.itertuples()]
    metrics = task_metrics(df)
    stats["column"] = [f"{t} ({metrics.get(t, '?')})" for t in stats["task"]]
    table = stats.pivot(index=["method", "model"], columns="column", values="cell").fillna("")
    table = table[sorted(table.columns)].reset_index()
    averages = main_averages(stats)
    averages["best"] = _is_best(averages["average"], averages["model"])
    table = table.merge(averages, on=["method", "model"], how="left")
    table["Average"] = [_fmt_average(r.average, r.tasks, r.model_tasks, r.best) for r in table.itertuples()]
    table = _sort(table, ["method", "model"]).drop(columns=["average", "tasks", "model_tasks", "best"])
    return table.rename(columns={"method": "Method", "model": "Model"})


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """A numeric record column, NaN where absent (older or partial records)."""
    if name not in df:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").astype(float)


def _percent_of_backbone(df: pd.DataFrame, name: str) -> pd.Series:
    backbone = _column(df, "params.backbone")
    return 100 * _column(df, f"params.{name}") / backbone.where(backbone > 0)


COST_SOURCES = {
    "tokens_per_s": "throughput.train_tokens_per_s",
    "step_time_s": "throughput.step_time_s_median",
    "time_to_95_s": "time_to_95_s",
    "train_time_s": "throughput.train_time_s",
}
"""Cost-table quantities given as mean and std over usable runs (all tasks and seeds)."""


def cost_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per method × model over usable runs: parameter medians (absolute, % of backbone),
    mean/std of throughput, step time, time to 95 % of best and train time, max peak memory.

    Parameter counts are medians because they differ across tasks only by the task head.
    """
    ok = df[df["usable"]]
    frame = pd.DataFrame({"method": ok["method"], "model": ok["model"]})
    for name in ("backbone", "trainable", "stored", "head"):
        frame[name] = _column(ok, f"params.{name}")
    for name in ("trainable", "stored", "head"):
        frame[f"{name}_pct"] = _percent_of_backbone(ok, name)
    for name, source in COST_SOURCES.items():
        frame[name] = _column(ok, source)
    frame["peak_memory_bytes"] = _column(ok, "throughput.peak_memory_bytes")
    groups = frame.groupby(["method", "model"])
    medians = ["backbone", "trainable", "stored", "head", "trainable_pct", "stored_pct", "head_pct"]
    data = groups[medians].median()
    data["runs"] = groups.size()
    data["trainable_min"], data["trainable_max"] = groups["trainable"].min(), groups["trainable"].max()
    for name in COST_SOURCES:
        data[f"{name}_mean"], data[f"{name}_std"] = groups[name].mean(), groups[name].std()
    data["peak_memory_bytes"] = groups["peak_memory_bytes"].max()
    data = data.reset_index()
    return _sort(data, ["method", "model"]) if len(data) else data


def fmt_count(value: float) -> str:
    """A parameter count with a K/M/B suffix (``24576`` -> ``24.6K``)."""
    if math.isnan(value):
        return "n/a"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def fmt_percent(value: float) -> str:
    """A share of the backbone with enough digits for tiny methods (``0.022 %``)."""
    if math.isnan(value):
        return "n/a"
    if value >= 1:
        return f"{value:.1f} %"
    return f"{value:.2f} %" if value >= 0.01 else f"{value:.2g} %"


def _fmt_mean_std(mean: float, std: float, scale: float = 1.0, digits: int = 1) -> str:
    if math.isnan(mean):
        return "n/a"
    spread = "" if math.isnan(std) else f" ± {std * scale:,.{digits}f}"
    return f"{mean * scale:,.{digits}f}{spread}"


def _fmt_params(row: pd.Series, name: str) -> str:
    if math.isnan(row[name]):
        return "n/a"
    text = f"{fmt_count(row[name])} ({fmt_percent(row[f'{name}_pct'])})"
    if name == "trainable" and row["trainable_min"] < row["trainable_max"]:  # differs by task head
        text += f" [{fmt_count(row['trainable_min'])}-{fmt_count(row['trainable_max'])}]"
    return text


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`cost_data` (parameters as count and % of backbone)."""
    data = cost_data(df)
    rows = []
    for _, r in data.iterrows():
        memory = r["peak_memory_bytes"]
        rows.append({
            "Method": r["method"], "Model": r["model"], "Runs": int(r["runs"]),
            "Trainable params": _fmt_params(r, "trainable"), "Stored params": _fmt_params(r, "stored"),
            "Head params": _fmt_params(r, "head"),
            "Train tokens/s": _fmt_mean_std(r["tokens_per_s_mean"], r["tokens_per_s_std"], digits=0),
            "Step time (ms)": _fmt_mean_std(r["step_time_s_mean"], r["step_time_s_std"], scale=1000),
            "Peak memory (MiB)": "n/a" if math.isnan(memory) else f"{memory / 2**20:,.0f}",
            "Time to 95% of best (s)": _fmt_mean_std(r["time_to_95_s_mean"], r["time_to_95_s_std"]),
            "Train time (s)": _fmt_mean_std(r["train_time_s_mean"], r["train_time_s_std"]),
        })
    columns = ["Method", "Model", "Runs", "Trainable params", "Stored params", "Head params", "Train tokens/s",
               "Step time (ms)", "Peak memory (MiB)", "Time to 95% of best (s)", "Train time (s)"]
    return pd.DataFrame(rows, columns=columns)


def failures_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every run left out of the averages: failed, diverged, unreadable, or ok without a score."""
    bad = df[~df["usable"]]
    table = pd.DataFrame({
        "Status": bad["status"].where(bad["status"] != "ok", "invalid"),
        "Method": bad["method"], "Model": bad["model"], "Task": bad["task"],
        "Seed": bad["seed"].map(lambda s: "" if pd.isna(s) else str(int(s))),
        "Reason": bad["problem"].map(lambda p: " ".join(str(p).split())),  # one line per run
        "Record": bad["path"],
    })
    return table.sort_values(["Status", "Record"]).reset_index(drop=True)


def run_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Runs per method × model by outcome: used (ok), failed, diverged, invalid, unreadable."""
    outcome = df["status"].where(~((df["status"] == "ok") & ~df["usable"]), "invalid")
    outcome = outcome.where(outcome != "ok", "used")
    frame = pd.DataFrame({"Method": df["method"].fillna("?"), "Model": df["model"].fillna("?"), "outcome": outcome})
    counts = frame.groupby(["Method", "Model", "outcome"]).size().unstack(fill_value=0)
    for column in ("used", "failed", "diverged", "invalid", "unreadable"):
        if column not in counts:
            counts[column] = 0
    extra = sorted(set(counts.columns) - {"used", "failed", "diverged", "invalid", "unreadable"})
    counts = counts[["used", "failed", "diverged", "invalid", "unreadable", *extra]].reset_index()
    counts.columns.name = None
    counts["total"] = counts.drop(columns=["Method", "Model"]).sum(axis=1)
    return _sort(counts.rename(columns={"Method": "method", "Model": "model"}), ["method", "model"]) \
        .rename(columns={"method": "Method", "model": "Model"})
