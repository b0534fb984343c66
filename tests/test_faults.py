"""Hostile input, second round (issue 26): each error names the file and the line it is about."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from bench.tasks.base import TaskDataError, parse_json, read_jsonl
from bench.tasks.generation import _read_xsum_article, read_e2e_csv, read_webnlg_dir, read_xsum_dir
from bench.tasks.ner import read_conll
from tests.test_tasks import WEBNLG_3


def test_a_truncated_jsonl_line_is_named_by_its_own_number(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3\n{"a": 4}\n', encoding="utf-8")  # line 3 cut short
    with pytest.raises(TaskDataError) as raised:
        read_jsonl(path)
    assert str(raised.value) == f"{path}:3:8: malformed JSON: Expecting ',' delimiter"


def test_a_truncated_json_file_is_named_at_its_last_line(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    with pytest.raises(TaskDataError) as raised:
        parse_json('{"train": ["1",\n "2"\n', path)
    assert str(raised.value) == f"{path}:2:5: malformed JSON: Expecting ',' delimiter"


# every file reader of the tasks, each on a file with one byte UTF-8 cannot decode at line 2, column 5
READERS = {
    "jsonl": ("train.jsonl", '{"a": 1}\n{"a": "\0"}\n', read_jsonl),
    "conll": ("train.txt", "EU B-ORG\nrejec\0 O\n", read_conll),
    "e2e": ("trainset.csv", "mr,ref\na,b\0\n", partial(read_e2e_csv, columns={"source": "mr", "reference": "ref"})),
    "xsum": ("1.summary", "[SN]URL[SN]\nhttp\0\n", _read_xsum_article),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_undecodable_bytes_are_named_by_file_line_and_column(name: str, tmp_path: Path) -> None:
    file_name, text, reader = READERS[name]
    path = tmp_path / file_name
    path.write_bytes(text.encode("utf-8").replace(b"\0", b"\xe9"))  # latin-1 é
    with pytest.raises(TaskDataError) as raised:
        reader(path)
    column = text.splitlines()[1].index("\0") + 1
    assert str(raised.value).startswith(f"{path}:2:{column}: not UTF-8 text (byte 0xe9: invalid continuation byte")


def test_an_undecodable_xsum_split_file_is_named(tmp_path: Path) -> None:
    split = tmp_path / "split.json"
    split.write_bytes(b'{"train":\n ["caf\xe9"]}\n')
    (tmp_path / "docs").mkdir()
    with pytest.raises(TaskDataError) as raised:
        read_xsum_dir(tmp_path, {"name": "xsum", "files": {"split_ids": "split.json", "documents": "docs"}})
    assert str(raised.value).startswith(f"{split}:2:7: not UTF-8 text")


def test_undecodable_bytes_deep_in_a_large_file_name_the_right_line(tmp_path: Path) -> None:
    """The codec's own message counts from the start of the chunk it was handed; the line is the file's."""
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": "x" * 40, "n": n}) for n in range(5000)]
    data = "\n".join(lines).encode() + b'\n{"text": "\xff"}\n'
    path.write_bytes(data)
    with pytest.raises(TaskDataError) as raised:
        read_jsonl(path)
    assert str(raised.value).startswith(f"{path}:5001:11: not UTF-8 text (byte 0xff")


def test_a_webnlg_file_without_any_lex_is_left_out_with_a_warning(tmp_path: Path, capsys) -> None:
    no_lex = WEBNLG_3.replace(
        '<lex comment="good" lid="Id1"><sortedtripleset/><text>Bread comes from '
        "France, whose capital is Paris.</text></lex>",
        "",
    )
    (tmp_path / "with.xml").write_text(WEBNLG_3, encoding="utf-8")
    (tmp_path / "without.xml").write_text(no_lex, encoding="utf-8")
    read = read_webnlg_dir(tmp_path)
    assert len(read.rows) == 1 and read.notes["unlabeled_files"] == 1
    expected = f"warning: {tmp_path / 'without.xml'}: no <lex> in any of its 1 entries: input-only, left out"
    assert expected in capsys.readouterr().err.splitlines()


def test_a_removed_choice_is_named_in_one_line() -> None:
    from bench.search import missing_extra

    line = missing_extra(["-m", "method=lora", "hydra/sweeper=optuna"])
    assert line is not None and "python -m bench.search" in line and "\n" not in line
    assert missing_extra(["-m", "method=lora"]) is None


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_records_cache_entries_and_checkpoint_files_honour_the_umask(umask: int, tmp_path: Path) -> None:
    import os

    from bench.cache import write_entry
    from bench.checkpoint import _write_json
    from bench.data import Encoded
    from bench.record import write_record

    previous = os.umask(umask)
    try:
        written = [
            write_record({"status": "ok"}, tmp_path / "result.json"),
            tmp_path / "entry.json",
            tmp_path / "state.json",
        ]
        write_entry(written[1], "key", Encoded([], 0, 0))
        _write_json(written[2], {"step": 1})
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~umask)}
