"""The claims table: every statement of the method comparison, the measurement behind it and a verdict.

The comparison our users bring states, besides the ordering "prompt < prefix < P-Tuning v2 ≈ full
fine-tuning", what each method acts on, its parameter volume and where it works well.  Each statement
is one entry of :data:`STATEMENTS` (the ordering's come from :func:`bench.report.comparison.claim`);
its ``check`` names the measurement (a key of :data:`CHECKS`).  Every verdict that compares scores uses
the claim check's rule (:func:`bench.report.comparison.noise_verdict`: converged runs, ≥ 2 seeds a side,
|Δ| against 2 standard errors, a tie "within noise" only at ≥ 3 seeds), so one statement never passes on
evidence another would call inconclusive.  docs/CLAIMS.md gives each measurement's reasoning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bench.report.comparison import (
    CLAIM_NOISE_SE,
    INCONCLUSIVE,
    VOLUME_AXIS,
    WITHIN_NOISE,
    _difference,
    _doubts,
    _verdict,
    claim,
    noise_verdict,
    references,
    relation_name,
    relative_scores,
    volume_label,
)
from bench.report.loading import direction_sign
from bench.report.tables import (
    KEYS,
    _stats,
    _tuned_scores,
    cost_data,
    fmt_count,
    fmt_percent,
    selected_runs,
    task_metrics,
)
from bench.tasks.base import HELDOUT
from bench.transfer import transfer_score

CLAIM = claim()
FULL, HEAD = references()
PROMPT, PREFIX, PT2 = (left for left, _, _ in CLAIM)  # the chain's order: prompt < prefix < P-Tuning v2 ≈ full
FEW_SHOT_MAX_TRAIN = 64
"""A task counts as few-shot when its runs trained on at most this many examples (``metrics.data.train``):
FewGLUE's 32, or k_shot ≤ 16 per class of a 3–4-class task."""
SLIGHT_VOLUME_LABELS = ("tiny", "small")
""""Slightly more parameters" holds while the larger method stays within these volume labels (< 1 % of
the backbone, :data:`bench.report.comparison.VOLUME_SMALL_PCT`)."""
HOLDS, VIOLATED = "holds", "violated"


@dataclass(frozen=True)
class Statement:
    """One statement of the comparison: whose, as worded, how it is measured (a key of :data:`CHECKS`)
    and that check's arguments."""

    method: str
    text: str
    check: str
    args: tuple = ()


def _ordering() -> tuple[Statement, ...]:
    """The ordering's relations, one statement each, from the claim check's own declaration."""
    return tuple(
        Statement(left, relation_name(left, op, right), "ordering", (left, op, right)) for left, op, right in CLAIM
    )


STATEMENTS: tuple[Statement, ...] = (
    Statement(PROMPT, "acts on the input (virtual tokens)", "mechanism", (("input_tokens", True),)),
    Statement(
        PROMPT,
        "does not act on attention directly",
        "mechanism",
        (("attention_prefix", False), ("attention_weights", False), ("trains_backbone", False)),
    ),
    Statement(PROMPT, "uses no MLP", "mechanism", (("reparameterized", False),)),
    Statement(PROMPT, "fine on simple tasks (≈ full FT on the easiest task)", "easy_task"),
    Statement(PROMPT, "low quality on complex tasks (gap to full FT grows with difficulty)", "hard_task"),
    Statement(PROMPT, "depends on the exact wording of the input (drops more than full FT)", "wording"),
    Statement(PREFIX, "acts on attention directly (K/V prefixes)", "mechanism", (("attention_prefix", True),)),
    Statement(
        PREFIX, "does not touch the input embedding", "mechanism", (("input_tokens", False), ("trains_backbone", False))
    ),
    Statement(PREFIX, "uses an MLP (reparameterization)", "mechanism", (("reparameterized", True),)),
    Statement(PREFIX, "works well on generation (≈ full FT)", "task_kind", ("generation",)),
    Statement(
        PT2, "acts on the input and on attention", "mechanism", (("input_tokens", True), ("attention_prefix", True))
    ),
    Statement(PT2, "uses an MLP (reparameterization)", "mechanism", (("reparameterized", True),)),
    Statement(PT2, "slightly more parameters than prompt and prefix tuning", "volume", (PROMPT, PREFIX)),
    Statement(PT2, "works on long inputs (drop short→long no larger than full FT's)", "long_inputs"),
    Statement(PT2, "works in few-shot settings (≈ full FT)", "few_shot"),
    Statement(PT2, "works in zero-shot settings (transfer to an unseen task ≈ full FT)", "transfer"),
    *_ordering(),
)
"""Every statement of the comparison, in the order the claims table lists them."""


