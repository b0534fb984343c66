"""Main (quality), cost and failure tables.

Every table comes in two forms: ``*_data`` returns the numbers (metric values in [0, 1],
seconds, bytes, counts) and the display function formats them (scores ×100, one decimal).
Only ``usable`` runs (status ``ok`` with a finite primary metric) enter means; the others are
counted next to the numbers and listed by :func:`failures_table`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from bench.report.style import order_methods

KEYS = ["method", "model", "task"]
POINT = KEYS + ["hparams"]
"""A sweep point: one cell of the grid (its seeds are the repeats)."""
VARIANTS = {"final": "score_final", "best": "score_best", "tuned": "score_tuned"}
"""Score variants: validation at the end of training; validation at the best checkpoint (PT2-style
best epoch); tuned = test of the best checkpoint of the hparams chosen on validation."""
SELECTION = "score_best"
"""Hyperparameters are chosen on the mean over seeds of the best-checkpoint validation score: the
checkpoint whose test score the tuned table reports."""
MARKS = {"not_converged": "†", "collapsed": "‡", "unknown": "?", "same_split": "§", "grid_edge": "^"}
LEGEND = (
    "† a run did not converge, ‡ a run's validation predictions collapsed to one value, ? a record "
    "without diagnostics, § selected and reported on the same (validation) split, ^ the chosen value is at "
    "the edge of the grid it was chosen from (the optimum may lie outside it)"
)


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


def _with_points(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with an ``hparams`` column ('' = the defaults) and a ``score_sign`` column (+1: larger is
    better, see bench.report.loading.direction_sign) for frames built without them."""
    df = df if "hparams" in df else df.assign(hparams="")
    return df if "score_sign" in df else df.assign(score_sign=1.0)


def _stats(df: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """Per ``keys``: mean, std (ddof=1), n of usable runs with a finite ``column``, their diagnostic
    flags (counts), the primary metric's ``sign`` (+1 higher is better, -1 lower), and the runs left out
    (``not_ok`` count, ``not_ok_detail`` e.g. ``"1 diverged"``)."""
    df = _with_points(df)
    ok = df[df["usable"] & df[column].notna()]
    flags = ok.assign(
        not_converged=ok["converged"].eq(False), collapsed=ok["collapsed"].eq(True), unknown=ok["converged"].isna()
    )
    stats = (
        flags.groupby(keys)
        .agg(
            mean=(column, "mean"),
            std=(column, "std"),
            n=(column, "count"),
            not_converged=("not_converged", "sum"),
            collapsed=("collapsed", "sum"),
            unknown=("unknown", "sum"),
            sign=("score_sign", "first"),
        )
        .reset_index()
    )
    bad = df[~df["usable"] & (df["status"] != "unreadable")].dropna(subset=KEYS)
    bad = bad.assign(kind=bad["status"].where(bad["status"] != "ok", "invalid"))
    not_ok = bad.groupby(keys).agg(not_ok=("kind", "size"), not_ok_detail=("kind", _count_kinds)).reset_index()
    stats = stats.merge(not_ok, on=keys, how="outer")
    counts = ["n", "not_ok", "not_converged", "collapsed", "unknown"]
    stats[counts] = stats[counts].fillna(0).astype(int)
    stats["not_ok_detail"] = stats["not_ok_detail"].fillna("")
    return _sort(stats, keys) if len(stats) else stats


def main_stats(df: pd.DataFrame, variant: str = "final") -> pd.DataFrame:
    """Per method × model × task × hparams (every sweep point): see :func:`_stats`."""
    if variant == "tuned":
        return cell_stats(df, "tuned")
    return _stats(_with_points(df), score_column(variant), POINT)


def seed_matched_means(cell_runs: pd.DataFrame, point: list[str], score: str) -> pd.DataFrame:
    """Mean ``score`` per point of one cell over the seeds that every point of the cell has.

    The protocol runs its grid at one seed and the chosen point at more; averaging each point over its
    own seeds would compare a 1-seed score with a 3-seed mean and favour the noisier point (its best
    draw). Comparing on the shared seeds reproduces the protocol's choice. Where the points share no
    seed, each point's mean over its own seeds is used (``seeds_matched`` False).
    Columns: ``point``, ``selection``, ``selection_n`` (runs averaged), ``seeds_matched``.
    """
    seed_sets = [frozenset(group["seed"]) for _, group in cell_runs.groupby(point, sort=False, dropna=False)]
    shared = frozenset.intersection(*seed_sets) if seed_sets else frozenset()
    used = cell_runs[cell_runs["seed"].isin(shared)] if shared else cell_runs
    means = used.groupby(point, dropna=False).agg(selection=(score, "mean"), selection_n=(score, "count"))
    return means.reset_index().assign(seeds_matched=bool(shared))


def select_points(df: pd.DataFrame) -> pd.DataFrame:
    """Per method × model × task, the hparams with the best :data:`SELECTION` score, compared on the
    seeds every point has (:func:`seed_matched_means`).

    Only validation scores are read, never test.  The best is the largest score of a higher-is-better
    primary metric and the smallest of a lower-is-better one (``score_sign``).  Ties go to more seeds,
    then to the first hparams in sort order.  ``candidates`` counts the points compared.
    """
    ok = _with_points(df)
    ok = ok[ok["usable"] & ok[SELECTION].notna()]
    cells = [
        seed_matched_means(runs, POINT, SELECTION).assign(sign=runs["score_sign"].iloc[0])
        for _, runs in ok.groupby(KEYS, sort=False)
    ]
    columns = POINT + ["selection", "selection_n", "seeds_matched", "sign"]
    means = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=columns)
    means["oriented"] = means["selection"] * means["sign"]
    means = means.sort_values(["oriented", "selection_n", "hparams"], ascending=[False, False, True])
    chosen = means.drop_duplicates(KEYS).drop(columns=["sign", "oriented"])
    chosen["candidates"] = chosen.set_index(KEYS).index.map(means.groupby(KEYS).size()).to_numpy()
    return chosen.reset_index(drop=True)


