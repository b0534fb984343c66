"""The tokenisation cache: JSON entries that cannot run code, rebuilt when unreadable or mismatched."""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path

import pytest

from bench import cache
from bench.data import cache_key
from bench.tasks import load_task, task_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from bench.models import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "TOKENIZED_DIR", tmp_path / "tokenized")
    monkeypatch.delenv("SOFTPROMPT_NO_CACHE", raising=False)
    return tmp_path / "tokenized"


def encode(task, tokenizer, split="train"):
    return cache.cached_encode(task, tokenizer, split, 64, decoder=False)


class PlantedCode:
    """A pickle that writes a file when unpickled: what a planted cache entry could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("name", ["synth_cls", "synth_ner", "synth_d2t"])
def test_entries_round_trip_without_re_encoding(name, tokenizer, cache_dir, monkeypatch):
    task = load_task(task_config(name, n_train=12, n_validation=4, n_test=0))
    if task.kind == "generation":  # as bench.models.load_tiny does for decoders: [SEP] ends a target
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.eos_token = tokenizer.sep_token
    first = encode(task, tokenizer)
    entry = cache_dir / f"{cache_key(task, tokenizer, 'train', 64)}.json"
    assert json.loads(entry.read_text())["features"] == first.features

    def refuse(*args):
        raise AssertionError("re-encoded although a valid entry exists")

    monkeypatch.setattr(cache, "encode_split", refuse)
    assert encode(task, tokenizer) == first


@pytest.mark.parametrize(
    "content",
    [
        "planted pickle",
        b"\x80\x04K\x07.",
        "7",
        '{"format": 1, "key": "other"}',
        "{not json",
        '{"format": 1, "key": "KEY", "truncated": 0, "real_tokens": 1, '
        '"features": [{"input_ids": ["x"], "labels": 1}]}',
    ],
)
def test_unreadable_or_mismatched_entries_are_rebuilt_with_one_notice(content, tokenizer, cache_dir, tmp_path, capsys):
    task = load_task(task_config("synth_cls", n_train=12, n_validation=4, n_test=0))
    key = cache_key(task, tokenizer, "train", 64)
    entry = cache_dir / f"{key}.json"
    entry.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    if content == "planted pickle":
        entry.write_bytes(pickle.dumps(PlantedCode(marker)))
    elif isinstance(content, bytes):
        entry.write_bytes(content)  # a valid pickle of the wrong type (the int 7)
    else:
        entry.write_text(content.replace("KEY", key))
    encoded = encode(task, tokenizer)
    assert not marker.exists()
    notices = capsys.readouterr().err.strip().splitlines()
    assert len(notices) == 1 and notices[0].startswith(f"notice: tokenisation cache entry {entry} ")
    assert notices[0].endswith("; rebuilding it")
    assert len(encoded.features) == 12
    assert json.loads(entry.read_text())["key"] == key  # the rebuilt entry replaced the bad one


def test_no_code_unpickles_or_torch_loads_files():
    """Files a user did not write must never be deserialised with a format that can run code."""
    unsafe = re.compile(
        r"pickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True|read_pickle\(|"
        r"joblib\.load\(|dill\.loads?\(|cloudpickle|marshal\.loads?\("
    )
    found = []
    for folder in ("bench", "methods"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if unsafe.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_one_gguf_parse_shares_a_reader_per_file_and_restores_gguf(monkeypatch) -> None:
    """SmolLM2's one-time dequantisation opens its GGUF three times; inside the block each file is parsed once."""
    import gguf

    from bench.models import _one_gguf_parse

    opened = []

    class FakeReader:
        def __init__(self, path, mode="r"):
            opened.append((str(path), mode))

    monkeypatch.setattr(gguf, "GGUFReader", FakeReader)
    with _one_gguf_parse():
        first, again, other = gguf.GGUFReader("a.gguf"), gguf.GGUFReader("a.gguf"), gguf.GGUFReader("b.gguf")
    assert first is again and other is not first
    assert opened == [("a.gguf", "r"), ("b.gguf", "r")]
    assert gguf.GGUFReader is FakeReader  # the library is left as it was
    gguf.GGUFReader("a.gguf")
    assert len(opened) == 3  # outside the block every open parses again