@dataclass
class Context:
    """What the checks read, computed once per report."""

    df: pd.DataFrame
    scores: pd.DataFrame  # relative_scores: per method × model × task

    def row(self, method: str, model: str, task: str) -> pd.Series | None:
        rows = self.scores[(self.scores["method"] == method) & (self.scores["model"] == model)]
        rows = rows[rows["task"] == task]
        return rows.iloc[0] if len(rows) else None

    def tasks(self, model: str) -> list[str]:
        return sorted(self.scores.loc[self.scores["model"] == model, "task"].unique())


Result = tuple[str, str, str, str]
"""(measurement, evidence, verdict, reason) of one statement on one model."""


def _task_evidence(task: str, check: dict, n: tuple[int, int] | None = None) -> str:
    if str(check["verdict"]).startswith("n/a"):
        return f"{task}: {check['verdict']}"
    seeds = f", n {n[0]}/{n[1]}" if n else ""
    return f"{task}: Δ {check['diff'] * 100:+.1f} ± {check['se'] * 100:.1f}{seeds} → {check['verdict']}"


def over_tasks(checks: dict[str, dict]) -> tuple[str, str]:
    """(verdict, reason) of a statement checked task by task: violated on any task beats inconclusive on
    any, which beats within noise on any; holds when it holds on every task with runs of both sides."""
    decided = {task: c for task, c in checks.items() if not str(c["verdict"]).startswith("n/a")}
    if not decided:
        return INCONCLUSIVE, "no task has runs of both sides"
    for verdict in (VIOLATED, INCONCLUSIVE, WITHIN_NOISE):
        tasks = sorted(t for t, c in decided.items() if c["verdict"] == verdict)
        if tasks:
            why = [f"{t}: {decided[t]['reason']}" for t in tasks if decided[t]["reason"]]
            return verdict, f"on {', '.join(tasks)} of {len(decided)} task(s)" + (f" — {'; '.join(why)}" if why else "")
    return HOLDS, f"holds on all {len(decided)} task(s)"


def _pair_checks(ctx: Context, model: str, tasks: list[str], left: str, op: str, right: str) -> dict[str, dict]:
    """``left op right`` per task (the claim check's :func:`_verdict`), with the seed counts."""
    checks = {}
    for task in tasks:
        a, b = ctx.row(left, model, task), ctx.row(right, model, task)
        check = _verdict(op, a, b, left, right, ctx.row(HEAD, model, task))
        check["n"] = (int(a["n"]), int(b["n"])) if a is not None and b is not None else None
        checks[task] = check
    return checks


def _relation_result(ctx: Context, model: str, tasks: list[str], relation: tuple, scope: str) -> Result:
    left, op, right = relation
    checks = _pair_checks(ctx, model, tasks, left, op, right)
    verdict, reason = over_tasks(checks)
    if not tasks:
        verdict, reason = INCONCLUSIVE, f"no {scope} task in these records"
    evidence = "; ".join(_task_evidence(t, c, c.get("n")) for t, c in checks.items()) or "-"
    what = "gap" if op == "≈" else "Δ"
    return (
        f"{relation_name(left, op, right)} on {scope} tasks ({what} = {right} − {left}, points)",
        evidence,
        verdict,
        reason,
    )


