"""The run record (``result.json``): built here, validated here, written atomically.

A record is the only thing the report reads; its fields are described in README.md ("The run record")
and checked by :func:`validate_record`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "diverged", "interrupted", "pruned")  # pruned: ended by a search's pruner
REQUIRED = {
    "metrics": ("primary", "final", "best", "best_step", "history", "data"),
    "params": ("trainable", "stored", "head", "backbone", "trainable_percent"),
    "throughput": (
        "train_tokens_per_s",
        "train_samples_per_s",
        "step_time_s_median",
        "eval_tokens_per_s",
        "generation_tokens_per_s",
        "train_time_s",
        "eval_time_s",
        "peak_memory_bytes",
    ),
    "provenance": (
        "git_sha",
        "git_dirty",
        "versions",
        "device",
        "dtype",
        "config",
        "overrides",
        "config_hash",
        "base_weights_sha256",
    ),
}
TOP_LEVEL = ("schema", "status", "error", "method", "model", "task", "seed") + tuple(REQUIRED)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "hydra-core",
    "omegaconf",
    "numpy",
    "pandas",
    "scikit-learn",
    "seqeval",
    "sacrebleu",
    "rouge-score",
    "safetensors",
    "tokenizers",
    "gguf",
    "softprompt-bench",
)


def empty_record(method: str, model: str, task: str, seed: int) -> dict[str, Any]:
    """A schema-complete record with nulls, filled in as the run progresses."""
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "status": "failed",
        "error": None,
        "method": method,
        "model": model,
        "task": task,
        "seed": seed,
        "hparams": {},
    }  # records written before run identity lack it: read as {}
    for section, keys in REQUIRED.items():
        record[section] = {key: None for key in keys}
    record["metrics"].update(final={}, best={}, history=[], data={})
    return record


def validate_record(record: dict[str, Any]) -> list[str]:
    """Problems with a record's shape (empty list when valid)."""
    problems = [f"missing field '{key}'" for key in TOP_LEVEL if key not in record]
    if record.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema must be {SCHEMA_VERSION}")
    if record.get("status") not in STATUSES:
        problems.append(f"status must be one of {STATUSES}")
    for section, keys in REQUIRED.items():
        body = record.get(section)
        if not isinstance(body, dict):
            problems.append(f"'{section}' must be an object")
            continue
        problems += [f"missing field '{section}.{key}'" for key in keys if key not in body]
    if record.get("status") == "ok" and record.get("error") is not None:
        problems.append("an ok record carries no error")
    return problems


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write JSON atomically: a temp file in the same folder, then rename (never half a record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".result-", suffix=".tmp")
    try:
        honour_umask(handle)
        with os.fdopen(handle, "w") as out:
            json.dump(record, out, indent=2, default=_jsonable, allow_nan=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def honour_umask(handle: int) -> None:
    """Give a ``tempfile.mkstemp`` file (always 0600) the mode ``open`` would have given it: 0666 less the
    umask, so teammates sharing a ``runs_root`` can read records and cache entries when the umask lets them."""
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(handle, 0o666 & ~mask)


def error_line(error: BaseException, limit: int | None = None) -> str:
    """``Type: first line`` of an exception: the one-line ``error`` a record carries."""
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".strip()
    return line[:limit] if limit else line


def read_record(path: str | Path) -> dict[str, Any]:
    """The run record at ``path`` as written by :func:`write_record`."""
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def git_state(root: Path = PROJECT_ROOT) -> tuple[str | None, bool | None]:
    """(commit sha, whether tracked files differ from it); None outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            != ""
        )
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""CPU features that change a run's speed by large factors (bf16: 7x slower without them, 1.45x faster with)."""


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU a run ran on: model name and which of :data:`CPU_FLAGS` it has (None where /proc/cpuinfo is not
    readable, e.g. off Linux), and torch's kernel capability; records of different machines then tell apart."""
    import torch

    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    fields = dict(line.split(":", 1) for line in lines if ":" in line)  # the last CPU's, all alike
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or None,
        "flags": [flag for flag in CPU_FLAGS if flag in flags] if flags else None,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that change numbers, plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
