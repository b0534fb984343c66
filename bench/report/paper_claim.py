"""The paper claim: what the published numbers alone say about the claim, beside what our runs say.

The claim ("prompt < prefix < P-Tuning v2 ≈ full fine-tuning", :func:`bench.report.comparison.claim`) is
checked on the rows of ``bench/reference/papers.csv``: per paper × model × task × split, on the task's
primary metric, every pair of methods the chain orders (:func:`~bench.report.comparison.claim_pairs`:
the direct links and the ones they imply, such as prefix < full fine-tuning) for which the paper
reports both numbers.  The verdict is the claim check's own rule
(:func:`~bench.report.comparison.relation_verdict`): a published number carries no noise estimate, so
its standard error is 0 — any gap decides "<", and "≈" holds within
:data:`~bench.report.comparison.QUALITY_NEAR_FULL_POINTS` of full fine-tuning (the papers report no
head-only floor, so the relative-position rule cannot apply).  Beside each pair: our verdict for the
same pair on the same task, per model, from the tuned runs (with the noise rule).  A link of the chain
that no paper row covers gets a line that says so.

    paper_claim_data(df)             # one row per paper group × pair (+ uncovered links)
    paper_claim_table(df)            # display form
    write_paper_claim(df, out_dir)   # paper_claim.{csv,md,tex} (+ _data.csv), appended to report.md
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.reference import load_reference, task_primary_metrics
from bench.report.comparison import (
    NEAR_FULL,
    NOISE_MIN_SEEDS,
    QUALITY_NEAR_FULL_POINTS,
    WITHIN_NOISE,
    _claim_cell,
    _verdict,
    claim,
    claim_pairs,
    quality_label,
    references,
    relation_name,
    relation_verdict,
    relative_scores,
)
from bench.report.loading import direction_sign
from bench.report.render import append_section, write_table

CAPTION = (
    "Paper claim: the published numbers alone on each pair of methods the claim orders (task's primary "
    "metric; Δ = right − left, points), beside our verdict for the same pair and task"
)
GROUP = ["paper", "model", "hub_id", "task", "split", "metric"]
COLUMNS = ["paper", "model", "task", "split", "metric", "relation", "left", "right", "diff", "verdict", "reason"]


def published_verdict(op: str, left: float, right: float, metric: str) -> tuple[float, str, str]:
    """(Δ = right − left in points, in the metric's direction; verdict; reason) of two published numbers."""
    sign = direction_sign(metric)
    diff = (right - left) * sign
    if diff == 0:
        return diff, WITHIN_NOISE, "equal as published"
    near = op == "≈" and quality_label(left / 100, right / 100, math.nan, sign) == NEAR_FULL
    verdict, reason = relation_verdict(op, diff / 100, 0.0, NOISE_MIN_SEEDS, [], near)
    if op == "≈" and verdict == "violated":
        reason = f"more than {QUALITY_NEAR_FULL_POINTS:g} point below {references()[0]}"
    return diff, verdict, reason


def _paper_rows(reference: pd.DataFrame) -> list[dict]:
    """One row per paper group × claim pair with both methods published, on the task's primary metric."""
    primary = task_primary_metrics()
    rows = []
    on_primary = reference[[primary.get(t) == m for t, m in zip(reference["task"], reference["metric"])]]
    for key, group in on_primary.groupby(GROUP, sort=False):
        group_key = dict(zip(GROUP, key))
        by_method = group.set_index("method")
        for left, op, right in claim_pairs():
            if left not in by_method.index or right not in by_method.index:
                continue
            a, b = by_method.loc[left], by_method.loc[right]
            diff, verdict, reason = published_verdict(op, a["value"], b["value"], group_key["metric"])
            rows.append(
                {
                    **group_key,
                    "relation": relation_name(left, op, right),
                    "left": f"{left} {a['value_text']}",
                    "right": f"{right} {b['value_text']}",
                    "diff": diff,
                    "verdict": verdict,
                    "reason": reason,
                    "measured_by": "; ".join(
                        f"{m}: {r['measured_by']}" for m, r in ((left, a), (right, b)) if r["measured_by"] != "primary"
                    ),
                }
            )
    return rows


def _uncovered(rows: list[dict]) -> list[dict]:
    """A line per direct link of the claim that no published pair covers."""
    covered = {r["relation"] for r in rows}
    return [
        {
            "relation": relation_name(*link),
            "verdict": "n/a (no paper row reports both methods)",
            "reason": "see bench/reference/README.md, 'Left out'",
        }
        for link in claim()
        if relation_name(*link) not in covered
    ]


def ours_for(scores: pd.DataFrame, task: str, relation: tuple[str, str, str]) -> str:
    """Our verdict for one pair on one task, per model with runs of both methods (the claim check's rule),
    naming the split our tuned scores are on."""
    left, op, right = relation
    rows = scores[scores["task"] == task]
    parts = []
    for model, group in rows.groupby("model"):
        by_method = {r["method"]: r for _, r in group.iterrows()}
        if left in by_method and right in by_method:
            check = _verdict(op, by_method[left], by_method[right], left, right, by_method.get(references()[1]))
            cell = _claim_cell(pd.Series({**check, "relation": relation_name(*relation)}))
            parts.append(f"{model} (on {by_method[right]['split']}): {cell}")
    return "; ".join(parts) or f"no run of both on {task}"


def paper_claim_data(df: pd.DataFrame | None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per paper group × claim pair with both methods published (the published numbers, Δ, the
    verdict) and ``ours`` (our verdict per model on the same task, "" without runs), then one line per link
    of the claim that no paper row covers."""
    reference = load_reference() if reference is None else reference
    rows = _paper_rows(reference)
    scores = relative_scores(df, "tuned") if df is not None and df["usable"].any() else None
    pairs = {relation_name(*p): p for p in claim_pairs()}
    for row in rows:
        row["ours"] = ours_for(scores, row["task"], pairs[row["relation"]]) if scores is not None else ""
    rows += [{**r, "ours": ""} for r in _uncovered(rows)]
    return pd.DataFrame(rows, columns=[*COLUMNS, "measured_by", "ours"])


def _answer(relation: str, diff: float, verdict: str, reason: str) -> str:
    """The paper's answer as the claim check words its cells (``violated (Δ -1.5)``)."""
    if str(verdict).startswith("n/a"):
        return f"{verdict}; {reason}" if reason else verdict
    row = {"relation": relation, "diff": diff / 100, "se": 0.0, "verdict": verdict, "reason": reason}
    return _claim_cell(pd.Series(row))


def paper_claim_table(df: pd.DataFrame | None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Display form: Paper | Model | Task | Split | Relation | Published | Paper's answer | Ours."""
    data = paper_claim_data(df, reference)
    answers = [_answer(*values) for values in zip(data["relation"], data["diff"], data["verdict"], data["reason"])]
    published = [
        "" if pd.isna(left) else f"{left} vs {right}" + (f" ({who})" if who else "")
        for left, right, who in zip(data["left"], data["right"], data["measured_by"].fillna(""))
    ]
    return pd.DataFrame(
        {
            "Paper": data["paper"].fillna("–"),
            "Model": data["model"].fillna(""),
            "Task": data["task"].fillna(""),
            "Split": data["split"].fillna(""),
            "Metric": data["metric"].fillna(""),
            "Relation": data["relation"],
            "Published": published,
            "Paper's answer": answers,
            "Ours (per model, same task)": data["ours"],
        }
    )


def write_paper_claim(df: pd.DataFrame | None, out_dir: Path, report_page: Path | None = None) -> dict[str, Path]:
    """``paper_claim.{csv,md,tex}`` (+ ``_data.csv``) in ``out_dir``; appended to ``report_page``."""
    table = paper_claim_table(df)
    paths = write_table(table, Path(out_dir), "paper_claim", CAPTION, paper_claim_data(df))
    append_section(report_page, CAPTION, table)
    return paths