def selected_runs(df: pd.DataFrame, chosen: pd.DataFrame | None = None) -> pd.DataFrame:
    """The runs of each cell's chosen point (``chosen``, default :func:`select_points` of ``df``); every run
    of a cell that has no usable run at all (so its failures are still counted)."""
    df = _with_points(df)
    chosen = select_points(df) if chosen is None else chosen
    cell = pd.MultiIndex.from_frame(df[KEYS].astype(str))
    point = pd.MultiIndex.from_frame(df[POINT].astype(str))
    picked = point.isin(pd.MultiIndex.from_frame(chosen[POINT].astype(str)))
    unchosen_cell = ~cell.isin(pd.MultiIndex.from_frame(chosen[KEYS].astype(str)))
    return df[picked | unchosen_cell]


# Where a tuned score comes from, in order of preference: a split nothing was selected on (the test file,
# else the held-out part of the validation file, bench.tasks.holdout.split_validation), else the
# best-checkpoint validation score itself (selected and reported on the same split, flagged).
REPORTED_SPLITS = (("score_test", "test"), ("score_heldout", "validation (held-out part)"))


def _cell_has(runs: pd.DataFrame, column: str) -> pd.Series:
    """Per run: whether every usable run of its cell has a finite ``column``."""
    usable = runs[runs["usable"]]
    has = usable.groupby(KEYS)[column].apply(lambda s: bool(s.notna().all()))
    index = pd.MultiIndex.from_frame(runs[KEYS])
    return pd.Series(index.map(has.to_dict()).to_numpy(), index=runs.index).eq(True)


def _tuned_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """``score_tuned`` and ``split`` per run, from the first of :data:`REPORTED_SPLITS` that every usable
    run of the cell has, else the best-checkpoint validation score."""
    score, split = runs["score_best"].copy(), pd.Series("validation", index=runs.index)
    for column, name in reversed(REPORTED_SPLITS):
        if column in runs:
            has = _cell_has(runs, column)
            score, split = runs[column].where(has, score), split.where(~has, name)
    return runs.assign(score_tuned=score, split=split.to_numpy())


