"""SuperGLUE: BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC, ReCoRD.

Original jsonl files (nested MultiRC/ReCoRD/WSC records) are first flattened to the row schema
of the Hub parquet copy (aps/super_glue), so one converter per task serves both sources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import partial

from bench.tasks.base import (
    Built,
    Item,
    RawRow,
    TaskDataError,
    collect,
    feature_names,
    get_field,
    label_id,
    load_hub_dataset,
    normalize_word,
    read_jsonl,
    read_split_files,
    register_loader,
)

COPA_CONNECTIVE = {"cause": "because", "effect": "so"}
# task.input_format=t5: the fields T5 writes as "<task> <field>: <value> ...", in T5's order. T5's glue
# preprocessor (t5/data/preprocessors.py, ``glue``) sorts the dataset's feature names unless
# t5/data/glue_utils.py gives an order (MultiRC, WiC); it drops label and idx. COPA, WSC and ReCoRD have
# their own T5 preprocessors and are not written in this format here.
T5_FIELDS = {
    "boolq": ("passage", "question"),
    "cb": ("hypothesis", "premise"),
    "rte": ("hypothesis", "premise"),
    "wic": ("sentence1", "sentence2", "word"),
    "multirc": ("question", "answer", "paragraph"),
}


# ---------------------------------------------------------------- jsonl -> Hub row schema
def _flatten_multirc(row: dict, where: str) -> Iterator[RawRow]:
    passage = get_field(row, "passage", where, dict)
    text = get_field(passage, "text", where, str)
    for question in get_field(passage, "questions", where, list):
        for answer in get_field(question, "answers", where, list):
            yield (
                where,
                {
                    "paragraph": text,
                    "question": get_field(question, "question", where, str),
                    "answer": get_field(answer, "text", where, str),
                    "idx": {"paragraph": row.get("idx"), "question": question.get("idx"), "answer": answer.get("idx")},
                    "label": answer.get("label"),
                },
            )


def _flatten_record_task(row: dict, where: str) -> Iterator[RawRow]:
    passage = get_field(row, "passage", where, dict)
    text = get_field(passage, "text", where, str)
    names = []
    for span in get_field(passage, "entities", where, list):
        start, end = get_field(span, "start", where, int), get_field(span, "end", where, int)
        if not 0 <= start <= end < len(text):  # ReCoRD offsets are inclusive
            raise TaskDataError(f"{where}: field 'entities' span {start}-{end} outside the passage")
        names.append(text[start : end + 1])
    # Same passage clean-up as the Hub copy, so both sources give identical inputs.
    text = text.replace("@highlight\n", "- ")
    for qa in get_field(row, "qas", where, list):
        answers = [get_field(a, "text", where, str) for a in qa.get("answers") or []]
        yield (
            where,
            {
                "passage": text,
                "query": get_field(qa, "query", where, str),
                "entities": sorted(set(names)),
                "answers": answers,
                "idx": {"passage": row.get("idx"), "query": qa.get("idx")},
            },
        )


def _flatten_wsc(row: dict, where: str) -> Iterator[RawRow]:
    target = row.get("target")
    yield where, ({**row, **target} if isinstance(target, dict) else row)


FLATTEN = {"multirc": _flatten_multirc, "record": _flatten_record_task, "wsc": _flatten_wsc}


# ---------------------------------------------------------------- span markers
def _align(words: list[str], index: int, span: str, where: str, key: str) -> int:
    """Word index of ``span`` near ``index``; the release has a few spans off by one word."""
    target = [normalize_word(w) for w in span.split()]
    for start in (index, index - 1, index + 1) if target else ():
        got = [normalize_word(w) for w in words[max(start, 0) : start + len(target)]]
        if start >= 0 and len(got) == len(target) and all(g == t or g.startswith(t) for g, t in zip(got, target)):
            return start
    raise TaskDataError(f"{where}: field '{key}_text' {span!r} does not match the words at {key}_index {index}")


def _span_end(words: list[str], start: int, span: str) -> tuple[int, int]:
    """(index of the span's last word, where in that word the span ends: before trailing punctuation)."""
    last_word = span.split()[-1]
    end = start + len(span.split()) - 1
    cut = len(last_word) if words[end].lower().startswith(last_word.lower()) else len(words[end])
    return end, cut


def mark_wsc(text: str, row: dict, where: str) -> str:
    """Mark the candidate noun phrase as *span* and the pronoun as #span# in the WSC text.

    Spans may overlap ("their mothers" / "their"): marks nest, the longer span outside, so the
    text reads ``*#their# mothers*``.
    """
    words = text.split()
    spans = []  # (start word, end word, cut in the end word, mark)
    for key, mark in (("span1", "*"), ("span2", "#")):
        span = get_field(row, f"{key}_text", where, str)
        start = _align(words, get_field(row, f"{key}_index", where, int), span, where, key)
        spans.append((start, *_span_end(words, start, span), mark))
    spans.sort(key=lambda s: (s[0], -s[1]))  # outer (earlier start, later end) first
    opens: dict[int, str] = {}
    closes: dict[int, dict[int, str]] = {}  # end word -> cut -> marks
    for start, end, cut, mark in spans:
        opens[start] = opens.get(start, "") + mark  # outer opens first
        at_end = closes.setdefault(end, {})
        at_end[cut] = mark + at_end.get(cut, "")  # inner closes first
    for end, marks in closes.items():
        for cut in sorted(marks, reverse=True):  # right-most first keeps the other cuts valid
            words[end] = words[end][:cut] + marks[cut] + words[end][cut:]
    for start, marks in opens.items():
        words[start] = marks + words[start]
    return " ".join(words)


def mark_chars(sentence: str, start: int, end: int, where: str, key: str) -> str:
    """Mark sentence[start:end] (WiC character offsets) as *word*."""
    if not 0 <= start < end <= len(sentence):
        raise TaskDataError(f"{where}: field 'start{key}'/'end{key}' ({start}, {end}) outside the sentence")
    return f"{sentence[:start]}*{sentence[start:end]}*{sentence[end:]}"


def t5_input(subset: str, row: dict, where: str) -> str:
    """T5's SuperGLUE input for one row: ``rte hypothesis: … premise: …`` (MultiRC without its HTML)."""
    parts = [subset] + [f"{name}: {get_field(row, name, where, str)}" for name in T5_FIELDS[subset]]
    text = " ".join(parts)
    if subset == "multirc":  # as T5's preprocessor: <br> becomes a space, <b> and </b> go
        text = re.sub(r"</?b>", "", text.replace("<br>", " "))
    return text


def _t5_format(convert, subset: str):
    """Wrap a converter: each example's input becomes T5's one text (no text pair); labels unchanged."""

    def wrapped(row: dict, where: str, **kwargs) -> Iterable[Item]:
        for item_where, example, labeled in convert(row, where, **kwargs):
            yield item_where, {**example, "text": t5_input(subset, row, where), "text_pair": None}, labeled

    return wrapped


# ---------------------------------------------------------------- row -> example converters
def _classification(text: str, pair: str | None, label: int | None, where: str, **extra) -> Item:
    return where, {"text": text, "text_pair": pair, "label": label, **extra}, label is not None


def _pair_converter(first: str, second: str):
    """Converter for plain sentence-pair tasks (BoolQ, CB, RTE)."""

    def convert(row: dict, where: str, names: list[str], hub_names) -> Iterable[Item]:
        label = _label(row, names, hub_names, where)
        yield _classification(
            get_field(row, first, where, str), get_field(row, second, where, str), label, where, id=row.get("idx")
        )

    return convert


def _label(row: dict, names: list[str], hub_names: list[str] | None, where: str) -> int | None:
    value = row.get("label")
    if hub_names and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = hub_names[value] if value < len(hub_names) else value
    return label_id(value, names, where)


def _wic(row: dict, where: str, names: list[str], hub_names) -> Iterable[Item]:
    marked = [
        mark_chars(
            get_field(row, f"sentence{i}", where, str),
            get_field(row, f"start{i}", where, int),
            get_field(row, f"end{i}", where, int),
            where,
            str(i),
        )
        for i in (1, 2)
    ]
    yield _classification(
        marked[0], marked[1], _label(row, names, hub_names, where), where, id=row.get("idx"), word=row.get("word")
    )


def _wsc(row: dict, where: str, names: list[str], hub_names) -> Iterable[Item]:
    text = mark_wsc(get_field(row, "text", where, str), row, where)
    yield _classification(text, None, _label(row, names, hub_names, where), where, id=row.get("idx"))


def _multirc(row: dict, where: str, names: list[str], hub_names) -> Iterable[Item]:
    idx = get_field(row, "idx", where, dict)
    pair = f"{get_field(row, 'question', where, str)} {get_field(row, 'answer', where, str)}"
    yield _classification(
        get_field(row, "paragraph", where, str),
        pair,
        _label(row, names, hub_names, where),
        where,
        group=f"{idx.get('paragraph')}-{idx.get('question')}",
    )


def _copa(row: dict, where: str, names, hub_names) -> Iterable[Item]:
    question = get_field(row, "question", where, str)
    if question not in COPA_CONNECTIVE:
        raise TaskDataError(f"{where}: field 'question' is {question!r}, expected cause/effect")
    premise = get_field(row, "premise", where, str)
    pairs = [[premise, f"{COPA_CONNECTIVE[question]} {get_field(row, c, where, str)}"] for c in ("choice1", "choice2")]
    label = label_id(row.get("label"), ["0", "1"], where)
    yield where, {"pairs": pairs, "label": label, "id": row.get("idx")}, label is not None


def _record_task(row: dict, where: str, names, hub_names) -> Iterable[Item]:
    entities = list(dict.fromkeys(get_field(row, "entities", where, list)))
    if not entities:
        raise TaskDataError(f"{where}: field 'entities' is empty")
    query = get_field(row, "query", where, str)
    if "@placeholder" not in query:
        raise TaskDataError(f"{where}: field 'query' has no @placeholder")
    answers = list(dict.fromkeys(row.get("answers") or []))
    passage = get_field(row, "passage", where, str)
    pairs = [[passage, query.replace("@placeholder", e)] for e in entities]
    if not answers:
        yield where, {"pairs": pairs, "label": None, "answers": [], "entities": entities}, False
        return
    label = next((i for i, e in enumerate(entities) if e in answers), None)
    if label is None:
        raise TaskDataError(f"{where}: field 'answers' {answers} matches no candidate entity")
    yield where, {"pairs": pairs, "label": label, "answers": answers, "entities": entities, "id": row.get("idx")}, True


CONVERTERS = {
    "boolq": _pair_converter("question", "passage"),
    "cb": _pair_converter("premise", "hypothesis"),
    "rte": _pair_converter("premise", "hypothesis"),
    "wic": _wic,
    "wsc": _wsc,
    "multirc": _multirc,
    "copa": _copa,
    "record": _record_task,
}


def _source_records(cfg: dict) -> tuple[dict[str, tuple[list[RawRow], list[str] | None, str] | None], dict[str, int]]:
    """Per split: (records in Hub row schema, Hub class names, source label) or None; raw counts."""
    out: dict[str, tuple[list[RawRow], list[str] | None, str] | None] = {}
    counts: dict[str, int] = {}
    if cfg["data_dir"]:
        flatten = FLATTEN.get(cfg["subset"])
        files, counts, _notes = read_split_files(cfg, read_jsonl)
        for split, found in files.items():
            if found is None:
                out[split] = None
                continue
            rows, path = found
            if flatten:
                rows = [flat for where, row in rows for flat in flatten(row, where)]
            out[split] = (rows, None, str(path))
        return out, counts
    for split, (rows, features) in load_hub_dataset(cfg).items():
        out[split] = (rows, feature_names(features, "label"), f"hub {cfg['hub'].get('path')}[{split}]")
        counts[split] = len(rows)
    return out, counts


@register_loader("superglue")
def build(cfg: dict) -> Built:
    """Loader hook for ``loader: superglue`` (``subset`` picks the task)."""
    subset = cfg.get("subset")
    if subset not in CONVERTERS:
        raise TaskDataError(f"task {cfg['name']}: field 'subset' is {subset!r}, expected one of {sorted(CONVERTERS)}")
    convert, names = CONVERTERS[subset], cfg.get("label_names")
    if cfg.get("input_format", "plain") == "t5":
        if subset not in T5_FIELDS:
            raise TaskDataError(
                f"task {cfg['name']}: field 'input_format' t5 is written for {sorted(T5_FIELDS)} only, not {subset!r}"
            )
        convert = _t5_format(convert, subset)
    sources, counts = _source_records(cfg)
    splits: dict[str, list[dict] | None] = {}
    for split, source in sources.items():
        if source is None:
            splits[split] = None
            continue
        rows, hub_names, label = source
        splits[split] = collect(
            rows,
            partial(convert, names=names, hub_names=hub_names),
            label,
            "answers" if subset == "record" else "label",
        )
    return Built(label_names=names, splits=splits, rows_read=counts)
