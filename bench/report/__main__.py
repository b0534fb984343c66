"""``python -m bench.report RUNS_DIR [--out DIR] [--name NAME] [--summary]``.

Writes the whole report either way. Prints the tuned main table, the tables of every sweep point, the
cost table, the runs left out and the flagged runs (if any), the comparison table with the per-task
claim check, the claims table, the paper-vs-measured table, the paper claim (the published numbers' own
answer to the claim, beside ours) and, last, the figure paths; with ``--summary``, one screen
instead (bench/report/summary.py).  Exit code 2 with a one-line error when RUNS_DIR is missing or holds
no record, and also when a record is malformed: that record is named on stderr and listed as
unreadable, while every other record is still reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="folder searched for **/result.json")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/reports/<NAME>/)")
    parser.add_argument("--name", default=None, help="report name (default: basename of RUNS_DIR)")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print one screen: tuned table, claim check, convergence, where the rest is (make demo)",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="tables and report.md only; figures already in OUT are left as they are (about twice as fast)",
    )
    return parser


def _section(title: str, md_path: Path) -> str:
    return f"\n== {title} ({md_path}) ==\n" + md_path.read_text(encoding="utf-8").split("\n\n", 1)[-1]


def _left_out(paths) -> str:
    """One line counting the runs that no average contains."""
    counts = pd.read_csv(paths.tables["run_counts"]["csv"])
    bad = {c: int(counts[c].sum()) for c in ("failed", "diverged", "invalid", "unreadable") if c in counts}
    total = sum(bad.values())
    detail = ", ".join(f"{n} {c}" for c, n in bad.items() if n)
    where = paths.tables["failures"]["md"]
    return f"\nRuns left out of averages: {total}" + (f" ({detail}; listed in {where})" if total else "")


def _paper_vs_measured(runs_dir: Path, paths) -> str:
    """Write the paper-vs-measured table and the paper claim beside the others (and into report.md); their
    section text."""
    from bench.report import load_records, load_runs
    from bench.report.paper import write_paper_vs_measured
    from bench.report.paper_claim import write_paper_claim

    written = write_paper_vs_measured(load_records(runs_dir), paths.out_dir, paths.report)
    paths.tables["paper_vs_measured"] = written
    claimed = write_paper_claim(load_runs(runs_dir), paths.out_dir, paths.report)
    paths.tables["paper_claim"] = claimed
    return (_section("Paper vs measured", written["md"]) + _section("Paper claim", claimed["md"])).rstrip("\n")


def _print_full(paths, paper: str) -> None:
    """Every table (the failures and flagged ones when not empty), then the figure paths."""
    sections = [
        ("Main table, tuned (hparams chosen on validation)", "main_tuned"),
        ("Every sweep point, final score", "main_final"),
        ("Every sweep point, best-epoch score", "main_best"),
        ("Cost", "cost"),
        ("Runs left out of every average", "failures"),
        ("Flagged runs (diagnostics)", "flagged"),
        ("Comparison", "comparison"),
        ("Claim check", "claim_check"),
        ("Claims", "claims"),
    ]  # comparison, claim check and claims last: the tables end on them
    for title, name in sections:
        if name not in ("failures", "flagged") or pd.read_csv(paths.tables[name]["csv"]).shape[0]:
            print(_section(title, paths.tables[name]["md"]), end="")
    print(paper)
    print(_left_out(paths))
    print(f"Report: {paths.report}")
    print("Figures:" if paths.figures else "Figures: none drawn (--no-figures)")
    for path in paths.figures:
        print(f"  {path}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = _parser().parse_args(argv)
    from bench.report import ReportError, write_report  # after argparse so --help stays fast

    try:
        paths = write_report(args.runs_dir, args.out, args.name, figures=not args.no_figures)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.no_figures:  # report.md still links them (a committed page stays the same); none was drawn now
        paths.figures = []
    print(f"{paths.records} record(s) from {args.runs_dir} -> {paths.out_dir}")
    from bench.report.tables import shared_choices

    with shared_choices():  # the paper claim asks for the same tuned cells twice
        paper = _paper_vs_measured(args.runs_dir, paths)
    if args.summary:
        from bench.report import load_runs
        from bench.report.summary import summary_lines

        print("\n".join(summary_lines(load_runs(args.runs_dir), paths, _left_out(paths))))
    else:
        _print_full(paths, paper)
    for error in paths.unreadable:
        print(f"error: unreadable record {error}", file=sys.stderr)
    return 2 if paths.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
