"""NER: CoNLL-2003, CoNLL-2004, OntoNotes 5.0 from CoNLL column files or the Hub.

Tags are BIO strings (``label_names``); examples carry one tag id per word. Aligning labels to
sub-tokens is the collator's job, not this module's.

Column files: one word per line, blank line between sentences, ``-DOCSTART-`` lines are
document separators. Every word line of a file has the same number of columns (the first word
line sets it), the token is column 0 and the tag is the column ``tag_column`` names for that
count: ``{2: 1, 4: 3}`` reads ``token tag`` and the original ``token POS chunk NER`` layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

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
    read_split_files,
    register_loader,
    remap_ids,
    utf8,
)


def tag_index(tag_column: int | Mapping, columns: int, where: str) -> int:
    """The tag's column for a file with ``columns`` columns (``tag_column``: an index or {count: index})."""
    if isinstance(tag_column, Mapping):
        chosen = {int(k): int(v) for k, v in tag_column.items()}.get(columns)
        if chosen is None:
            raise TaskDataError(
                f"{where}: {columns} columns, but task.tag_column only knows files "
                f"with {sorted(int(k) for k in tag_column)} columns"
            )
        return chosen
    index = int(tag_column)
    if not (1 <= index < columns or -columns < index < 0):
        raise TaskDataError(
            f"{where}: task.tag_column={index} is not a tag column of a {columns}-column file (column 0 is the token)"
        )
    return index


def read_conll(path: Path, tag_column: int | Mapping = -1) -> list[RawRow]:
    """Sentences of a CoNLL column file: ``{"tokens", "tags", "file", "lines"}`` per sentence."""
    rows: list[RawRow] = []
    tokens, tags, lines = [], [], []
    width = index = 0
    with utf8(path), open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            columns = line.split()
            if columns and columns[0] != "-DOCSTART-":
                if not width:  # the first word line fixes the file's layout
                    width = len(columns)
                    index = tag_index(tag_column, width, f"{path}:{number}")
                if len(columns) != width or width < 2:
                    raise TaskDataError(
                        f"{path}:{number}: {len(columns)} columns, expected {width} "
                        f"like the file's first word line (token ... tag): {line.strip()!r}"
                    )
                tokens.append(columns[0])
                tags.append(columns[index])
                lines.append(number)
            elif tokens:
                rows.append((f"{path}:{lines[0]}", {"tokens": tokens, "tags": tags, "file": str(path), "lines": lines}))
                tokens, tags, lines = [], [], []
    if tokens:
        rows.append((f"{path}:{lines[0]}", {"tokens": tokens, "tags": tags, "file": str(path), "lines": lines}))
    return rows


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
    # Check the tags as written (before IOB1 -> BIO) so an error names the file's own line and value.
    for tag, line in zip(row["tags"], row["lines"]):
        if tag not in names:
            raise TaskDataError(f"{row['file']}:{line}: tag {tag!r} is not one of {names}")
    tags = [names.index(tag) for tag in to_bio(row["tags"])]
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


@register_loader("conll")
def build(cfg: dict) -> Built:
    """Loader hook for ``loader: conll`` (column files in data_dir, else the Hub)."""
    names = cfg.get("label_names")
    if not names or "O" not in names:
        raise TaskDataError(f"task {cfg['name']}: field 'label_names' must list the BIO tags incl. 'O'")
    splits: dict[str, list[dict] | None] = {}
    rows_read: dict[str, int] = {}
    if cfg["data_dir"]:
        reader = partial(read_conll, tag_column=cfg.get("tag_column", -1))
        files, rows_read, _notes = read_split_files(cfg, reader)
        for split, found in files.items():
            splits[split] = (
                None
                if found is None
                else collect(found[0], lambda row, where: _from_columns(row, where, names), str(found[1]))
            )
        return Built(label_names=names, splits=splits, rows_read=rows_read)
    convert = _from_hub_spans if cfg.get("hub_format") == "spans" else _from_hub_tags
    tag_field = (cfg.get("hub_fields") or {}).get("tags", "ner_tags")
    for split, (rows, features) in load_hub_dataset(cfg).items():
        hub_names = feature_names(features, tag_field)
        rows_read[split] = len(rows)
        splits[split] = collect(
            rows, partial(convert, cfg=cfg, hub_names=hub_names), f"hub {cfg['hub'].get('path')}[{split}]"
        )
    return Built(label_names=names, splits=splits, rows_read=rows_read)
