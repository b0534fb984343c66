"""Report figures (PNG and PDF) drawn on the Agg canvas.

Figures are built from :class:`matplotlib.figure.Figure` directly rather than pyplot, so no
global backend or figure registry is touched (the notebook keeps its inline backend, long
sweeps do not leak figures).  Colours come from :func:`bench.report.style.method_color` (one per registered method).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.report.comparison import VOLUME_AXES
from bench.report.loading import history_frame
from bench.report.style import method_color, model_markers, order_methods
from bench.report.tables import _column, cell_stats, cost_data, main_averages, selected_runs, task_metrics

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: tables alone (--no-figures) never pay for it
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURE_NAMES = ("score_vs_params", "score_vs_stored_params", "throughput", "task_bars", "validation_curves", "pareto")
"""Every figure :func:`make_figures` writes, each as ``<name>.png`` and ``<name>.pdf``."""


def _figure(panels: int, size: tuple[float, float] = (4.2, 3.2)) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``panels`` axes, three per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(1, min(panels, 3))
    rows = max(1, math.ceil(panels / cols))
    fig = Figure(figsize=(size[0] * cols + 2.2, size[1] * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[: max(panels, 1)]


def _legend(fig: Figure, methods: list[str], models: list[str]) -> None:
    """One legend for the figure: a colour per method, a marker per model when several."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=method_color(m), marker="s", linestyle="-", label=m) for m in methods]
    if len(models) > 1:
        markers = model_markers(models)
        handles += [
            Line2D([], [], color="black", marker=markers[m], linestyle="none", label=f"model: {m}") for m in models
        ]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", title="method")


def _empty(message: str) -> Figure:
    """A placeholder so every figure file exists even when nothing could be plotted."""
    fig, (ax,) = _figure(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def figure_paths(out_dir: Path, name: str) -> list[Path]:
    """Where figure ``name`` is written: a PNG (linked from report.md) and a PDF."""
    return [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    paths = figure_paths(out_dir, name)
    fig.savefig(paths[0], dpi=150)
    # No creation date in the PDF: regenerating a committed report must not rewrite unchanged figures.
    fig.savefig(paths[1], metadata={"CreationDate": None})
    return paths


def _zero_nan(values: pd.Series) -> np.ndarray:
    """Error-bar lengths: a single seed has no spread to draw."""
    return np.nan_to_num(values.to_numpy(dtype=float), nan=0.0)


def score_vs_params(df: pd.DataFrame, axis: str = "trainable") -> Figure:
    """Final score (mean ± std over seeds, chosen hparams) against parameters, one panel per task: ``axis``
    ``trainable`` (everything trained, a reparameterization MLP included) or ``stored`` (what the method
    keeps per task, the MLP folded: the axis of the comparison's Parameter volume label)."""
    stats = cell_stats(df, "final").dropna(subset=["mean"])
    if stats.empty:
        return _empty("no usable runs")
    ok = selected_runs(df)
    ok = ok[ok["usable"]].assign(params=lambda d: _column(d, f"params.{axis}"))
    params = ok.groupby(["method", "model", "task"])["params"].median()
    stats = stats.join(params, on=["method", "model", "task"])
    tasks, metrics, markers = sorted(stats["task"].unique()), task_metrics(df), model_markers(stats["model"])
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        for _, r in stats[stats["task"] == task].iterrows():
            ax.errorbar(
                r["params"],
                r["mean"] * 100,
                yerr=0 if math.isnan(r["std"]) else r["std"] * 100,
                fmt=markers[r["model"]],
                color=method_color(r["method"]),
                capsize=3,
                markersize=6,
            )
        ax.set_xscale("log")
        ax.set(
            title=task,
            xlabel=f"parameters: {VOLUME_AXES[axis]} (count, log scale)",
            ylabel=f"final {metrics.get(task, 'score')} (%)",
        )
        ax.grid(alpha=0.3)
    _legend(fig, order_methods(stats["method"]), sorted(stats["model"].unique()))
    return fig


def throughput(df: pd.DataFrame) -> Figure:
    """Training throughput per method × model: bar = mean, error bar = std, dots = single runs."""
    ok = df[df["usable"]].assign(tps=lambda d: _column(d, "throughput.train_tokens_per_s")).dropna(subset=["tps"])
    if ok.empty:
        return _empty("no throughput measured")
    models = sorted(ok["model"].unique())
    groups = [(m, model) for model in models for m in order_methods(ok.loc[ok["model"] == model, "method"])]
    fig, (ax,) = _figure(1, size=(max(4.5, 0.7 * len(groups)), 3.6))
    rng = np.random.default_rng(0)  # fixed jitter: the figure must not change between runs
    for x, (method, model) in enumerate(groups):
        values = ok.loc[(ok["method"] == method) & (ok["model"] == model), "tps"].to_numpy()
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        ax.bar(x, values.mean(), yerr=spread, color=method_color(method), alpha=0.8, capsize=4)
        ax.scatter(x + rng.uniform(-0.15, 0.15, len(values)), values, color="black", s=10, zorder=3)
    labels = [m if len(models) == 1 else f"{m}\n{model}" for m, model in groups]
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right")
    ax.set(ylabel="train throughput (tokens/s)", title="Training throughput (mean ± std, dots = runs)")
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, order_methods(ok["method"]), [])
    return fig


def task_bars(df: pd.DataFrame) -> Figure:
    """Final score per task as grouped bars (one bar per method, chosen hparams), error bars = std over seeds."""
    stats = cell_stats(df, "final").dropna(subset=["mean"])
    if stats.empty:
        return _empty("no usable runs")
    models, metrics = sorted(stats["model"].unique()), task_metrics(df)
    fig, axes = _figure(len(models), size=(max(4.5, 1.4 * stats["task"].nunique()), 3.4))
    for ax, model in zip(axes, models):
        rows = stats[stats["model"] == model]
        tasks, methods = sorted(rows["task"].unique()), order_methods(rows["method"])
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            cells = rows[rows["method"] == method].set_index("task").reindex(tasks)
            ax.bar(
                np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width,
                cells["mean"] * 100,
                width,
                yerr=_zero_nan(cells["std"]) * 100,
                color=method_color(method),
                capsize=2,
            )
        ax.set_xticks(range(len(tasks)), [f"{t}\n({metrics.get(t, '?')})" for t in tasks])
        ax.set(title=f"model: {model}", ylabel="final primary metric (%)", xlabel="task (metric)")
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, order_methods(stats["method"]), [])
    return fig