# (records frame, its cell_stats by variant) per id(frame), while a report is written; None: no sharing
_SHARED: contextvars.ContextVar[dict[int, tuple[pd.DataFrame, dict[str, pd.DataFrame]]] | None] = (
    contextvars.ContextVar("cell_stats_shared", default=None)
)


@contextlib.contextmanager
def shared_choices() -> Iterator[None]:
    """Within the block :func:`cell_stats` computes each (records frame, variant) once and hands out copies:
    a report's tables ask for the same tuned cells a dozen times, and choosing them is most of a report's
    time. The frames passed in must not be changed in place inside the block (the report never does: every
    table builds new frames); the cache holds them, so an id is never reused while it lasts."""
    token = _SHARED.set({} if _SHARED.get() is None else _SHARED.get())
    try:
        yield
    finally:
        _SHARED.reset(token)


def cell_stats(df: pd.DataFrame, variant: str = "tuned") -> pd.DataFrame:
    """Per method × model × task, the chosen point's ``variant`` score (see :data:`VARIANTS`) with
    its hparams, the selection score, how many points competed and the reported split (computed once per
    frame and variant inside :func:`shared_choices`)."""
    shared = _SHARED.get()
    if shared is None:
        return _cell_stats(df, variant)
    frame, by_variant = shared.setdefault(id(df), (df, {}))
    if frame is not df:  # cannot happen while the cache holds ``frame``; never trust a reused id
        return _cell_stats(df, variant)
    if variant not in by_variant:
        by_variant[variant] = _cell_stats(df, variant)
    return by_variant[variant].copy()


def _cell_stats(df: pd.DataFrame, variant: str) -> pd.DataFrame:
    selection = select_points(df)  # once: choosing is most of a tuned table's time
    runs = _tuned_scores(selected_runs(df, selection))
    stats = _stats(runs, score_column(variant), KEYS)
    chosen = selection[KEYS + ["hparams", "selection", "candidates"]]
    stats = stats.merge(chosen, on=KEYS, how="left")
    split = runs[runs["usable"]].groupby(KEYS)["split"].first() if variant == "tuned" else None
    stats["split"] = (
        pd.MultiIndex.from_frame(stats[KEYS]).map(split.to_dict()).to_numpy() if split is not None else "validation"
    )
    stats["same_split"] = stats["split"].eq("validation")
    stats["hparams"] = stats["hparams"].fillna("")
    edges = grid_edges(df, chosen)
    stats["grid_edge"] = [edges.get(tuple(key), "") for key in stats[KEYS].itertuples(index=False)]
    return _sort(stats, KEYS) if len(stats) else stats


def _parse_label(label: str) -> dict[str, float]:
    """The numeric settings of an :func:`hparams_label` (``"lr=0.01, r=4"`` → ``{"lr": 0.01, "r": 4.0}``)."""
    values = {}
    for part in filter(None, str(label).split(", ")):
        name, _, text = part.partition("=")
        try:
            values[name] = float(text)
        except ValueError:
            continue
    return values


def grid_edges(df: pd.DataFrame, chosen: pd.DataFrame) -> dict[tuple, str]:
    """Per cell whose chosen point sits at the low or high end of a numeric setting its grid varied
    (two values or more), ``"lr: lowest of 3"``; a grid that does not bracket its optimum says so."""
    ok = _with_points(df)
    ok = ok[ok["usable"]]
    tried = ok.groupby(KEYS)["hparams"].unique().to_dict()
    edges = {}
    for row in chosen.itertuples(index=False):
        key = tuple(getattr(row, k) for k in KEYS)
        points = [_parse_label(label) for label in tried.get(key, [])]
        mine, notes = _parse_label(row.hparams), []
        for name, value in sorted(mine.items()):
            values = sorted({p[name] for p in points if name in p})
            if len(values) >= 2 and value in (values[0], values[-1]):
                notes.append(f"{name}: {'lowest' if value == values[0] else 'highest'} of {len(values)}")
        if notes:
            edges[key] = "; ".join(notes)
    return edges


