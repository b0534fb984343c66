"""Tables and figures from a folder of run records (``python -m bench.report RUNS_DIR``).

Public API::

    df = load_runs(runs_dir)               # one tidy row per result.json, failed/unreadable included
    main_table(df, variant="tuned")        # hparams chosen on validation, test score (mean ± std, n)
    main_table(df, variant="final"|"best") # every sweep point: method × model (× hparams) rows, task columns
    df.filter(like="hp.")                  # typed hyperparameter columns, hp.<key> (hp.trainer.lr: float64)
    history_frame(df, metrics="all")       # validation history, long form: run × pass × metric (join on path)
    tuned_data(df)                         # the tuned table's numbers, one row per method × model × task
    cell_stats(df, variant) / select_points(df)   # the numbers behind the tuned table
    flagged_table(df)                      # runs not converged, collapsed or without diagnostics
    cost_table(df)                         # parameters, throughput, memory, time to 95 % of best
    comparison_table(df)                   # declarations beside measured quality / volume
    claim_check_table(df)                  # prompt < prefix < P-Tuning v2 ≈ full FT, per task
    claims_table(df)                       # every statement of the comparison, measured, one verdict each
    failures_table(df)                     # every run left out of the averages
    make_figures(df, out_dir)              # PNG + PDF figures, returns their paths
    write_report(runs_dir, out_dir)        # all of the above on disk, returns ReportPaths
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.report.claims import STATEMENTS, claims_data, claims_table
from bench.report.comparison import (
    claim_check_data,
    claim_check_table,
    comparison_data,
    comparison_table,
    quality_label,
    relative_scores,
    volume_label,
)
from bench.report.figures import FIGURE_NAMES, make_figures, pareto_front
from bench.report.loading import (
    ReportError,
    history_frame,
    hparam_columns,
    load_records,
    load_runs,
    time_to_fraction,
    unreadable,
)
from bench.report.render import to_latex, to_markdown, write_table
from bench.report.style import method_color
from bench.report.tables import (
    LEGEND,
    cell_stats,
    cost_data,
    cost_table,
    failures_table,
    flagged_table,
    main_stats,
    main_table,
    run_counts,
    select_points,
    shared_choices,
    tuned_data,
)

__all__ = [
    "FIGURE_NAMES",
    "REGENERATE_PREFIX",
    "LEGEND",
    "STATEMENTS",
    "ReportError",
    "ReportPaths",
    "cell_stats",
    "claim_check_data",
    "claim_check_table",
    "claims_data",
    "claims_table",
    "comparison_data",
    "comparison_table",
    "cost_data",
    "cost_table",
    "default_out_dir",
    "failures_table",
    "flagged_table",
    "hparam_columns",
    "history_frame",
    "load_records",
    "load_runs",
    "main_stats",
    "main_table",
    "make_figures",
    "regenerate_line",
    "method_color",
    "pareto_front",
    "quality_by_task",
    "quality_label",
    "relative_scores",
    "run_counts",
    "select_points",
    "time_to_fraction",
    "to_latex",
    "to_markdown",
    "tuned_data",
    "volume_label",
    "write_report",
]


@dataclass
class ReportPaths:
    """Where :func:`write_report` put everything."""

    out_dir: Path
    report: Path  # report.md: every table and figure on one page
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)  # name -> {csv, md, tex[, data]}
    figures: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one-line errors of malformed records
    records: int = 0


def default_out_dir(runs_dir: str | Path, name: str | None = None) -> Path:
    """``results/reports/<name or basename of runs_dir>/`` (relative to the working directory)."""
    return Path("results") / "reports" / (name or Path(runs_dir).resolve().name)


def quality_by_task(df: pd.DataFrame, variant: str = "tuned") -> pd.DataFrame:
    """Display form of :func:`relative_scores`: each method's score, r, rank and label per task."""
    data = relative_scores(df, variant)
    return pd.DataFrame(
        {
            "Method": data["method"],
            "Model": data["model"],
            "Task": data["task"],
            "Score": [f"{m * 100:.1f}" for m in data["mean"]],
            "r": ["n/a" if pd.isna(r) else f"{r:.2f}" for r in data["r"]],
            "Rank": [f"{int(k)}/{int(n)}" for k, n in zip(data["rank"], data["n_methods"])],
            "Quality": data["label"],
        }
    )


