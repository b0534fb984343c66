"""The one-screen summary of a written report (``python -m bench.report RUNS --summary``, ``make demo``).

The tuned main table, the comparison and the claim check in full, then one line on convergence (and one per run that did
not converge, up to :data:`UNCONVERGED_SHOWN`), the runs left out, and one line per artefact that is
written but not printed (the full report, the claims table, the cost, the paper-vs-measured table and
the paper claim, the figures).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report import ReportPaths
from bench.report.tables import MARKS

UNCONVERGED_SHOWN = 5
"""Runs listed by name when they did not converge; more are counted and left to flagged.md."""

PRINTED = (
    ("Main table, tuned (hparams chosen on validation)", "main_tuned"),
    ("Comparison", "comparison"),
    ("Claim check", "claim_check"),
)
"""The tables the summary prints whole, in this order."""

POINTED = (("Claims", "claims"), ("Cost", "cost"), ("Flagged runs", "flagged"))
"""Tables written beside the report that the summary names by path only."""


def _table(title: str, md_path: Path) -> list[str]:
    """A table's Markdown without its caption, under a one-line title naming its file."""
    body = md_path.read_text(encoding="utf-8").split("\n\n", 1)[-1].strip("\n")
    return [f"== {title} ({md_path}) ==", *body.splitlines()]


def convergence_lines(df: pd.DataFrame, flagged_md: Path) -> list[str]:
    """One line counting the usable runs that converged and how they stopped, then the runs that did not."""
    usable = df[df["usable"]]
    stops = usable.get("diagnostics.stop_reason", pd.Series(None, index=usable.index)).value_counts()
    how = ", ".join(f"{int(n)} at {reason}" for reason, n in stops.items())
    not_converged = usable[usable["converged"].ne(True)]
    lines = [
        f"Convergence: {len(usable) - len(not_converged)}/{len(usable)} usable run(s) converged"
        + (f" (stopped: {how})" if how else "")
    ]
    for _, run in not_converged.head(UNCONVERGED_SHOWN).iterrows():
        reason = run.get("diagnostics.converged_reason")
        reason = reason if isinstance(reason, str) else "no diagnostics in the record"
        where = f"{run['method']} {run['model']} {run['task']} seed {int(run['seed'])}"
        lines.append(f"  {MARKS['not_converged']} {where}: {reason}")
    if len(not_converged) > UNCONVERGED_SHOWN:
        lines.append(f"  ... {len(not_converged) - UNCONVERGED_SHOWN} more in {flagged_md}")
    return lines


def summary_lines(df: pd.DataFrame, paths: ReportPaths, left_out: str) -> list[str]:
    """The summary, one string a line: printed tables, convergence, runs left out, where everything else is."""
    lines: list[str] = []
    for title, name in PRINTED:
        lines += [*_table(title, paths.tables[name]["md"]), ""]
    lines += convergence_lines(df, paths.tables["flagged"]["md"])
    lines.append(left_out.strip("\n"))
    lines.append(f"Marks in the tables ({''.join(MARKS.values())}): the caption of {paths.tables['main_tuned']['md']}")
    lines.append(f"Full report: {paths.report}")
    lines += [f"{title}: {paths.tables[name]['md']}" for title, name in POINTED]
    if "paper_vs_measured" in paths.tables:
        claim = paths.tables.get("paper_claim")
        also = f"; paper claim: {claim['md']}" if claim else ""  # one line: the summary must fit a screen
        lines.append(f"Paper vs measured: {paths.tables['paper_vs_measured']['md']}{also}")
    if paths.figures:
        lines.append(f"Figures: {len(paths.figures)} file(s) in {paths.figures[0].parent}")
    return lines
