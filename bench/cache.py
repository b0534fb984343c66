"""On-disk cache of tokenised splits, so a sweep tokenises each (task, tokenizer, length) once.

Entries are plain JSON (``<key>.json``): reading one can never run code, unlike a pickle that
anyone with write access to the cache folder could plant. An entry that cannot be read, or
whose content does not match its key and shape, is rebuilt with a one-line notice.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.data import Encoded, cache_key, encode_split
from bench.models import CACHE_DIR
from bench.record import honour_umask

TOKENIZED_DIR = CACHE_DIR / "tokenized"
CACHE_FORMAT = 1  # bump when the entry layout changes


class CacheEntryError(ValueError):
    """A cache entry is unreadable or does not match what was asked for."""


def cached_encode(task, tokenizer, split: str, max_length: int, decoder: bool, seq2seq: bool = False) -> Encoded:
    """Tokenise a split, or read it back from a previous run with the same key."""
    if os.environ.get("SOFTPROMPT_NO_CACHE"):
        return encode_split(task, tokenizer, split, max_length, decoder, seq2seq)
    key = cache_key(task, tokenizer, split, max_length, seq2seq)
    path = TOKENIZED_DIR / f"{key}.json"
    if path.exists():
        try:
            return read_entry(path, key)
        except CacheEntryError as error:
            print(f"notice: tokenisation cache entry {path} {error}; rebuilding it", file=sys.stderr, flush=True)
    encoded = encode_split(task, tokenizer, split, max_length, decoder, seq2seq)
    write_entry(path, key, encoded)
    return encoded


def write_entry(path: Path, key: str, encoded: Encoded) -> None:
    """Write an entry atomically (a killed run never leaves half a file under the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CACHE_FORMAT,
        "key": key,
        "truncated": encoded.truncated,
        "real_tokens": encoded.real_tokens,
        "features": encoded.features,
    }
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    honour_umask(handle)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(payload, out, separators=(",", ":"))
    os.replace(temp, path)


def read_entry(path: Path, key: str) -> Encoded:
    """Read an entry back; CacheEntryError when it is unreadable or not the entry for ``key``."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CacheEntryError(f"is unreadable ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        raise CacheEntryError("does not match its key or format")
    counts = (payload.get("truncated"), payload.get("real_tokens"))
    features = payload.get("features")
    if not all(isinstance(c, int) and c >= 0 for c in counts) or not _valid_features(features):
        raise CacheEntryError("has malformed content")
    return Encoded(features, *counts)


def _valid_features(features: Any) -> bool:
    """Every feature is a dict with integer ``input_ids`` (flat or per choice) and ``labels``."""
    if not isinstance(features, list):
        return False
    for feature in features:
        if not isinstance(feature, dict) or "labels" not in feature:
            return False
        ids = feature.get("input_ids")
        if not isinstance(ids, list) or not ids:
            return False
        rows = ids if isinstance(ids[0], list) else [ids]
        if not all(isinstance(row, list) and all(type(t) is int for t in row) for row in rows):
            return False
    return True