def _count_kinds(kinds: pd.Series) -> str:
    """``"1 failed, 2 diverged"``: why runs of a cell are left out."""
    counts = kinds.value_counts()
    return ", ".join(f"{counts[k]} {k}" for k in sorted(counts.index))


def main_averages(stats: pd.DataFrame, rows: tuple[str, ...] = ("method", "model")) -> pd.DataFrame:
    """Per row (method × model, or × hparams): mean over tasks of the per-task means, and how many
    tasks it covers, and ``sign``: the direction its tasks' metrics share (+1 higher is better, -1 lower,
    NaN when they differ: no average is better than another then).

    The average is only given (``average`` not NaN) when the row covers every task that has a
    usable run for that model; a partial average would compare rows over different tasks.
    """
    scored = stats.dropna(subset=["mean"])
    tasks_per_model = scored.groupby("model")["task"].nunique()
    signs = stats["sign"] if "sign" in stats else pd.Series(1.0, index=stats.index)
    shared = lambda values: values.iloc[0] if values.nunique() == 1 else np.nan
    grouped = stats.assign(sign=signs).groupby(list(rows))
    out = grouped.agg(average=("mean", "mean"), tasks=("mean", "count"), sign=("sign", shared)).reset_index()
    out["model_tasks"] = out["model"].map(tasks_per_model).fillna(0).astype(int)
    out.loc[out["tasks"] < out["model_tasks"], "average"] = np.nan
    return out


def cell_marks(row) -> str:
    """The diagnostic marks of a cell (:data:`MARKS`)."""
    marks = [MARKS[name] for name in ("not_converged", "collapsed", "unknown") if int(getattr(row, name, 0) or 0) > 0]
    if getattr(row, "tuned", False) and getattr(row, "split", None) == "validation":
        marks.append(MARKS["same_split"])
    if getattr(row, "tuned", False) and getattr(row, "grid_edge", ""):
        marks.append(MARKS["grid_edge"])
    return "".join(marks)


def _fmt_score(row, best: bool) -> str:
    lost = f"; {row.not_ok_detail}" if row.not_ok_detail else ""
    if row.n == 0:
        return f"- (0 ok{lost})" if row.not_ok_detail else ""
    value = f"**{row.mean * 100:.1f}**" if best else f"{row.mean * 100:.1f}"
    spread = f" ± {row.std * 100:.1f}" if row.n > 1 and not math.isnan(row.std) else ""
    text = f"{value}{spread} (n={row.n}{lost}){cell_marks(row)}"
    if getattr(row, "tuned", False):
        edge = f"; {row.grid_edge}" if getattr(row, "grid_edge", "") else ""
        text += f" [{row.hparams or 'defaults'}{edge}]"
    return text


def _reported_on(stats: pd.DataFrame, task: str) -> str:
    """``"; on test"``: the split a task's tuned scores come from (each cell's, when they differ)."""
    splits = stats.loc[stats["task"] == task, "split"].dropna().unique()
    return f"; on {splits[0]}" if len(splits) == 1 else "; on the split each cell's § mark gives"


def _fmt_average(average: float, tasks: int, model_tasks: int, best: bool) -> str:
    if math.isnan(average):
        return f"n/a ({tasks}/{model_tasks} tasks)" if tasks else "-"
    value = f"**{average * 100:.1f}**" if best else f"{average * 100:.1f}"
    return f"{value} ({tasks} task{'s' if tasks != 1 else ''})"


def _is_best(values: pd.Series, groups: pd.Series) -> pd.Series:
    """True where a value equals the maximum of its group (ties are all marked); pass scores × their
    ``sign`` so that the best of a lower-is-better metric is its minimum."""
    top = values.groupby(groups).transform("max")
    return pd.Series(np.isclose(values, top) & values.notna(), index=values.index)