def validation_curves(df: pd.DataFrame) -> Figure:
    """Validation primary metric against step (chosen hparams), mean over seeds with a ±std band, per
    model × task."""
    history = history_frame(selected_runs(df))
    if history.empty:
        return _empty("no validation history")
    panels = sorted(history.groupby(["model", "task"]).groups)
    fig, axes = _figure(len(panels))
    for ax, (model, task) in zip(axes, panels):
        rows = history[(history["model"] == model) & (history["task"] == task)]
        for method in order_methods(rows["method"]):
            curve = rows[rows["method"] == method].groupby("step")["value"].agg(["mean", "std"])
            mean, std = curve["mean"] * 100, _zero_nan(curve["std"]) * 100
            ax.plot(curve.index, mean, color=method_color(method), marker=".")
            ax.fill_between(curve.index, mean - std, mean + std, color=method_color(method), alpha=0.15)
        ax.set(title=f"{task} ({model})", xlabel="training step", ylabel=f"validation {rows['metric'].iloc[0]} (%)")
        ax.grid(alpha=0.3)
    _legend(fig, order_methods(history["method"]), [])
    return fig


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Non-dominated rows: no other row has a smaller-or-equal ``x`` and a larger ``y``."""
    ordered = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -math.inf
    for index, row in ordered.iterrows():
        if row[y] > best:  # cheaper points came first, so only a strictly better score survives
            keep.append(index)
            best = row[y]
    return ordered.loc[keep]


def pareto_points(df: pd.DataFrame) -> pd.DataFrame:
    """Per method × model: average final score over tasks, median trainable params, mean train time.

    Rows missing a task of their model have no average (see ``main_averages``) and are left out, and so
    are rows whose tasks' metrics disagree on which way is better. ``oriented`` = average × sign: the
    frontier keeps the largest, so a lower-is-better metric's frontier keeps its smallest averages.
    """
    averages = main_averages(cell_stats(df, "final")).dropna(subset=["average", "sign"])
    averages["oriented"] = averages["average"] * averages["sign"]
    costs = cost_data(df)[["method", "model", "trainable", "train_time_s_mean"]]
    return averages.merge(costs, on=["method", "model"], how="left")


def pareto(df: pd.DataFrame) -> Figure:
    """Average score against trainable parameters and against train time, one frontier per model
    (averages of different models cover different tasks, so one joint frontier would mislead)."""
    points = pareto_points(df)
    if points.empty:
        return _empty("no method × model with usable runs on every task")
    models = sorted(points["model"].unique())
    markers, styles = model_markers(models), ("--", ":", "-.", (0, (5, 1)))
    fig, axes = _figure(2)
    panels = (
        ("trainable", "trainable parameters (count, log scale)"),
        ("train_time_s_mean", "mean train time per run (s)"),
    )
    for ax, (x, label) in zip(axes, panels):
        for _, r in points.dropna(subset=[x]).iterrows():
            ax.scatter(r[x], r["average"] * 100, color=method_color(r["method"]), marker=markers[r["model"]], s=40)
            ax.annotate(r["method"], (r[x], r["average"] * 100), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for i, model in enumerate(models):
            front = pareto_front(points[points["model"] == model], x, "oriented")
            ax.step(
                front[x],
                front["average"] * 100,
                where="post",
                linestyle=styles[i % len(styles)],
                color="black",
                linewidth=1,
                label=f"Pareto frontier ({model})",
            )
        spread = points[x].max() / points[x].min() if points[x].min() > 0 else 1.0
        log = x == "trainable" or spread > 20  # times from head-only to full FT span decades
        ax.set_xscale("log" if log else "linear")
        ax.set(
            xlabel=label.replace(" (s)", " (s, log scale)") if log and x != "trainable" else label,
            ylabel="average final score over tasks (%)",
            title=f"Score vs {label.split(' (')[0]}",
        )
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    _legend(fig, order_methods(points["method"]), models)
    return fig


_BUILDERS = {
    "score_vs_params": score_vs_params,
    "score_vs_stored_params": lambda df: score_vs_params(df, "stored"),
    "throughput": throughput,
    "task_bars": task_bars,
    "validation_curves": validation_curves,
    "pareto": pareto,
}


def make_figures(df: pd.DataFrame, out_dir: str | Path, draw: bool = True) -> list[Path]:
    """Write every figure of :data:`FIGURE_NAMES` as PNG and PDF into ``out_dir``; return the paths.
    ``draw=False`` returns the same paths and draws nothing (drawing is about half a report's time)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name in FIGURE_NAMES:
        paths += _save(_BUILDERS[name](df), out, name) if draw else figure_paths(out, name)
    return paths