def _runs(ctx: Context, method: str, model: str) -> pd.DataFrame:
    df = ctx.df
    return df[df["usable"] & (df["method"] == method) & (df["model"] == model)]


def _prefix_share(runs: pd.DataFrame) -> str:
    """The measured attention mass real queries put on the prefix (diagnostics), as evidence."""
    if "diagnostics.prefix_attention_share" not in runs:
        return ""
    shares = pd.to_numeric(runs["diagnostics.prefix_attention_share"], errors="coerce").dropna()
    if shares.empty:
        return ""
    share = shares.mean() * 100
    return f"; measured: real queries put {share:.1f} % of their attention on the prefix ({len(shares)} runs)"


def check_mechanism(ctx: Context, statement: Statement, model: str) -> Result:
    """What a method acts on, as its runs recorded it (``declarations.*``); the prefix's measured
    attention share is shown beside it, and a share of 0 contradicts "acts on attention"."""
    runs = _runs(ctx, statement.method, model)
    measurement = "declarations the runs recorded: " + ", ".join(f"{flag}={value}" for flag, value in statement.args)
    if runs.empty:
        return measurement, "-", INCONCLUSIVE, f"no usable {statement.method} runs"
    parts, against = [], []
    for flag, wanted in statement.args:
        values = runs.get(f"declarations.{flag}", pd.Series(dtype=object)).dropna()
        if values.empty:
            return measurement, "-", INCONCLUSIVE, f"no run recorded declarations.{flag}"
        agree = int((values.astype(bool) == wanted).sum())
        parts.append(f"{flag}={wanted} in {agree}/{len(values)} runs")
        against += [f"{len(values) - agree} run(s) record {flag}={not wanted}"] if agree < len(values) else []
    attention = any(flag == "attention_prefix" and wanted for flag, wanted in statement.args)
    evidence = "; ".join(parts) + (_prefix_share(runs) if attention else "")
    shares = pd.to_numeric(runs.get("diagnostics.prefix_attention_share", pd.Series(dtype=float)), errors="coerce")
    if attention and shares.notna().any() and shares.max() <= 0:
        against.append("no attention reaches the prefix")
    return measurement, evidence, (VIOLATED if against else HOLDS), "; ".join(against)


def check_ordering(ctx: Context, statement: Statement, model: str) -> Result:
    """One relation of the claim, task by task (the claim check), combined by :func:`over_tasks`."""
    return _relation_result(ctx, model, ctx.tasks(model), statement.args, "all")


def _task_kinds(df: pd.DataFrame) -> dict[str, str]:
    """Task → kind, from the configs the runs recorded."""
    kinds = {}
    for task, config in zip(df["task"], df.get("provenance.config", pd.Series(None, index=df.index))):
        if isinstance(config, dict) and isinstance(config.get("task"), dict) and config["task"].get("kind"):
            kinds.setdefault(task, config["task"]["kind"])
    return kinds


