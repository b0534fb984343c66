"""Generation (decoder models): E2E NLG, WebNLG, XSum.

Every source is reduced to records ``{"source": str, "references": [str, ...]}``; inputs that
occur on several rows (E2E: one row per reference) are grouped, so metrics see all references
of an input and training can use each of them as a target.
"""
from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.tasks.base import (Built, Record, TaskDataError, collect, data_dir, find_split_files,
                              get_field, load_hub)

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


def group_by_source(records: list[Record]) -> list[Record]:
    """Merge records with the same source (first occurrence keeps its place and location)."""
    merged: dict[str, Record] = {}
    for where, row in records:
        if row["source"] in merged:
            refs = merged[row["source"]][1]["references"]
            refs.extend(r for r in row["references"] if r not in refs)
        else:
            merged[row["source"]] = (where, {"source": row["source"],
                                             "references": list(dict.fromkeys(row["references"]))})
    return list(merged.values())


def read_e2e_csv(path: Path, columns: dict) -> list[Record]:
    """E2E csv (``mr,ref``): one record per row; grouping happens afterwards."""
    records = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
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
            records.append((where, {"source": source.strip(), "references": [ref.strip()]}))
    return records


def _lex_text(lex: ET.Element) -> str:
    """Text of a <lex>: the <text> child in WebNLG 3.0, the element text in the 2017 release."""
    child = lex.find("text")
    return ((child.text if child is not None else lex.text) or "").strip()


def read_webnlg_dir(split_dir: Path) -> tuple[list[Record], int]:
    """All entries of the WebNLG XML files under ``split_dir`` (``*triples/*.xml`` or test files).

    A file without any <lex> (the 2017 ``testdata_no_lex.xml`` next to ``testdata_with_lex.xml``)
    is input-only: it is left out and counted, the second value returned.
    """
    files = sorted(split_dir.rglob("*.xml"))
    if not files:
        raise TaskDataError(f"{split_dir}: missing file: no *.xml under this directory")
    records: list[Record] = []
    unlabeled_files = 0
    for path in files:
        file_records = _webnlg_file(path)
        if any(row["references"] for _where, row in file_records):
            records += file_records
        else:
            unlabeled_files += 1
    return records, unlabeled_files


def _webnlg_file(path: Path) -> list[Record]:
    """Entries of one WebNLG XML file: linearised modified triples and their <lex> texts."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise TaskDataError(f"{path}:{exc.position[0]}: malformed XML ({exc})") from None
    records = []
    for entry in root.iter("entry"):
        where = f"{path} entry eid={entry.get('eid')}"
        tripleset = entry.find("modifiedtripleset")
        triples = [(t.text or "").strip() for t in tripleset.iter("mtriple")] if tripleset is not None else []
        if not triples:
            raise TaskDataError(f"{where}: missing field 'modifiedtripleset/mtriple'")
        refs = [_lex_text(lex) for lex in entry.findall("lex")]
        if any(not ref for ref in refs):
            raise TaskDataError(f"{where}: field 'lex' is empty")
        records.append((where, {"source": linearize_triples(triples, where), "references": refs}))
    return records


def _read_xsum_article(path: Path) -> dict:
    """One ``bbc-summary-data/<id>.summary`` file: summary = FIRST-SENTENCE, document = RESTBODY."""
    parts = XSUM_SECTION.split(path.read_text(encoding="utf-8"))
    sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))
    for key in ("FIRST-SENTENCE", "RESTBODY"):
        if not sections.get(key):
            raise TaskDataError(f"{path}:1: missing field '[SN]{key}[SN]'")
    return {"source": sections["RESTBODY"], "references": [sections["FIRST-SENTENCE"]]}


def read_xsum_dir(base: Path, cfg: dict) -> tuple[dict[str, list[Record] | None], dict[str, int]]:
    """Original XSum release: the split json (ids per split) plus one .summary file per id.

    Returns the records per split and, per split, how many listed ids had no file (only
    tolerated with ``skip_missing_documents: true``).
    """
    files = cfg.get("files") or {}
    split_file, doc_dir = base / files.get("split_ids", ""), base / files.get("documents", "")
    if not split_file.is_file() or not doc_dir.is_dir():
        raise TaskDataError(f"task {cfg['name']}: missing file: need {split_file} and {doc_dir}/")
    try:
        ids = json.loads(split_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TaskDataError(f"{split_file}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    out: dict[str, list[Record] | None] = {}
    skipped: dict[str, int] = {}
    for split in ("train", "validation", "test"):
        paths = [doc_dir / f"{i}.summary" for i in ids.get(split) or []]
        missing = [p for p in paths if not p.is_file()]
        if missing and not cfg.get("skip_missing_documents"):
            raise TaskDataError(f"{missing[0]}: missing file ({len(missing)} of split {split}; "
                                f"set task.skip_missing_documents=true to skip and count them)")
        skipped[f"skipped_{split}"] = len(missing)
        out[split] = [(str(p), _read_xsum_article(p)) for p in paths if p.is_file()] or None
    return out, skipped


def _hub_record(row: dict, where: str, cfg: dict) -> dict:
    """Hub row -> {"source", "references"} using ``hub_fields`` (source, target, references)."""
    fields = cfg.get("hub_fields") or {}
    source = get_field(row, fields.get("source", "source"), where, (str, list))
    source = linearize_triples(source, where) if isinstance(source, list) else source.strip()
    refs = [r for r in row.get(fields.get("references", "references")) or [] if r and r.strip()]
    target = row.get(fields.get("target", "target"))
    if not refs and target and str(target).strip():
        refs = [str(target).strip()]
    return {"source": source, "references": refs}


def _file_records(cfg: dict) -> tuple[dict[str, list[Record] | None], dict[str, int]]:
    base = data_dir(cfg)
    if cfg["loader"] == "xsum":
        return read_xsum_dir(base, cfg)
    out: dict[str, list[Record] | None] = {}
    extra: dict[str, int] = {}
    for split, path in find_split_files(cfg, base).items():
        if path is None:
            out[split] = None
        elif cfg["loader"] == "e2e":
            out[split] = read_e2e_csv(path, cfg.get("columns") or {"source": "mr", "reference": "ref"})
        else:
            out[split], extra[f"unlabeled_files_{split}"] = read_webnlg_dir(path)
            out[split] = out[split] or None  # only input-only files: the split is unlabeled
    return out, extra


def build(cfg: dict) -> Built:
    """Loader hook for ``loader: e2e | webnlg | xsum`` (original files in data_dir, else the Hub)."""
    extra: dict[str, int] = {}
    if cfg["data_dir"]:
        sources, extra = _file_records(cfg)
    else:
        sources = {split: [(w, _hub_record(row, w, cfg)) for w, row in rows]
                   for split, (rows, _features) in load_hub(cfg).items()}
    splits: dict[str, list[dict] | None] = {}
    records: dict[str, int] = {}
    for split, rows in sources.items():
        if rows is None:
            splits[split] = None
            continue
        records[split] = len(rows)
        if cfg.get("group_by_source", True):
            rows = group_by_source(rows)
        splits[split] = collect(rows, lambda row, where: [(where, row, bool(row["references"]))],
                                f"task {cfg['name']} split {split}", "references")
    return Built(label_names=None, splits=splits, records=records, extra_counts=extra)
