"""Generation (decoder models): E2E NLG, WebNLG, XSum.

Every source is reduced to rows ``{"source": str, "references": [str, ...]}``; inputs that
occur on several rows (E2E: one row per reference) are grouped, so metrics see all references
of an input and training can use each of them as a target.

An input without a usable reference in a labeled file (a WebNLG entry whose every ``<lex>`` is
empty) is skipped with a one-line warning and counted (``skipped_<split>``), like XSum's
missing documents with ``skip_missing_documents``.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.tasks.base import (
    Built,
    FileRows,
    RawRow,
    TaskDataError,
    collect,
    data_dir,
    get_field,
    load_hub_dataset,
    parse_json,
    read_split_files,
    register_loader,
    utf8,
    warn,
)

XSUM_SECTION = re.compile(r"\[SN\](URL|TITLE|FIRST-SENTENCE|RESTBODY)\[SN\]")


def linearize_triples(triples: list[str], where: str) -> str:
    """WebNLG triples "s | p | o" -> "s : p : o | s : p : o" with underscores as spaces."""
    parts = []
    for triple in triples:
        pieces = [p.strip().replace("_", " ") for p in triple.split("|")]
        if len(pieces) != 3:
            raise TaskDataError(f"{where}: triple {triple!r} is not 'subject | predicate | object'")
        parts.append(" : ".join(pieces))
    return " | ".join(parts)


def group_by_source(rows: list[RawRow]) -> list[RawRow]:
    """Merge rows with the same source (first occurrence keeps its place and location)."""
    merged: dict[str, RawRow] = {}
    for where, row in rows:
        if row["source"] in merged:
            refs = merged[row["source"]][1]["references"]
            refs.extend(r for r in row["references"] if r not in refs)
        else:
            merged[row["source"]] = (
                where,
                {"source": row["source"], "references": list(dict.fromkeys(row["references"]))},
            )
    return list(merged.values())


def read_e2e_csv(path: Path, columns: dict) -> list[RawRow]:
    """E2E csv (``mr,ref``): one row per csv row; grouping happens afterwards."""
    rows = []
    with utf8(path), open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = {name.strip().lower(): name for name in reader.fieldnames or []}
        wanted = {key: header.get(str(col).lower()) for key, col in columns.items()}
        for key, col in wanted.items():
            if col is None:
                raise TaskDataError(f"{path}:1: missing column {columns[key]!r} (header {reader.fieldnames})")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            source, ref = row.get(wanted["source"]), row.get(wanted["reference"])
            for key, value in (("source", source), ("reference", ref)):
                if value is None or not value.strip():
                    raise TaskDataError(f"{where}: field {columns[key]!r} is empty")
            rows.append((where, {"source": source.strip(), "references": [ref.strip()]}))
    return rows


def _lex_text(lex: ET.Element) -> str:
    """Text of a <lex>: the <text> child in WebNLG 3.0, the element text in the 2017 release."""
    child = lex.find("text")
    return ((child.text if child is not None else lex.text) or "").strip()


def read_webnlg_dir(split_dir: Path) -> FileRows:
    """All entries of the WebNLG XML files under ``split_dir`` (``*triples/*.xml`` or test files).

    A file without any <lex> (the 2017 ``testdata_no_lex.xml`` next to ``testdata_with_lex.xml``)
    is input-only: it is left out and counted (note ``unlabeled_files``). In a labeled file, empty
    <lex> texts are dropped (``empty_lex``) and an entry left without reference is skipped
    (``skipped``), each with a one-line warning.
    """
    files = sorted(split_dir.rglob("*.xml"))
    if not files:
        raise TaskDataError(f"{split_dir}: missing file: no *.xml under this directory")
    rows: list[RawRow] = []
    notes: Counter = Counter(unlabeled_files=0, skipped=0, empty_lex=0)
    for path in files:
        entries = _webnlg_entries(path)
        if not any(lexes for _where, _source, lexes in entries):
            notes["unlabeled_files"] += 1
            warn(f"{path}: no <lex> in any of its {len(entries)} entries: input-only, left out")
            continue
        for where, source, lexes in entries:
            refs = [text for text in lexes if text]
            notes["empty_lex"] += len(lexes) - len(refs)
            if not refs:
                notes["skipped"] += 1
                warn(f"{where}: no usable reference ({len(lexes)} <lex>, all empty); entry skipped")
                continue
            if len(refs) < len(lexes):
                warn(f"{where}: {len(lexes) - len(refs)} empty <lex> of {len(lexes)} left out")
            rows.append((where, {"source": source, "references": refs}))
    return FileRows(rows, dict(notes))


def _webnlg_entries(path: Path) -> list[tuple[str, str, list[str]]]:
    """(where, linearised modified triples, <lex> texts) of each entry of one WebNLG XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise TaskDataError(
            f"{path}:{exc.position[0]}:{exc.position[1] + 1}: malformed XML: {str(exc).split(':')[0]}"
        ) from None
    entries = []
    for entry in root.iter("entry"):
        where = f"{path}: entry {entry.get('eid')}"
        tripleset = entry.find("modifiedtripleset")
        triples = [(t.text or "").strip() for t in tripleset.iter("mtriple")] if tripleset is not None else []
        if not triples:
            raise TaskDataError(f"{where}: missing field 'modifiedtripleset/mtriple'")
        lexes = [_lex_text(lex) for lex in entry.findall("lex")]
        entries.append((where, linearize_triples(triples, where), lexes))
    return entries


def _read_xsum_article(path: Path) -> dict:
    """One ``bbc-summary-data/<id>.summary`` file: summary = FIRST-SENTENCE, document = RESTBODY."""
    with utf8(path):
        parts = XSUM_SECTION.split(path.read_text(encoding="utf-8"))
    sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))
    for key in ("FIRST-SENTENCE", "RESTBODY"):
        if not sections.get(key):
            raise TaskDataError(f"{path}:1: missing field '[SN]{key}[SN]'")
    return {"source": sections["RESTBODY"], "references": [sections["FIRST-SENTENCE"]]}


def read_xsum_dir(base: Path, cfg: dict) -> tuple[dict[str, list[RawRow] | None], dict[str, int]]:
    """Original XSum release: the split json (ids per split) plus one .summary file per id.

    Returns the rows per split and, per split, how many listed ids had no file (only
    tolerated with ``skip_missing_documents: true``).
    """
    files = cfg.get("files") or {}
    split_file, doc_dir = base / files.get("split_ids", ""), base / files.get("documents", "")
    if not split_file.is_file() or not doc_dir.is_dir():
        raise TaskDataError(f"task {cfg['name']}: missing file: need {split_file} and {doc_dir}/")
    with utf8(split_file):
        ids = parse_json(split_file.read_text(encoding="utf-8"), split_file)
    if not isinstance(ids, dict):
        raise TaskDataError(f"{split_file}:1: expected a JSON object {{split: [ids]}}")
    out: dict[str, list[RawRow] | None] = {}
    skipped: dict[str, int] = {}
    for split in ("train", "validation", "test"):
        paths = [doc_dir / f"{i}.summary" for i in ids.get(split) or []]
        missing = [p for p in paths if not p.is_file()]
        if missing and not cfg.get("skip_missing_documents"):
            raise TaskDataError(
                f"{missing[0]}: missing file ({len(missing)} of split {split}; "
                f"set task.skip_missing_documents=true to skip and count them)"
            )
        skipped[f"skipped_{split}"] = len(missing)
        out[split] = [(str(p), _read_xsum_article(p)) for p in paths if p.is_file()] or None
    return out, skipped


def _hub_row(row: dict, where: str, cfg: dict) -> dict:
    """Hub row -> {"source", "references"} using ``hub_fields`` (source, target, references)."""
    fields = cfg.get("hub_fields") or {}
    source = get_field(row, fields.get("source", "source"), where, (str, list))
    source = linearize_triples(source, where) if isinstance(source, list) else source.strip()
    refs = [r for r in row.get(fields.get("references", "references")) or [] if r and r.strip()]
    target = row.get(fields.get("target", "target"))
    if not refs and target and str(target).strip():
        refs = [str(target).strip()]
    return {"source": source, "references": refs}


SplitRows = tuple[dict[str, list[RawRow] | None], dict[str, int]]
"""Rows per split from the files in data_dir (None: split absent) and the readers' notes."""


def _split_rows(cfg: dict, reader, empty_is_absent: bool = False) -> SplitRows:
    files, _counts, notes = read_split_files(cfg, reader)
    absent = [split for split, found in files.items() if found is None or (empty_is_absent and not found[0])]
    return {split: None if split in absent else files[split][0] for split in files}, notes


@register_loader("e2e")
def build_e2e(cfg: dict) -> Built:
    """Loader hook for ``loader: e2e`` (the CSV files in data_dir, else the Hub)."""
    columns = cfg.get("columns") or {"source": "mr", "reference": "ref"}
    return build(cfg, lambda: _split_rows(cfg, partial(read_e2e_csv, columns=columns)))


@register_loader("webnlg")
def build_webnlg(cfg: dict) -> Built:
    """Loader hook for ``loader: webnlg`` (the XML folders in data_dir, else the Hub)."""
    # a split whose files are all input-only (no <lex>) is absent, not empty
    return build(cfg, lambda: _split_rows(cfg, read_webnlg_dir, empty_is_absent=True))


@register_loader("xsum")
def build_xsum(cfg: dict) -> Built:
    """Loader hook for ``loader: xsum`` (the split ids and .summary files in data_dir, else the Hub)."""
    return build(cfg, lambda: read_xsum_dir(data_dir(cfg), cfg))


def build(cfg: dict, file_rows: Callable[[], SplitRows]) -> Built:
    """Splits of a generation task: ``file_rows()`` when data_dir is set, else the Hub rows."""
    extra: dict[str, int] = {}
    if cfg["data_dir"]:
        sources, extra = file_rows()
    else:
        sources = {
            split: [(w, _hub_row(row, w, cfg)) for w, row in rows]
            for split, (rows, _features) in load_hub_dataset(cfg).items()
        }
    splits: dict[str, list[dict] | None] = {}
    rows_read: dict[str, int] = {}
    for split, rows in sources.items():
        if rows is None:
            splits[split] = None
            continue
        rows_read[split] = len(rows)
        if cfg.get("group_by_source", True):
            rows = group_by_source(rows)
        splits[split] = collect(
            rows,
            lambda row, where: [(where, row, bool(row["references"]))],
            f"task {cfg['name']} split {split}",
            "references",
        )
    return Built(label_names=None, splits=splits, rows_read=rows_read, extra_counts=extra)