def check_task_kind(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Works well on <kind>": the method ≈ full fine-tuning on every task of that kind."""
    kinds = _task_kinds(ctx.df)
    tasks = [t for t in ctx.tasks(model) if kinds.get(t) == statement.args[0]]
    return _relation_result(ctx, model, tasks, (statement.method, "≈", FULL), statement.args[0])


def few_shot_tasks(df: pd.DataFrame) -> set[str]:
    """Tasks whose usable runs trained on at most :data:`FEW_SHOT_MAX_TRAIN` examples."""
    if "metrics.data.train" not in df:
        return set()
    train = pd.to_numeric(df["metrics.data.train"], errors="coerce")
    most = train[df["usable"]].groupby(df.loc[df["usable"], "task"]).max()
    return {task for task, n in most.items() if n <= FEW_SHOT_MAX_TRAIN}


def check_few_shot(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Works in few-shot settings": the method ≈ full fine-tuning on every few-shot task."""
    tasks = [t for t in ctx.tasks(model) if t in few_shot_tasks(ctx.df)]
    return _relation_result(
        ctx, model, tasks, (statement.method, "≈", FULL), f"few-shot (≤ {FEW_SHOT_MAX_TRAIN} train)"
    )


def check_volume(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Slightly more parameters than X and Y", on what each method keeps per task (``params.stored``: the
    reparameterization MLP, a training device as large in prefix tuning as in P-Tuning v2, folded away) at
    the tuned points: more than each, while staying within :data:`SLIGHT_VOLUME_LABELS`.  Counts do not
    vary by seed: no noise rule applies."""
    costs = cost_data(selected_runs(ctx.df))
    costs = costs[costs["model"] == model].set_index("method")
    names = [statement.method, *statement.args]
    measurement = "stored parameters at the tuned points (median over runs), % of backbone"
    missing = [n for n in names if n not in costs.index]
    if missing:
        return measurement, "-", INCONCLUSIVE, f"no usable {', '.join(missing)} runs"
    evidence = "; ".join(
        f"{n} {fmt_count(costs.loc[n, 'stored'])} stored ({fmt_percent(costs.loc[n, 'stored_pct'])}; "
        f"{fmt_count(costs.loc[n, 'trainable'])} trained)"
        for n in names
    )
    mine = costs.loc[statement.method]
    others = statement.args
    against = [
        f"{other} keeps as many or more" for other in others if costs.loc[other, VOLUME_AXIS] >= mine[VOLUME_AXIS]
    ]
    label = volume_label(float(mine[f"{VOLUME_AXIS}_pct"]))  # the comparison table's label, on its axis
    if label not in SLIGHT_VOLUME_LABELS:
        against.append(f"not slight: {statement.method} keeps a {label} volume")
    return measurement, evidence, (VIOLATED if against else HOLDS), "; ".join(against)


def difficulty_pair(ctx: Context, model: str, method: str) -> tuple[str, str, str] | str:
    """(metric, easiest task, hardest task) by full fine-tuning's error, among the tasks both methods ran
    that share a primary metric (errors in different metrics do not compare); else why there is none.
    The two tasks must differ in difficulty beyond the noise of full fine-tuning's scores."""
    metrics = task_metrics(ctx.df)
    both = [
        t for t in ctx.tasks(model) if ctx.row(FULL, model, t) is not None and ctx.row(method, model, t) is not None
    ]
    groups: dict[str, list[str]] = {}
    for task in both:
        groups.setdefault(metrics.get(task, "?"), []).append(task)
    metric, tasks = max(sorted(groups.items()), key=lambda item: len(item[1]), default=("", []))
    if len(tasks) < 2:
        return f"fewer than 2 tasks with {FULL} and {method} runs share a primary metric"
    ordered = sorted(tasks, key=lambda t: ctx.row(FULL, model, t)["mean"])
    hard, easy = ordered[0], ordered[-1]
    diff, se = _difference(ctx.row(FULL, model, hard), ctx.row(FULL, model, easy))
    if diff <= CLAIM_NOISE_SE * se:
        return (
            f"{easy} and {hard} do not differ in difficulty beyond noise ({FULL} Δ {diff * 100:+.1f} ± {se * 100:.1f})"
        )
    return metric, easy, hard


def _difficulty_measurement(pair: tuple[str, str, str] | str, model: str, ctx: Context) -> str:
    if isinstance(pair, str):
        return f"difficulty = {FULL}'s error (1 − score)"
    metric, easy, hard = pair
    error = {t: 100 * (1 - ctx.row(FULL, model, t)["mean"]) for t in (easy, hard)}
    return (
        f"difficulty = {FULL}'s error (1 − {metric}): easiest {easy} ({error[easy]:.1f}), "
        f"hardest {hard} ({error[hard]:.1f})"
    )


def check_easy_task(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Fine on simple tasks": the method ≈ full fine-tuning on the easiest task (:func:`difficulty_pair`)."""
    pair = difficulty_pair(ctx, model, statement.method)
    measurement = _difficulty_measurement(pair, model, ctx)
    if isinstance(pair, str):
        return measurement, "-", INCONCLUSIVE, pair
    checks = _pair_checks(ctx, model, [pair[1]], statement.method, "≈", FULL)
    verdict, reason = over_tasks(checks)
    return measurement, _task_evidence(pair[1], checks[pair[1]], checks[pair[1]]["n"]), verdict, reason


def check_hard_task(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Low quality on complex tasks": the method's gap to full fine-tuning is larger on the hardest task
    than on the easiest, beyond the noise of both gaps."""
    pair = difficulty_pair(ctx, model, statement.method)
    measurement = _difficulty_measurement(pair, model, ctx)
    if isinstance(pair, str):
        return measurement, "-", INCONCLUSIVE, pair
    rows = {(m, t): ctx.row(m, model, t) for m in (statement.method, FULL) for t in pair[1:]}
    gaps = {t: _difference(rows[(statement.method, t)], rows[(FULL, t)]) for t in pair[1:]}
    (easy_gap, easy_se), (hard_gap, hard_se) = gaps[pair[1]], gaps[pair[2]]
    diff, se = hard_gap - easy_gap, math.sqrt(easy_se**2 + hard_se**2)
    doubts = [d for (m, t), r in rows.items() for d in _doubts(r, f"{m} on {t}")]
    verdict, reason = noise_verdict(diff, se, min(int(r["n"]) for r in rows.values()), doubts)
    evidence = (
        f"gap to {FULL}: {pair[1]} {easy_gap * 100:+.1f} ± {easy_se * 100:.1f}, {pair[2]} {hard_gap * 100:+.1f} ± "
        f"{hard_se * 100:.1f}; growth Δ {diff * 100:+.1f} ± {se * 100:.1f}"
    )
    return measurement, evidence, verdict, reason


REPORTED_KEYS = {"test": "test", "validation (held-out part)": HELDOUT}
"""The split a tuned score comes from (:func:`bench.report.tables.cell_stats`) → its key in the record's
per-split fields (``metrics.by_length``, ``metrics.wording``)."""


def _scored(field: object, split: object) -> dict | None:
    """The record field's entry for the split the tuned score comes from (None when absent)."""
    key = REPORTED_KEYS.get(str(split))
    entry = field.get(key) if isinstance(field, dict) and key else None
    return entry if isinstance(entry, dict) else None


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def length_change(by_length: object, split: object, primary: object) -> float:
    """Primary metric on the longest bucket − on the shortest (NaN without two scored buckets)."""
    buckets = (_scored(by_length, split) or {}).get("buckets")
    if not isinstance(buckets, list) or len(buckets) < 2:
        return math.nan
    first, last = (_number((b.get("metrics") or {}).get(primary)) for b in (buckets[0], buckets[-1]))
    return last - first


def wording_drop(wording: object, split: object, primary: object) -> float:
    """Clean primary metric − its mean over the wording perturbations (NaN without both)."""
    scores = _scored(wording, split) or {}
    clean = _number((scores.get("clean") or {}).get(primary))
    perturbed = [_number((v or {}).get(primary)) for k, v in scores.items() if k != "clean" and isinstance(v, dict)]
    return clean - sum(perturbed) / len(perturbed) if perturbed else math.nan


PER_RUN = {"length_change": ("metrics.by_length", length_change), "wording_drop": ("metrics.wording", wording_drop)}
"""Per-run quantities the claims compare across methods: name → (record field, how to read it)."""


def run_quantity_stats(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per method × model × task over the tuned point's runs: mean/std/n (and the convergence counts the
    noise rule reads) of a :data:`PER_RUN` quantity, on the split the tuned score comes from."""
    column, read = PER_RUN[name]
    runs = _tuned_scores(selected_runs(df))
    fields = runs.get(column, pd.Series(None, index=runs.index))
    runs = runs.assign(**{name: [read(f, s, p) for f, s, p in zip(fields, runs["split"], runs["metrics.primary"])]})
    stats = _stats(runs, name, KEYS)
    return stats[stats["n"] > 0] if len(stats) else stats


def _against_full(ctx: Context, model: str, method: str, name: str, decide: Callable) -> tuple[dict, str]:
    """Per task, ``decide(full_row, method_row)`` on a :data:`PER_RUN` quantity; the evidence text."""
    stats = run_quantity_stats(ctx.df, name)
    stats = stats[stats["model"] == model]
    rows = {(r["method"], r["task"]): r for _, r in stats.iterrows()}
    checks, parts = {}, []
    for task in sorted(stats["task"].unique()):
        full, mine = rows.get((FULL, task)), rows.get((method, task))
        checks[task] = decide(full, mine)
        if full is not None and mine is not None:
            parts.append(
                f"{task}: {method} {mine['mean'] * 100:+.1f} ± {mine['std'] * 100:.1f} vs {FULL} "
                f"{full['mean'] * 100:+.1f} ± {full['std'] * 100:.1f} (n {int(mine['n'])}/{int(full['n'])}) "
                f"→ {checks[task]['verdict']}"
            )
    return checks, "; ".join(parts) or "-"


def check_long_inputs(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Works on long inputs": per task, the method's change from the shortest to the longest length bucket
    against full fine-tuning's (the claim check's "<"); a tie counts for the statement, which asks for no
    larger a drop, not a smaller one.  Combined over tasks by :func:`over_tasks`."""

    def decide(full: pd.Series | None, mine: pd.Series | None) -> dict:
        check = _verdict("<", full, mine, FULL, statement.method)
        if check["verdict"] == WITHIN_NOISE:
            check.update(verdict=HOLDS, reason="drops equal within noise")
        return check

    measurement = f"score change shortest → longest input-length bucket vs {FULL}'s (metrics.by_length, points)"
    checks, evidence = _against_full(ctx, model, statement.method, "length_change", decide)
    if not checks:
        return measurement, "-", INCONCLUSIVE, "no run recorded metrics.by_length (trainer.length_buckets)"
    return measurement, evidence, *over_tasks(checks)


def check_wording(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Depends on the exact wording": per task, the method's mean drop under the wording perturbations is
    larger than full fine-tuning's (the claim check's "<" on the drop).  Combined over tasks."""
    measurement = f"mean score drop under meaning-preserving rewrites vs {FULL}'s (metrics.wording, points)"
    checks, evidence = _against_full(
        ctx,
        model,
        statement.method,
        "wording_drop",
        lambda full, mine: _verdict("<", full, mine, FULL, statement.method),
    )
    if not checks:
        return measurement, "-", INCONCLUSIVE, "no run recorded metrics.wording (trainer.wording_perturbations=true)"
    return measurement, evidence, *over_tasks(checks)


TRANSFER_ARROW = "→"


def transfer_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per method × model × transfer pair (``task`` = ``source→target``) over the tuned point's runs:
    mean/std/n of the target's primary metric in the transfer records (bench.transfer), with the source
    runs' convergence counts (the adapter transferred is the run's) and head-only's mean as ``head``."""
    runs = selected_runs(df)
    rows = []
    for _, run in runs[runs["usable"]].iterrows():
        transfers = run.get("transfer")
        for target, record in sorted(transfers.items()) if isinstance(transfers, dict) else ():
            value = transfer_score(record)
            if value is not None:
                row = run.copy()
                row["task"], row["transfer_score"] = f"{run['task']}{TRANSFER_ARROW}{target}", value
                row["score_sign"] = direction_sign(record.get("primary"))
                rows.append(row)
    if not rows:
        return pd.DataFrame(columns=[*KEYS, "mean", "std", "n", "head"])
    stats = _stats(pd.DataFrame(rows), "transfer_score", KEYS)
    stats = stats[stats["n"] > 0]
    head = stats[stats["method"] == HEAD].set_index(["model", "task"])["mean"]
    return stats.assign(head=pd.MultiIndex.from_frame(stats[["model", "task"]]).map(head.to_dict()).to_numpy())


def check_transfer(ctx: Context, statement: Statement, model: str) -> Result:
    """ "Works in zero-shot settings": per transfer pair (an adapter scored on a task it never trained on,
    bench.transfer), the method's score ≈ full fine-tuning's transferred adapter (the claim check's "≈",
    head-only's transfer as its floor).  Combined over pairs by :func:`over_tasks`."""
    measurement = f"target-task score of the adapter transferred without training vs {FULL}'s (bench.transfer, points)"
    stats = transfer_stats(ctx.df)
    stats = stats[stats["model"] == model]
    rows = {(r["method"], r["task"]): r for _, r in stats.iterrows()}
    checks, parts = {}, []
    for pair in sorted(stats["task"].unique()):
        mine, full = rows.get((statement.method, pair)), rows.get((FULL, pair))
        checks[pair] = _verdict("≈", mine, full, statement.method, FULL, rows.get((HEAD, pair)))
        if mine is not None and full is not None:
            parts.append(
                f"{pair}: {statement.method} {mine['mean'] * 100:.1f} ± {mine['std'] * 100:.1f} vs {FULL} "
                f"{full['mean'] * 100:.1f} ± {full['std'] * 100:.1f} (n {int(mine['n'])}/{int(full['n'])}) "
                f"→ {checks[pair]['verdict']}"
            )
    if not checks:
        return measurement, "-", INCONCLUSIVE, "no transfer records (python -m bench.transfer RUN_DIR task=TARGET)"
    return measurement, "; ".join(parts) or "-", *over_tasks(checks)


CHECKS: dict[str, Callable[[Context, Statement, str], Result]] = {
    "mechanism": check_mechanism,
    "ordering": check_ordering,
    "volume": check_volume,
    "task_kind": check_task_kind,
    "few_shot": check_few_shot,
    "easy_task": check_easy_task,
    "hard_task": check_hard_task,
    "long_inputs": check_long_inputs,
    "wording": check_wording,
    "transfer": check_transfer,
}
"""How each kind of statement is measured (:attr:`Statement.check` names one)."""

COLUMNS = ["model", "method", "statement", "measurement", "evidence", "verdict", "reason"]


def claims_data(df: pd.DataFrame, statements: tuple[Statement, ...] = STATEMENTS) -> pd.DataFrame:
    """One row per statement × model with usable runs: the measurement, its numbers and the verdict
    (holds / violated / within noise / inconclusive, with the reason)."""
    ctx = Context(df, relative_scores(df, "tuned"))
    models = sorted(df.loc[df["usable"], "model"].dropna().unique())
    rows = [
        dict(zip(COLUMNS, (model, s.method, s.text, *CHECKS[s.check](ctx, s, model))))
        for model in models
        for s in statements
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def claims_table(df: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`claims_data`: Model | Method | Statement | Measurement | Evidence | Verdict."""
    data = claims_data(df)
    verdicts = [f"{v} ({r})" if r else v for v, r in zip(data["verdict"], data["reason"])]
    return pd.DataFrame(
        {
            "Model": data["model"],
            "Method": data["method"],
            "Statement": data["statement"],
            "Measurement": data["measurement"],
            "Evidence": data["evidence"],
            "Verdict": verdicts,
        }
    )
