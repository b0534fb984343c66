"""Paper vs measured: every published number of ``bench/reference/papers.csv`` beside ours.

A reference row matches the usable runs of the same method and task whose model has the same Hub id
(the record's resolved ``model.hub_id``; otherwise the id in ``conf/model/<model>.yaml``). Hub ids
compare by their last path part, case-insensitively, because the Hub moved legacy ids under
organisations (``roberta-large`` is ``FacebookAI/roberta-large``) while ``bert-large-cased`` and
``bert-large-uncased`` stay different models.

When runs of several hyperparameter points match, the point with the best validation score
(compared on the seeds every point has) is shown, as the tuned table does, and named. Where nothing
matches, the row carries the exact command that would produce the number.

Δ = ours − paper is computed only like for like: our number is on the paper's split (``test``: the
records' ``metrics.test``; ``validation``: their best-checkpoint ``metrics.best``, the protocol of the
papers' best-epoch dev numbers) and in the paper's metric. Otherwise both numbers are shown and the Δ
cell says what differs (a dev run is never given a Δ against a test-split row, nor any run against a
row whose split the paper leaves unstated).

    paper_vs_measured_data(df)   # one row per reference row: paper value, our mean/std/n, Δ, command
    paper_vs_measured(df)        # the display table
    write_paper_vs_measured(df, out_dir)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from bench import CONF_DIR
from bench.reference import load_reference
from bench.report.loading import direction_sign
from bench.report.render import append_section, write_table
from bench.report.tables import seed_matched_means

CONF_MODELS = CONF_DIR / "model"
SEEDS = "0,1,2"
CAPTION = (
    "Paper vs measured (metric ×100; ours: mean ± std (n) over seeds of the best hyperparameter point, "
    "on the split named; Δ = ours − paper, only where our split and metric are the paper's)"
)
OUR_SPLITS = {"test": "metrics.test", "validation": "metrics.best"}
"""Our split → the record field that scores it (the same keys as the reference table's ``split``)."""


def hub_key(hub_id: Any) -> str | None:
    """``FacebookAI/roberta-large`` -> ``roberta-large``: the part of a Hub id that names the model."""
    if not isinstance(hub_id, str) or not hub_id.strip():
        return None
    return hub_id.strip().rstrip("/").rsplit("/", 1)[-1].lower()


def model_hub_ids(conf_dir: Path = CONF_MODELS) -> dict[str, str]:
    """Model config name -> its ``hub_id`` (configs without one are left out)."""
    ids = {}
    for path in sorted(conf_dir.glob("*.yaml")):
        hub_id = OmegaConf.load(path).get("hub_id")
        if hub_id:
            ids[path.stem] = str(hub_id)
    return ids


def config_for(hub_id: str, configs: dict[str, str]) -> tuple[str | None, bool]:
    """(model config to run ``hub_id`` with, whether ``model.hub_id`` must be overridden).

    An exact id match needs no override; otherwise a config of the same family and size
    (``bert-large-cased`` -> ``bert_large``, whose id is ``bert-large-uncased``) runs with the id
    overridden. (None, False) when no config is close.
    """
    key = hub_key(hub_id)
    for name, config_id in configs.items():
        if hub_key(config_id) == key:
            return name, False
    stem = "-".join(key.split("-")[:2]) if key else ""
    for name, config_id in configs.items():
        if stem and "-".join(hub_key(config_id).split("-")[:2]) == stem:
            return name, True
    return None, False


def command_for(row: pd.Series, configs: dict[str, str]) -> str:
    """The command that would produce a reference row's number, or why none can."""
    name, override = config_for(row["hub_id"], configs)
    if name is None:
        return f"no model config for {row['hub_id']}: add conf/model/<name>.yaml with hub_id: {row['hub_id']}"
    hub = f" model.hub_id={row['hub_id']}" if override else ""
    return f"python -m bench method={row['method']} model={name}{hub} task={row['task']} trainer=paper seed={SEEDS} -m"


def _record_hub_key(run: pd.Series, configs: dict[str, str]) -> str | None:
    config = run.get("provenance.config")
    if isinstance(config, dict) and isinstance(config.get("model"), dict) and config["model"].get("hub_id"):
        return hub_key(config["model"]["hub_id"])
    return hub_key(configs.get(str(run.get("model"))))


def _hparams_label(run: pd.Series) -> str:
    """The run's hyperparameter point as text ('' for the composed defaults)."""
    from bench.report.loading import hparams_label

    value = run.get("hparams")
    return value if isinstance(value, str) else hparams_label(value)


def _scored_runs(df: pd.DataFrame, metric: str, configs: dict[str, str]) -> pd.DataFrame:
    """Usable runs with: hub key, hparams point, the score (×100) on each of :data:`OUR_SPLITS` and the
    validation score that chooses the point."""
    runs = df[df["usable"]].copy()
    missing = pd.Series(math.nan, index=runs.index)
    for split, field in OUR_SPLITS.items():
        runs[split] = pd.to_numeric(runs.get(f"{field}.{metric}", missing), errors="coerce") * 100
    runs["selection"] = pd.to_numeric(runs.get(f"metrics.best.{metric}", missing), errors="coerce")
    runs["hub_key"] = [_record_hub_key(run, configs) for _, run in runs.iterrows()]
    runs["point"] = [_hparams_label(run) for _, run in runs.iterrows()]
    return runs


def our_split(chosen: pd.DataFrame, paper_split: str) -> str:
    """The split our number is reported on: the paper's when every chosen run has it, else the first of
    :data:`OUR_SPLITS` they all have ("" when none)."""
    order = [paper_split, *OUR_SPLITS] if paper_split in OUR_SPLITS else list(OUR_SPLITS)
    return next((s for s in order if chosen[s].notna().all()), "")


def difference(paper_split: str, ours: str) -> str:
    """What keeps our number from a Δ against the paper's ("" when split and metric match)."""
    if paper_split not in OUR_SPLITS:
        return f"paper's split {paper_split}"
    if ours != paper_split:
        return f"split differs (ours {ours}, paper {paper_split})"
    return ""


def _best_point(matched: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs of the hyperparameter point with the best validation score of ``metric`` (in its declared
    direction), compared on the seeds every point has as the tuned table does (ties: first name)."""
    means = seed_matched_means(matched, ["point"], "selection").set_index("point")["selection"]
    oriented = (means * direction_sign(metric)).fillna(-math.inf)
    best = sorted(oriented.index, key=lambda p: (-oriented[p], p))[0]
    return matched[matched["point"] == best]


def _measured(ref: pd.Series, runs: pd.DataFrame, configs: dict[str, str]) -> dict[str, Any]:
    """Our side of one reference row: mean/std/n on :func:`our_split`, Δ where like for like, else why not."""
    matched = runs[
        (runs["method"] == ref["method"]) & (runs["task"] == ref["task"]) & (runs["hub_key"] == hub_key(ref["hub_id"]))
    ]
    scored = matched.dropna(subset=["selection"])
    if scored.empty:
        why = f"our runs record no {ref['metric']}" if len(matched) else ""
        return {"command": command_for(ref, configs), "differs": why}
    chosen = _best_point(scored, ref["metric"])
    split = our_split(chosen, ref["split"])
    values = chosen[split]
    differs = difference(ref["split"], split)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "n": int(len(values)),
        "our_split": split,
        "differs": differs,
        "diff": math.nan if differs else float(values.mean()) - ref["value"],
        "our_model": ",".join(sorted(set(chosen["model"].astype(str)))),
        "hparams": chosen["point"].iloc[0],
    }


def paper_vs_measured_data(df: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per reference row: the published value, our mean/std/n and the split it is on where runs
    match, Δ where split and metric match (``differs`` says what does not) and, where no run matches,
    the command that would produce ours."""
    reference = load_reference() if reference is None else reference
    configs = model_hub_ids()
    scored = {metric: _scored_runs(df, metric, configs) for metric in reference["metric"].unique()}
    empty = {"mean": math.nan, "std": math.nan, "n": 0, "our_split": "", "differs": "", "diff": math.nan}
    rows = []
    for _, ref in reference.iterrows():
        ours = {**empty, "our_model": "", "hparams": "", "command": ""}
        ours.update(_measured(ref, scored[ref["metric"]], configs))
        rows.append({**ref.to_dict(), "paper_value": ref["value"], **ours})
    return pd.DataFrame(rows).drop(columns=["value"])


def _fmt_ours(row: pd.Series) -> str:
    if not row["n"]:
        return "–"
    std = "" if math.isnan(row["std"]) else f" ± {row['std']:.1f}"
    return f"{row['mean']:.1f}{std} ({row['n']})"


def _fmt_diff(diff: float, differs: str) -> str:
    """``+1.2``, or ``no Δ: <what differs>`` (empty when there is nothing of ours)."""
    if differs:
        return f"no Δ: {differs}"
    return "" if math.isnan(diff) else f"{diff:+.1f}"


def paper_vs_measured(df: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Display form: Paper | Model | Task | Method | Metric | Split | Setting | Budget | Measured by |
    Paper value | Ours | Ours on | Δ (or what differs) | Our run / command | Source."""
    data = paper_vs_measured_data(df, reference)
    return pd.DataFrame(
        {
            "Paper": data["paper"],
            "Model": data["hub_id"],
            "Task": data["task"],
            "Method": data["method"],
            "Metric": data["metric"],
            "Split": data["split"],
            "Setting": data["setting"],
            "Budget": data["budget"],
            "Measured by": data["measured_by"],
            "Paper value": data["value_text"],  # as published: 37.25 stays 37.25, 77.0 stays 77.0
            "Ours": data.apply(_fmt_ours, axis=1),
            "Ours on": data["our_split"],
            "Δ": [_fmt_diff(d, why) for d, why in zip(data["diff"], data["differs"])],
            "Our run / command": [
                f"{m} {h}".strip() if n else c
                for m, h, n, c in zip(data["our_model"], data["hparams"], data["n"], data["command"])
            ],
            "Source": data["source"],
        }
    )


def write_paper_vs_measured(df: pd.DataFrame, out_dir: Path, report_page: Path | None = None) -> dict[str, Path]:
    """``paper_vs_measured.{csv,md,tex}`` (+ ``_data.csv``) in ``out_dir``; appended to ``report_page``."""
    table = paper_vs_measured(df)
    paths = write_table(table, Path(out_dir), "paper_vs_measured", CAPTION, paper_vs_measured_data(df))
    append_section(report_page, CAPTION, table)
    return paths