def main_table(df: pd.DataFrame, variant: str = "final") -> pd.DataFrame:
    """Rows = method × model (× hparams when a sweep varied any), task columns: ``mean ± std (n=k)``
    ×100 with diagnostic marks (:data:`MARKS`); best per column in bold (in the primary metric's direction).

    ``variant="tuned"``: one row per method × model, each cell the chosen hparams' test score (see
    :func:`cell_stats`) followed by the hparams.  The best is marked among the methods of the same
    model.  The Average column is the mean of the per-task means (see :func:`main_averages`).
    """
    stats = main_stats(df, variant)
    if stats.empty:
        return pd.DataFrame(columns=["Method", "Model", "Average"])
    tuned = variant == "tuned"
    rows = ["method", "model"] if tuned or not stats["hparams"].ne("").any() else ["method", "model", "hparams"]
    stats["best"] = _is_best(stats["mean"] * stats["sign"], stats["model"] + "\0" + stats["task"])
    stats["tuned"] = tuned
    stats["cell"] = [_fmt_score(r, r.best) for r in stats.itertuples()]
    metrics = task_metrics(df)
    stats["column"] = [f"{t} ({metrics.get(t, '?')}{_reported_on(stats, t) if tuned else ''})" for t in stats["task"]]
    table = stats.pivot(index=rows, columns="column", values="cell").fillna("")
    table = table[sorted(table.columns)].reset_index()
    averages = main_averages(stats, tuple(rows))
    averages["best"] = _is_best(averages["average"] * averages["sign"], averages["model"])
    table = table.merge(averages, on=rows, how="left")
    table["Average"] = [_fmt_average(r.average, r.tasks, r.model_tasks, r.best) for r in table.itertuples()]
    table = _sort(table, rows).drop(columns=["average", "tasks", "model_tasks", "sign", "best"])
    return table.rename(columns={"method": "Method", "model": "Model", "hparams": "Hparams"})


def tuned_data(df: pd.DataFrame) -> pd.DataFrame:
    """The tuned table's numbers: one row per method × model × task (see :func:`cell_stats`).

    Columns: ``method, model, task``; ``mean``, ``std`` (ddof=1), ``n``: the chosen point's score on the
    reported ``split`` (``test`` where every chosen run has one, else the best-checkpoint ``validation``
    score, ``same_split`` True: selected and reported on one split), primary metric as a fraction;
    ``sign`` (+1 higher is better, -1 lower); ``hparams``, the chosen point's label, with ``selection``,
    its validation score, ``candidates``, the points compared, and ``grid_edge`` (``"lr: lowest of 3"``
    when the choice sits at an end of its grid); ``not_converged``, ``collapsed``, ``unknown``: flag counts
    among the ``n`` runs; ``not_ok``, ``not_ok_detail``: the chosen point's runs left out (``"1 failed"``).
    Written as ``main_tuned_data.csv`` beside ``report.md``.
    """
    return cell_stats(df, "tuned")


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


def _on_the_main_device(df: pd.DataFrame) -> pd.Series:
    """True for the runs on the device most of ``df``'s runs ran on (``provenance.device``): a run checked on
    another device (a grid point added on a CPU to a GPU protocol) counts, but its times are not averaged in."""
    device = df["provenance.device"].fillna("unknown") if "provenance.device" in df else pd.Series("unknown", df.index)
    return device == device.mode().iloc[0] if len(device) else device.astype(bool)


