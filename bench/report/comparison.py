"""The comparison table: declared mechanism next to measured quality and parameter volume.

The first columns come from the methods' declarations (``methods.declarations()``); Quality
and Parameter volume come from the records and get a qualitative label by the thresholds
below.  Scores are the tuned ones by default: per method × model × task, the hparams chosen on
validation, reported on test where a labelled test split exists (``bench.report.tables.cell_stats``).
The claim (``methods.CLAIM``, "prompt < prefix < P-Tuning v2 ≈ full fine-tuning") is checked per task
and answers "inconclusive" (with the reason) when the runs cannot decide it.  Which methods are the
references (the ceiling, full fine-tuning, and the floor, head-only) is what the methods registry declares
(``MethodConfig.reference``); this module names no method.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

import pandas as pd

from bench.report.tables import _sort, cell_stats, cost_data, fmt_count, fmt_percent


@cache
def references() -> tuple[str, str]:
    """(ceiling, floor): the methods the registry declares as the quality references."""
    from methods import reference_method

    return reference_method("ceiling"), reference_method("floor")


@cache
def claim() -> tuple[tuple[str, str, str], ...]:
    """The usual claim as a chain of pairwise relations (``methods.CLAIM``), checked per model × task."""
    from methods import CLAIM

    return CLAIM


def claim_pairs() -> tuple[tuple[str, str, str], ...]:
    """Every pair of methods the claim orders, left before right in the chain, with the relation the chain
    implies: "≈" where every link between them is "≈", else "<" (prompt tuning < full fine-tuning follows
    from prompt < prefix < P-Tuning v2 ≈ full fine-tuning, up to the tolerance of "≈").  The direct links
    are :func:`claim` itself; the others let numbers that hold only two of the methods (a paper's table)
    speak to the chain."""
    chain = claim()
    names = [chain[0][0], *(right for _, _, right in chain)]
    ops = [op for _, op, _ in chain]
    return tuple(
        (names[i], "≈" if all(op == "≈" for op in ops[i:j]) else "<", names[j])
        for i in range(len(names))
        for j in range(i + 1, len(names))
    )


QUALITY_NEAR_FULL_R = 0.95
"""Quality "≈ full FT": relative position r = (score − floor)/(ceiling − floor) ≥ this …"""
QUALITY_NEAR_FULL_POINTS = 1.0
"""… or the score is at most this many points (metric ×100) below full fine-tuning."""
QUALITY_HIGH_R = 0.75
"""Quality "high": r ≥ this (and not ≈ full FT)."""
QUALITY_MEDIUM_R = 0.40
"""Quality "medium": r ≥ this; "low": 0 ≤ r < this; "below head-only": r < 0."""
QUALITY_MIN_SPAN_POINTS = 0.5
"""r is undefined when full FT beats head-only by fewer points than this (the task does not
separate the references); the label then says so instead of dividing by ~0."""

VOLUME_AXIS = "stored"
"""The count the Parameter-volume label reads (the claims table's volume statement reads the same):
``stored``, what a method keeps per task with the reparameterization MLP folded away — the "parameter
volume" of the usual comparison, which ranks prefix tuning between prompt tuning and P-Tuning v2 — or
``trainable``, everything that trains, the MLP included (there prefix tuning and P-Tuning v2 are alike).
The cell shows both counts and names the axis."""
VOLUME_AXES = {"stored": "stored, MLP folded", "trainable": "trainable, MLP included"}
"""Each axis as the cell words it."""
VOLUME_TINY_PCT = 0.1
"""Parameter volume "tiny": parameters on :data:`VOLUME_AXIS` < this % of the backbone."""
VOLUME_SMALL_PCT = 1.0
"""Parameter volume "small": < this % of the backbone."""
VOLUME_MEDIUM_PCT = 10.0
"""Parameter volume "medium": < this %; "full" otherwise."""

CLAIM_NOISE_SE = 2.0
"""A relation is "inconclusive" when |Δ| ≤ this × the standard error of the difference of the two
seed means, sqrt(s_a²/n_a + s_b²/n_b) (for "≈": when the gap is too large for ≈ but within this)."""
CLAIM_MIN_SEEDS = 2
"""… or when either side has fewer usable seeds than this (no standard error without two) …"""
WITHIN_NOISE = "within noise"
"""A relation whose |Δ| is within the noise although both sides converged with at least
:data:`NOISE_MIN_SEEDS` seeds: a measured tie, not a lack of evidence."""
NOISE_MIN_SEEDS = 3
INCONCLUSIVE = "inconclusive"
"""… or when a run of either side did not converge (or recorded no diagnostics), or, for "≈ full
fine-tuning", when full fine-tuning does not beat head-only beyond the same noise: then the task
separates nothing (e.g. every method at chance) and "≈" would hold vacuously."""


def unregistered_claim_methods(registered: list[str] | None = None) -> list[str]:
    """Names in :func:`claim` that are not registered methods (default: ``methods.method_names()``);
    [] when the data is consistent."""
    if registered is None:
        import methods

        registered = methods.method_names()
    named = {name for left, _, right in claim() for name in (left, right)}
    return sorted(named - set(registered))


NEAR_FULL = "≈ full FT"
_EPS = 1e-9  # thresholds are inclusive; keep 0.80 - 0.79 = 1.0000000000000009 points "within 1 point"


def relative_position(score: float, full: float, head: float, sign: float = 1.0) -> float:
    """r = (score − head)/(full − head); NaN when a reference is missing or too close. ``sign`` is the
    metric's direction (-1: lower is better), which decides whether full FT is above head-only."""
    if any(math.isnan(v) for v in (score, full, head, sign)) or sign * (full - head) * 100 < QUALITY_MIN_SPAN_POINTS:
        return math.nan
    return (score - head) / (full - head)


def quality_label(score: float, full: float, head: float, sign: float = 1.0) -> str:
    """The Quality label of a score (all in [0, 1]) given the two reference scores; ``sign`` = -1 for a
    lower-is-better metric (the labels then read the scores negated)."""
    if math.isnan(sign):
        return "n/a (its tasks' metrics disagree on which way is better)"
    score, full, head = score * sign, full * sign, head * sign
    if math.isnan(score):
        return "n/a (no usable runs)"
    if math.isnan(full):
        return f"n/a (no {references()[0]} runs)"
    if (full - score) * 100 <= QUALITY_NEAR_FULL_POINTS + _EPS:
        return NEAR_FULL
    if math.isnan(head):
        return f"n/a (no {references()[1]} runs)"
    r = relative_position(score, full, head)
    if math.isnan(r):
        return "n/a (full FT ≈ head-only)"
    if r >= QUALITY_NEAR_FULL_R - _EPS:
        return NEAR_FULL
    if r >= QUALITY_HIGH_R - _EPS:
        return "high"
    if r >= QUALITY_MEDIUM_R - _EPS:
        return "medium"
    return "low" if r >= -_EPS else "below head-only"


def volume_label(trainable_pct: float) -> str:
    """The Parameter-volume label of a trainable share of the backbone (in %)."""
    if math.isnan(trainable_pct):
        return "n/a (no params.backbone)"
    if trainable_pct < VOLUME_TINY_PCT:
        return "tiny"
    if trainable_pct < VOLUME_SMALL_PCT:
        return "small"
    return "medium" if trainable_pct < VOLUME_MEDIUM_PCT else "full"


def method_declarations() -> dict[str, dict[str, bool]]:
    """``methods.declarations()``, or {} (with a warning) so a report still renders without it."""
    try:
        import methods

        return methods.declarations()
    except Exception as exc:  # a broken method file must not stop the report from the records
        warnings.warn(f"methods.declarations() unavailable ({exc}); declaration columns show '?'", stacklevel=2)
        return {}


def relative_scores(df: pd.DataFrame, variant: str = "tuned") -> pd.DataFrame:
    """Per method × model × task (the chosen hparams): mean score, the references, r, rank (1 = best in
    the primary metric's direction, ``sign``), label."""
    stats = cell_stats(df, variant).dropna(subset=["mean"])
    index = pd.MultiIndex.from_frame(stats[["model", "task"]])
    for column, name in zip(("full", "head"), references()):
        ref = stats[stats["method"] == name].set_index(["model", "task"])["mean"]
        stats[column] = ref.reindex(index).to_numpy()
    columns = (stats["mean"], stats["full"], stats["head"], stats["sign"])
    stats["r"] = [relative_position(*v) for v in zip(*columns)]
    stats["label"] = [quality_label(*v) for v in zip(*columns)]
    by_task = stats.groupby(["model", "task"])["mean"]
    stats["rank"] = (
        (stats["mean"] * stats["sign"]).groupby([stats["model"], stats["task"]]).rank(ascending=False, method="min")
    )
    stats["n_methods"] = by_task.transform("count")
    return stats.drop(columns=["not_ok", "not_ok_detail"]).reset_index(drop=True)


def _aggregate_quality(rows: pd.DataFrame, has_full: bool, has_head: bool) -> dict[str, float]:
    """Average score and references over the tasks where the method and the references exist."""
    mask = rows["mean"].notna()
    if has_full:
        mask &= rows["full"].notna()
    if has_head:
        mask &= rows["head"].notna()
    used = rows[mask]
    score, full, head = (float(used[c].mean()) if len(used) else math.nan for c in ("mean", "full", "head"))
    signs = used["sign"].unique()
    sign = float(signs[0]) if len(signs) == 1 else (1.0 if used.empty else math.nan)  # NaN: directions mixed
    quality = quality_label(score, full, head, sign)
    if used.empty and rows["mean"].notna().any():
        quality = f"n/a (no task shared with {'/'.join(references())})"
    return {
        "tasks": int(mask.sum()),
        "score": score,
        "full": full,
        "head": head,
        "r": relative_position(score, full, head, sign),
        "quality": quality,
        "mean_rank": float(used["rank"].mean()) if len(used) else math.nan,
        "n_methods": int(rows["n_methods"].max()) if len(rows) else 0,
    }


def comparison_data(df: pd.DataFrame, variant: str = "tuned") -> pd.DataFrame:
    """Per method × model: averaged quality (score, references, r, mean rank, label) and volume.

    Scores are averaged over the tasks where the method and both references have usable runs
    (only the present references when one is missing for the whole model), so that r compares
    like with like.
    """
    scores = relative_scores(df, variant)
    rows = []
    for (method, model), group in scores.groupby(["method", "model"]):
        model_rows = scores[scores["model"] == model]
        has_full, has_head = (bool((model_rows["method"] == name).any()) for name in references())
        rows.append({"method": method, "model": model, **_aggregate_quality(group, has_full, has_head)})
    data = pd.DataFrame(
        rows, columns=["method", "model", "tasks", "score", "full", "head", "r", "quality", "mean_rank", "n_methods"]
    )
    costs = cost_data(df)[["method", "model", "trainable", "trainable_pct", "stored", "stored_pct"]]
    data = data.merge(costs, on=["method", "model"], how="left")
    data["volume"] = [volume_label(p) for p in data[f"{VOLUME_AXIS}_pct"].astype(float)]
    return _sort(data, ["method", "model"]) if len(data) else data


def _declared(declarations: dict[str, dict[str, bool]], method: str) -> tuple[str, str, str]:
    """Input influence, attention influence and MLP use as the method declares them."""
    flags = declarations.get(method)
    if flags is None:
        return ("? (not declared)",) * 3
    if flags.get("input_tokens"):
        source = "yes: virtual tokens in the input"
    else:
        source = "yes: trains the embeddings" if flags.get("trains_backbone") else "no"
    if flags.get("attention_prefix"):
        attention = "yes: K/V prefix in every layer"
    elif flags.get("trains_backbone"):
        attention = "yes: trains the attention weights"
    elif flags.get("attention_weights"):
        attention = "yes: updates the attention projections"
    else:
        attention = "indirect: through the input tokens" if flags.get("input_tokens") else "no"
    mlp = "yes: reparameterization MLP" if flags.get("reparameterized") else "no"
    return source, attention, mlp


def _quality_cell(row: pd.Series) -> str:
    parts = [f"{row['score'] * 100:.1f} avg over {row['tasks']} task(s)"] if not math.isnan(row["score"]) else []
    if not math.isnan(row["r"]):
        parts.append(f"r = {row['r']:.2f} (head-only {row['head'] * 100:.1f}, full FT {row['full'] * 100:.1f})")
    if not math.isnan(row["mean_rank"]):
        parts.append(f"mean rank {row['mean_rank']:.1f}/{row['n_methods']}")
    return f"{row['quality']}: " + "; ".join(parts) if parts else row["quality"]


def _volume_cell(row: pd.Series) -> str:
    """``<label> by <axis>: <axis count> (…%); <other count> (…%)`` — the label's axis first, both shown."""
    if pd.isna(row["trainable"]):
        return "n/a (no params)"
    axes = [VOLUME_AXIS, *(a for a in VOLUME_AXES if a != VOLUME_AXIS)]
    counts = [
        f"{fmt_count(row[a])} {VOLUME_AXES[a]} ({fmt_percent(row[f'{a}_pct'])} of backbone)"
        for a in axes
        if not pd.isna(row[a])
    ]
    return f"{row['volume']} by {VOLUME_AXIS}: " + "; ".join(counts)


def relation_name(left: str, op: str, right: str) -> str:
    """``"<left> <op> <right>"``, e.g. the first relation of the claim."""
    return f"{left} {op} {right}"


def _doubts(row: pd.Series, name: str) -> list[str]:
    """Why one side of a relation cannot support a verdict (empty when it can)."""
    reasons = []
    if row["n"] < CLAIM_MIN_SEEDS:
        reasons.append(f"{name} has {int(row['n'])} seed{'s' if row['n'] != 1 else ''}")
    if row.get("not_converged", 0):
        reasons.append(f"{name}: {int(row['not_converged'])}/{int(row['n'])} run(s) not converged")
    if row.get("unknown", 0):
        reasons.append(f"{name}: {int(row['unknown'])}/{int(row['n'])} run(s) without diagnostics")
    return reasons


def _difference(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """b − a of two rows of :func:`relative_scores` (of one task) in the metric's direction (positive:
    b is better, also for a lower-is-better metric) and the standard error of that difference."""
    se = math.sqrt(sum(0.0 if math.isnan(r["std"]) else r["std"] ** 2 / r["n"] for r in (a, b)))
    return float((b["mean"] - a["mean"]) * a["sign"]), se


def _unseparated(full: pd.Series, head: pd.Series | None) -> str:
    """Why "≈ full FT" would be vacuous on this task ("" when full FT beats head-only beyond noise
    or head-only has no runs to compare with)."""
    if head is None:
        return ""
    diff, se = _difference(head, full)
    if diff > CLAIM_NOISE_SE * se and diff * 100 >= QUALITY_MIN_SPAN_POINTS:
        return ""
    full_name, head_name = references()
    return (
        f"{full_name} does not beat {head_name} beyond noise (Δ {diff * 100:+.1f} ± {se * 100:.1f}): nothing to be ≈ to"
    )


def _verdict(
    op: str, a: pd.Series | None, b: pd.Series | None, left: str, right: str, head: pd.Series | None = None
) -> dict:
    """Check ``a op b`` for two rows of :func:`relative_scores` (None when a method has no runs);
    ``head`` is the head-only row, the floor that "≈" needs ``b`` to rise above."""
    if a is None or b is None:
        return {
            "diff": math.nan,
            "se": math.nan,
            "verdict": f"n/a (no {left if a is None else right} runs)",
            "reason": "",
        }
    diff, se = _difference(a, b)
    vacuous = _unseparated(b, head) if op == "≈" else ""
    doubts = _doubts(a, left) + _doubts(b, right) + ([vacuous] if vacuous else [])
    near = op == "≈" and quality_label(a["mean"], b["mean"], a["head"], a["sign"]) == NEAR_FULL
    verdict, reason = relation_verdict(op, diff, se, min(int(a["n"]), int(b["n"])), doubts, near)
    return {"diff": diff, "se": se, "verdict": verdict, "reason": reason}


def relation_verdict(op: str, diff: float, se: float, seeds: int, doubts: list[str], near: bool) -> tuple[str, str]:
    """(verdict, reason) of "a op b" — the one rule the claim check, the claims table and the paper claim
    share: "≈" holds when nothing casts doubt and ``near`` (b's score is ≈ full FT by :func:`quality_label`);
    everything else is :func:`noise_verdict`'s."""
    if op == "≈" and not doubts and near:
        return "holds", ""
    return noise_verdict(diff, se, seeds, doubts, op)


def noise_verdict(diff: float, se: float, seeds: int, doubts: list[str], op: str = "<") -> tuple[str, str]:
    """(verdict, reason) of "a op b" from Δ = b − a and its standard error — the rule every claim shares:
    inconclusive when a side cannot support a verdict (``doubts``); for |Δ| ≤ :data:`CLAIM_NOISE_SE`
    standard errors, within noise at ≥ :data:`NOISE_MIN_SEEDS` seeds a side (``seeds``: the fewest),
    inconclusive below; otherwise "<" holds for Δ > 0 and is violated for Δ < 0, and "≈" is violated
    (its "holds" is the caller's: the gap is small, not only unresolved)."""
    if doubts:
        return INCONCLUSIVE, "; ".join(doubts)
    if abs(diff) <= CLAIM_NOISE_SE * se:
        reason = f"|Δ| within {CLAIM_NOISE_SE:g} standard errors"
        if seeds < NOISE_MIN_SEEDS:
            return INCONCLUSIVE, reason + f" at fewer than {NOISE_MIN_SEEDS} seeds: run more seeds"
        return WITHIN_NOISE, reason
    return ("violated" if op == "≈" or diff < 0 else "holds"), ""


def claim_check_data(df: pd.DataFrame, variant: str = "tuned") -> pd.DataFrame:
    """Per model × task × relation of :func:`claim`: Δ = right − left (in [0, 1], negated for a
    lower-is-better metric so that Δ > 0 always means right is better), its standard
    error, the verdict ("holds", "violated", "inconclusive", "n/a (no X runs)") and, when
    inconclusive, the reason."""
    scores = relative_scores(df, variant)
    rows = []
    for (model, task), group in scores.groupby(["model", "task"]):
        by_method = {r["method"]: r for _, r in group.iterrows()}
        for left, op, right in claim():
            check = _verdict(op, by_method.get(left), by_method.get(right), left, right, by_method.get(references()[1]))
            rows.append({"model": model, "task": task, "relation": relation_name(left, op, right), **check})
    return pd.DataFrame(rows, columns=["model", "task", "relation", "diff", "se", "verdict", "reason"])


def _claim_cell(row: pd.Series) -> str:
    if row["verdict"].startswith("n/a"):
        return row["verdict"]
    noise = f" ± {row['se'] * 100:.1f}" if row["se"] > 0 else ""
    numbers = f"gap {row['diff'] * 100:.1f}{noise}" if "≈" in row["relation"] else f"Δ {row['diff'] * 100:+.1f}{noise}"
    reason = f"; {row['reason']}" if row["reason"] else ""
    return f"{row['verdict']} ({numbers}{reason})"


def _claim_summary(verdicts: list[str], relations: list[str]) -> str:
    violated = [r for r, v in zip(relations, verdicts) if v == "violated"]
    unresolved = [r for r, v in zip(relations, verdicts) if v == INCONCLUSIVE]
    ties = [r for r, v in zip(relations, verdicts) if v == WITHIN_NOISE]
    tied = f" ({WITHIN_NOISE}: {'; '.join(ties)})" if ties else ""
    if violated:
        return "violated: " + "; ".join(violated) + (f" (inconclusive: {'; '.join(unresolved)})" if unresolved else "")
    if unresolved:
        return "inconclusive: " + "; ".join(unresolved) + tied
    if ties:
        return f"not separated: {'; '.join(ties)} {WITHIN_NOISE}, the rest holds"
    return "holds" if all(v == "holds" for v in verdicts) else "incomplete (missing methods)"


def claim_check_table(df: pd.DataFrame, variant: str = "tuned") -> pd.DataFrame:
    """One line per model × task: each relation of the claim with Δ (points) and the verdict."""
    data = claim_check_data(df, variant)
    relations = [relation_name(*c) for c in claim()]
    rows = []
    for (model, task), group in data.groupby(["model", "task"]):
        cells = {r["relation"]: _claim_cell(r) for _, r in group.iterrows()}
        verdicts = [group.set_index("relation").loc[rel, "verdict"] for rel in relations]
        rows.append({"Model": model, "Task": task, **cells, "Claim": _claim_summary(verdicts, relations)})
    return pd.DataFrame(rows, columns=["Model", "Task", *relations, "Claim"])


def _method_claims(claims: pd.DataFrame, method: str, model: str) -> str:
    """The relations of the claim a method takes part in, counted over the model's tasks."""
    parts = []
    for relation in [relation_name(*c) for c in claim() if method in (c[0], c[2])]:
        rows = claims[(claims["model"] == model) & (claims["relation"] == relation)]
        rows = rows[~rows["verdict"].str.startswith("n/a")]
        if rows.empty:
            continue
        text = f"{relation}: holds on {(rows['verdict'] == 'holds').sum()}/{len(rows)} tasks"
        for verdict in ("violated", WITHIN_NOISE, INCONCLUSIVE):
            tasks = sorted(rows.loc[rows["verdict"] == verdict, "task"])
            text += f" ({verdict}: {', '.join(tasks)})" if tasks else ""
        parts.append(text)
    return "; ".join(parts) if parts else "-"


def _recorded_declarations(df: pd.DataFrame, method: str, model: str) -> dict[str, bool]:
    """Flags the runs themselves recorded (e.g. a flat prefix is not reparameterized), where all runs agree."""
    runs = df[(df["method"] == method) & (df["model"] == model)]
    flags = {}
    for column in (c for c in df.columns if c.startswith("declarations.")):
        values = runs[column].dropna().unique()
        if len(values) == 1:
            flags[column.split(".", 1)[1]] = bool(values[0])
    return flags


def comparison_table(
    df: pd.DataFrame, variant: str = "tuned", declarations: dict[str, dict[str, bool]] | None = None
) -> pd.DataFrame:
    """Method | Model | Input influence | Attention influence | Uses MLP | Quality |
    Parameter volume | Claim check — declarations beside measurements (see docs/REPORT.md)."""
    declarations = method_declarations() if declarations is None else declarations
    data = comparison_data(df, variant)
    claims = claim_check_data(df, variant)
    rows = []
    for _, row in data.iterrows():
        flags = {**declarations.get(row["method"], {}), **_recorded_declarations(df, row["method"], row["model"])}
        source, attention, mlp = _declared({row["method"]: flags} if flags else {}, row["method"])
        rows.append(
            {
                "Method": row["method"],
                "Model": row["model"],
                "Input influence": source,
                "Attention influence": attention,
                "Uses MLP": mlp,
                "Quality": _quality_cell(row),
                "Parameter volume": _volume_cell(row),
                "Claim check": _method_claims(claims, row["method"], row["model"]),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "Method",
            "Model",
            "Input influence",
            "Attention influence",
            "Uses MLP",
            "Quality",
            "Parameter volume",
            "Claim check",
        ],
    )