def _tables(df: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str, pd.DataFrame | None]]:
    """name -> (display table, caption, numbers) for every table of the report."""
    return {
        "main_tuned": (
            main_table(df, "tuned"),
            "Tuned: per method × model × task the hparams with the best "
            "validation score (best checkpoint; points compared on the seeds they all have), "
            "reported on a split nothing was selected on where there is one (the column says which: "
            "test, else the held-out part of the validation file) (primary metric "
            f"×100, mean ± std over seeds; chosen hparams in brackets; best per column in bold). {LEGEND}",
            tuned_data(df),
        ),
        "main_final": (
            main_table(df, "final"),
            "Every sweep point, final validation score (primary metric ×100, "
            f"mean ± std over seeds; best per column in bold). {LEGEND}",
            main_stats(df, "final"),
        ),
        "main_best": (
            main_table(df, "best"),
            "Every sweep point, best-epoch validation score as P-Tuning v2 reports "
            "it (selected on the reported split: optimistic; primary metric ×100, mean ± std over "
            f"seeds). {LEGEND}",
            main_stats(df, "best"),
        ),
        "cost": (cost_table(df), "Cost per method and model (usable runs)", cost_data(df)),
        "comparison": (
            comparison_table(df),
            "Comparison: declared mechanism vs measured quality (tuned scores) and parameter volume",
            comparison_data(df),
        ),
        "claim_check": (
            claim_check_table(df),
            "Claim check per task on tuned scores: prompt < prefix < P-Tuning "
            "v2 ≈ full fine-tuning (Δ in points ± its standard error; inconclusive when a side has "
            "< 2 seeds or unconverged runs, or |Δ| ≤ 2 standard errors at < 3 seeds; within noise when "
            "|Δ| ≤ 2 standard errors with converged runs and ≥ 3 seeds a side)",
            claim_check_data(df),
        ),
        "claims": (
            claims_table(df),
            "Claims: every statement of the comparison, its measurement and a verdict (holds / violated / "
            "within noise / inconclusive with the reason) under the claim check's rules; Δ in points ± its "
            "standard error, n = seeds a side (docs/CLAIMS.md)",
            claims_data(df),
        ),
        "quality_by_task": (quality_by_task(df), "Quality per task relative to head-only and full fine-tuning", None),
        "run_counts": (run_counts(df), "Runs per method and model by outcome", None),
        "failures": (failures_table(df), "Runs left out of every average", None),
        "flagged": (
            flagged_table(df),
            "Runs in the averages whose diagnostics raise a doubt (rules: README, Diagnostics)",
            None,
        ),
    }


REGENERATE_PREFIX = "Regenerate: `python -m bench.report "


def regenerate_line(runs_dir: str | Path, out_dir: str | Path) -> str:
    """The command that rewrote a report, as its page states it (paths as the user gave them)."""
    return f"{REGENERATE_PREFIX}{Path(runs_dir).as_posix()} --out {Path(out_dir).as_posix()}`"


def _report_page(tables: dict, figures: list[Path], out_dir: Path, bad: list[str], runs_dir: str | Path) -> str:
    """report.md: how to regenerate it, the tables in order, then the figures (PNG links relative to the page)."""
    parts = ["# Report", "", regenerate_line(runs_dir, out_dir), ""]
    if bad:
        parts += ["**Unreadable records (not in any table):**", "", *[f"- `{e}`" for e in bad], ""]
    for table, caption, _ in tables.values():
        parts += [f"## {caption}", "", to_markdown(table) if len(table) else "_(none)_", ""]
    parts += ["## Figures", ""]
    parts += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in figures if p.suffix == ".png"]
    return "\n".join(parts) + "\n"


def write_report(
    runs_dir: str | Path, out_dir: str | Path | None = None, name: str | None = None, figures: bool = True
) -> ReportPaths:
    """Read every record under ``runs_dir`` and write tables (CSV, Markdown, LaTeX), figures
    (PNG, PDF) and ``report.md`` into ``out_dir`` (default :func:`default_out_dir`).
    ``figures=False`` leaves the figures folder as it is (report.md still links every figure).

    Raises :class:`ReportError` when ``runs_dir`` is missing or empty; malformed records are
    listed in ``ReportPaths.unreadable`` and in the failures table, the others still reported.
    """
    df = load_runs(runs_dir)
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs_dir, name)
    with shared_choices():
        tables = _tables(df)
    paths = ReportPaths(out_dir=out, report=out / "report.md", unreadable=unreadable(df), records=len(df))
    for table_name, (table, caption, data) in tables.items():
        # ``sign`` (which way the metric is better) is the metric registry's, not a number the table measured
        data = data.drop(columns=["sign"], errors="ignore") if data is not None else None
        paths.tables[table_name] = write_table(table, out, table_name, caption, data)
    paths.figures = make_figures(df, out / "figures", draw=figures)
    paths.report.write_text(_report_page(tables, paths.figures, out, paths.unreadable, runs_dir), encoding="utf-8")
    return paths
