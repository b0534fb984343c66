"""NER: CoNLL-2003, CoNLL-2004, OntoNotes 5.0 from CoNLL column files or the Hub.

Tags are BIO strings (``label_names``); examples carry one tag id per word. Aligning labels to
sub-tokens is the collator's job, not this module's.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bench.tasks.base import (Built, Item, Record, TaskDataError, collect,
                              feature_names, get_field, label_id, load_hub,
                              remap_ids, read_split_files)


def read_conll(path: Path) -> list[Record]:
    """Sentences of a CoNLL column file: token first, tag last, blank line between sentences.

    ``-DOCSTART-`` lines are document separators, not sentences.
    """
    records: list[Record] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            columns = line.split()
            if columns and columns[0] != "-DOCSTART-":
                if len(columns) < 2:
                    raise TaskDataError(f"{path}:{number}: expected 'token ... tag' columns, "
                                        f"got {line.strip()!r}")
                start = start or number
                tokens.append(columns[0])
                tags.append(columns[-1])
            elif tokens:
                records.append((f"{path}:{start}", {"tokens": tokens, "tags": tags}))
                tokens, tags, start = [], [], 0
    if tokens:
        records.append((f"{path}:{start}", {"tokens": tokens, "tags": tags}))
    return records


def to_bio(tags: list[str]) -> list[str]:
    """IOB1 -> BIO (IOB2): an I- tag that starts an entity becomes B-; BIO input is unchanged.

    The original CoNLL-2003 files are IOB1; seqeval and the Hub copies use BIO.
    """
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def _from_columns(row: dict, where: str, names: list[str]) -> Iterable[Item]:
    tags = [label_id(tag, names, where, "tag") for tag in to_bio(row["tags"])]
    yield where, {"tokens": row["tokens"], "tags": tags}, True


def _from_hub_tags(row: dict, where: str, cfg: dict, hub_names: list[str] | None) -> Iterable[Item]:
    fields = cfg.get("hub_fields") or {}
    tokens = get_field(row, fields.get("tokens", "tokens"), where, list)
    ids = get_field(row, fields.get("tags", "ner_tags"), where, list)
    if len(ids) != len(tokens) or not tokens:
        raise TaskDataError(f"{where}: field 'tags' has {len(ids)} tags for {len(tokens)} tokens")
    tags = remap_ids(ids, hub_names, cfg["label_names"], where, "tags")
    yield where, {"tokens": list(tokens), "tags": tags}, True


def _from_hub_spans(row: dict, where: str, cfg: dict, hub_names) -> Iterable[Item]:
    """Rows with entity spans (DFKI-SLT/conll04: {type, start, end-exclusive}) -> BIO tags."""
    tokens = get_field(row, "tokens", where, list)
    tags = ["O"] * len(tokens)
    for entity in get_field(row, "entities", where, list):
        kind = get_field(entity, "type", where, str)
        start, end = get_field(entity, "start", where, int), get_field(entity, "end", where, int)
        if not 0 <= start < end <= len(tokens) or any(t != "O" for t in tags[start:end]):
            raise TaskDataError(f"{where}: field 'entities' span {start}-{end} is out of range or overlaps")
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    ids = [label_id(tag, cfg["label_names"], where, "entities") for tag in tags]
    yield where, {"tokens": list(tokens), "tags": ids}, True


def build(cfg: dict) -> Built:
    """Loader hook for ``loader: conll`` (column files in data_dir, else the Hub)."""
    names = cfg.get("label_names")
    if not names or "O" not in names:
        raise TaskDataError(f"task {cfg['name']}: field 'label_names' must list the BIO tags incl. 'O'")
    splits: dict[str, list[dict] | None] = {}
    records: dict[str, int] = {}
    if cfg["data_dir"]:
        files, records = read_split_files(cfg, read_conll)
        for split, found in files.items():
            splits[split] = None if found is None else collect(
                found[0], lambda row, where: _from_columns(row, where, names), str(found[1]))
        return Built(label_names=names, splits=splits, records=records)
    convert = _from_hub_spans if cfg.get("hub_format") == "spans" else _from_hub_tags
    tag_field = (cfg.get("hub_fields") or {}).get("tags", "ner_tags")
    for split, (rows, features) in load_hub(cfg).items():
        hub_names = feature_names(features, tag_field)
        records[split] = len(rows)
        splits[split] = collect(rows, lambda row, where: convert(row, where, cfg, hub_names),
                                f"hub {cfg['hub'].get('path')}[{split}]")
    return Built(label_names=names, splits=splits, records=records)
