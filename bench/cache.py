"""On-disk cache of tokenised splits, so a sweep tokenises each (task, tokenizer, length) once."""
from __future__ import annotations

import os
import pickle
import tempfile

from bench.data import Encoded, cache_key, encode_split
from bench.models import CACHE_DIR

TOKENIZED_DIR = CACHE_DIR / "tokenized"


def cached_encode(task, tokenizer, split: str, max_length: int, decoder: bool) -> Encoded:
    """Tokenise a split, or read it back from a previous run with the same key."""
    if os.environ.get("SOFTPROMPT_NO_CACHE"):
        return encode_split(task, tokenizer, split, max_length, decoder)
    path = TOKENIZED_DIR / f"{cache_key(task, tokenizer, split, max_length)}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            path.unlink(missing_ok=True)  # a damaged entry is rebuilt, never trusted
    encoded = encode_split(task, tokenizer, split, max_length, decoder)
    TOKENIZED_DIR.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=TOKENIZED_DIR, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        pickle.dump(encoded, out)
    os.replace(temp, path)
    return encoded
