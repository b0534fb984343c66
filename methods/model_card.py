"""The model card (README.md) of an exported PEFT adapter: what it is, how it scored, how to load it, and
when its outputs equal ours.  Plain text from plain facts: no torch, no record reading (the bench hands
over :class:`RunFacts`; methods/peft_export.py :class:`ExportFacts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# PEFT's task type -> the AutoPeftModel class that loads it, and the Hub's pipeline tag
AUTO_CLASSES = {
    "SEQ_CLS": "AutoPeftModelForSequenceClassification",
    "TOKEN_CLS": "AutoPeftModelForTokenClassification",
    "CAUSAL_LM": "AutoPeftModelForCausalLM",
    "FEATURE_EXTRACTION": "AutoPeftModelForFeatureExtraction",
}
PIPELINE_TAGS = {
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "CAUSAL_LM": "text-generation",
    "FEATURE_EXTRACTION": "feature-extraction",
}


@dataclass(frozen=True)
class ExportFacts:
    """What the export holds: PEFT's types, the base model id, where the task head went, the labels."""

    peft_type: str
    task_type: str
    base_model: str | None
    head: str | None = None  # the transformers module holding our head (modules_to_save)
    head_reason: str | None = None  # why a task head is not in the folder
    label_names: list[str] | None = None
    virtual_outputs: int = 0  # leading output positions that belong to virtual tokens (prompt tuning)
    conditions: tuple[str, ...] = ()  # when PEFT's outputs equal ours


@dataclass(frozen=True)
class RunFacts:
    """The run behind an export, as its record says (the bench fills it; methods never read a record)."""

    method: str
    model: str
    task: str
    seed: int | None
    weights: str  # the weights the run trained on (provenance.weights)
    base_note: str  # how those weights relate to the exported base_model id
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    primary_metric: str | None = None
    identity: dict[str, str] = field(default_factory=dict)  # run label, config hash, git commit, record path


def render_card(export: ExportFacts, run: RunFacts | None = None) -> str:
    """The README.md text; PEFT's ``save_pretrained`` then adds its own metadata (library, base model, tags)."""
    title = f"# {run.method} adapter: {run.model} on {run.task}" if run else f"# {export.peft_type} adapter"
    parts = [
        f"---\npipeline_tag: {PIPELINE_TAGS[export.task_type]}\n---\n\n{title}\n",
        _summary(export, run),
        _base_section(export, run),
        _scores_section(run),
        _head_section(export),
        _loading_section(export),
        _conditions_section(export),
        _identity_section(run),
    ]
    # a blank line last: PEFT's save_pretrained appends its "### Framework versions" block after it
    return "\n".join(part for part in parts if part) + "\n"


def _summary(export: ExportFacts, run: RunFacts | None) -> str:
    what = f"A PEFT `{export.peft_type}` adapter, task type `{export.task_type}`"
    if run is None:
        return what + ".\n"
    seed = f", seed {run.seed}" if run.seed is not None else ""
    trained = f"method `{run.method}`, model `{run.model}`, task `{run.task}`{seed}"
    return f"{what}, trained by softprompt-bench: {trained}.\n"


def _base_section(export: ExportFacts, run: RunFacts | None) -> str:
    lines = ["## Base model", ""]
    if export.base_model:
        lines.append(f"`base_model_name_or_path`: `{export.base_model}`.")
    else:
        lines.append("`base_model_name_or_path`: none (the run's model has no Hub id).")
    if run is not None:
        lines.append(f"The run trained on `{run.weights}`: {run.base_note}.")
    return "\n".join(lines) + "\n"


def _scores_section(run: RunFacts | None) -> str:
    if run is None or not run.scores:
        return ""
    lines = [
        "## Scores",
        "",
        "From the run's record; `validation` is the best validation pass, whose weights these are.",
        "",
        "| split | metric | value |",
        "|---|---|---|",
    ]
    for split, metrics in run.scores.items():
        for metric, value in metrics.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue  # per-type breakdowns and the like stay in the record
            mark = " (primary)" if metric == run.primary_metric else ""
            lines.append(f"| {split} | {metric}{mark} | {value:.4f} |")
    return "\n".join(lines) + "\n"


def _head_section(export: ExportFacts) -> str:
    if export.head is None and export.head_reason is None:
        return ""
    lines = ["## Task head", ""]
    if export.head is not None:
        lines.append(
            f"Our head (dropout, then one linear layer) is the base class's `{export.head}`, kept in "
            f"`modules_to_save`: `{AUTO_CLASSES[export.task_type]}` loads it with the adapter."
        )
    else:
        lines.append(
            f"Not in this folder: {export.head_reason}. It is in the run's `adapter/adapter.safetensors` "
            "(`head.*`, softprompt-bench's format); this folder gives the adapted backbone's outputs."
        )
    if export.label_names:
        lines.append(f"Labels (`labels.json`, whose JSON keys are strings): {dict(enumerate(export.label_names))}.")
    return "\n".join(lines) + "\n"


def _loading_section(export: ExportFacts) -> str:
    auto = AUTO_CLASSES[export.task_type]
    load = f"model = {auto}.from_pretrained(path).eval()\n"
    if export.head is not None and export.label_names:
        names = ", ".join(f"{index}: {json.dumps(name)}" for index, name in enumerate(export.label_names))
        load = (
            f"id2label = {{{names}}}\nmodel = {auto}.from_pretrained(\n"
            "    path, id2label=id2label, label2id={name: i for i, name in id2label.items()}\n).eval()\n"
        )
    code = (
        f"from peft import {auto}\nfrom transformers import AutoTokenizer\n\n"
        f'path = "<this folder or its Hub repository>"\n{load}'
        "tokenizer = AutoTokenizer.from_pretrained(path)"
    )
    lines = ["## Loading", "", "```python", code, "```"]
    if not export.base_model:
        lines += [
            "",
            "With no base id, set `base_model_name_or_path` in `adapter_config.json` to a saved copy of the "
            "run's base model first, or build that model and pass it to `PeftModel.from_pretrained(base, path)`.",
        ]
    return "\n".join(lines) + "\n"


def _conditions_section(export: ExportFacts) -> str:
    lines = ["## Outputs equal softprompt-bench's when", ""]
    lines += [f"- {condition}" for condition in export.conditions]
    if export.virtual_outputs:
        lines.append(
            f"- PEFT returns the {export.virtual_outputs} virtual tokens' positions first: "
            f"`outputs.logits[:, {export.virtual_outputs}:]` are the real tokens'."
        )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def _identity_section(run: RunFacts | None) -> str:
    if run is None or not run.identity:
        return ""
    lines = ["## Run", ""] + [f"- {key}: `{value}`" for key, value in run.identity.items()]
    return "\n".join(lines) + "\n"