def cost_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per method × model over usable runs: parameter medians (absolute, % of backbone),
    mean/std of throughput, step time, time to 95 % of best and train time, max peak memory.

    Parameter counts are medians because they differ across tasks only by the task head. Times and memory come
    from the runs on the frame's main device only (:func:`_on_the_main_device`); ``runs`` counts every run.
    """
    ok = df[df["usable"]]
    frame = pd.DataFrame({"method": ok["method"], "model": ok["model"]})
    for name in ("backbone", "trainable", "stored", "head"):
        frame[name] = _column(ok, f"params.{name}")
    for name in ("trainable", "stored", "head"):
        frame[f"{name}_pct"] = _percent_of_backbone(ok, name)
    timed = _on_the_main_device(ok)
    for name, source in COST_SOURCES.items():
        frame[name] = _column(ok, source).where(timed)
    frame["peak_memory_bytes"] = _column(ok, "throughput.peak_memory_bytes").where(timed)
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
        rows.append(
            {
                "Method": r["method"],
                "Model": r["model"],
                "Runs": int(r["runs"]),
                "Trainable params": _fmt_params(r, "trainable"),
                "Stored params": _fmt_params(r, "stored"),
                "Head params": _fmt_params(r, "head"),
                "Train tokens/s": _fmt_mean_std(r["tokens_per_s_mean"], r["tokens_per_s_std"], digits=0),
                "Step time (ms)": _fmt_mean_std(r["step_time_s_mean"], r["step_time_s_std"], scale=1000),
                "Peak memory (MiB)": "n/a" if math.isnan(memory) else f"{memory / 2**20:,.0f}",
                "Time to 95% of best (s)": _fmt_mean_std(r["time_to_95_s_mean"], r["time_to_95_s_std"]),
                "Train time (s)": _fmt_mean_std(r["train_time_s_mean"], r["train_time_s_std"]),
            }
        )
    columns = [
        "Method",
        "Model",
        "Runs",
        "Trainable params",
        "Stored params",
        "Head params",
        "Train tokens/s",
        "Step time (ms)",
        "Peak memory (MiB)",
        "Time to 95% of best (s)",
        "Train time (s)",
    ]
    return pd.DataFrame(rows, columns=columns)


def failures_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every run left out of the averages: failed, diverged, unreadable, or ok without a score."""
    bad = df[~df["usable"]]
    table = pd.DataFrame(
        {
            "Status": bad["status"].where(bad["status"] != "ok", "invalid"),
            "Method": bad["method"],
            "Model": bad["model"],
            "Task": bad["task"],
            "Seed": bad["seed"].map(lambda s: "" if pd.isna(s) else str(int(s))),
            "Reason": bad["problem"].map(lambda p: " ".join(str(p).split())),  # one line per run
            "Record": bad["path"],
        }
    )
    return table.sort_values(["Status", "Record"]).reset_index(drop=True)


def _flags(run: pd.Series) -> str:
    """Why a usable run is flagged, one line."""
    parts = []
    if run["converged"] is None:
        parts.append(f"{MARKS['unknown']} no diagnostics in the record")
    elif not run["converged"]:
        parts.append(f"{MARKS['not_converged']} not converged ({run.get('diagnostics.converged_reason') or '?'})")
    if run["collapsed"] is True:
        parts.append(f"{MARKS['collapsed']} collapsed: every validation prediction is the same")
    return "; ".join(parts)


def _fmt_number(value: Any, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else ""


def flagged_table(df: pd.DataFrame) -> pd.DataFrame:
    """Usable runs whose diagnostics raise a doubt (not converged, collapsed, none recorded), with the
    prefix health measured at the end of training (attention-prefix methods)."""
    ok = _with_points(df[df["usable"]])
    flagged = ok[ok["converged"].ne(True) | ok["collapsed"].eq(True)]
    table = pd.DataFrame(
        {
            "Flags": [_flags(run) for _, run in flagged.iterrows()],
            "Method": flagged["method"],
            "Model": flagged["model"],
            "Task": flagged["task"],
            "Hparams": flagged["hparams"],
            "Seed": flagged["seed"].map(lambda s: str(int(s))),
            "Prefix key/real key norm": [
                _fmt_number(v)
                for v in flagged.get("diagnostics.prefix_key_norm_ratio", pd.Series(None, index=flagged.index))
            ],
            "Prefix attention share": [
                _fmt_number(v)
                for v in flagged.get("diagnostics.prefix_attention_share", pd.Series(None, index=flagged.index))
            ],
            "Record": flagged["path"],
        },
        columns=[
            "Flags",
            "Method",
            "Model",
            "Task",
            "Hparams",
            "Seed",
            "Prefix key/real key norm",
            "Prefix attention share",
            "Record",
        ],
    )
    return table.sort_values("Record").reset_index(drop=True) if len(table) else table


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
    return _sort(counts.rename(columns={"Method": "method", "Model": "model"}), ["method", "model"]).rename(
        columns={"method": "Method", "model": "Model"}
    )
