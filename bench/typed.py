"""Typed settings: dataclass fields that carry their own type, range and wording, and one-line errors.

:mod:`bench.settings` (trainer, model, distributed) and :mod:`bench.tasks.config` (the ``task`` block)
declare their fields with :func:`setting` / :func:`one_of` and build them with :func:`typed_fields`.
It sits below both and imports nothing heavy (no torch), so the task layer checks a task block with the
same declarations a run does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import field
from typing import Any


class SettingsError(ValueError):
    """A setting holds a value the harness cannot use; the message names the key and what is allowed."""


class RunConfigError(SettingsError):
    """A top-level run setting (device, dtype, ...) is invalid."""


REQUIRED: Any = dataclasses.MISSING
"""The default of a setting every config must give (``task.kind``, ``model.source``...)."""


def setting(
    default: Any,
    kind: type,
    allowed: str | Callable[[], str],
    check: Callable[[Any], bool] = lambda v: True,
    nullable: bool = False,
    computes: bool = True,
) -> Any:
    """A dataclass field carrying its own type, range check and the range's wording for errors.

    ``allowed`` may be a function when the range is a registry filled at import time (read when an
    error is worded). ``computes=False`` declares a setting that changes how fast or how a run is
    observed, never the numbers it computes; it stays out of the run's identity (bench.identity)."""
    metadata = {"kind": kind, "allowed": allowed, "check": check, "nullable": nullable, "computes": computes}
    return field(default=default, metadata=metadata)


def one_of(default: Any, choices: Collection[str] | Callable[[], Collection[str]], nullable: bool = False) -> Any:
    """A string setting whose value is one of ``choices`` (a tuple, a registry, or a function returning
    one when reading it at import time would load too much); errors list them as ``a|b|c``."""
    live = choices if callable(choices) else lambda: choices

    def allowed() -> str:
        return "one of " + "|".join(live()) + (", or null" if nullable else "")

    return setting(default, str, allowed, lambda v: v in live(), nullable)


def declared_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a typed config declared with :func:`setting` (an ``extra`` mapping is not one)."""
    return {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}


def typed_fields(cls: type, values: Mapping[str, Any], prefix: str, error: type[SettingsError]) -> dict[str, Any]:
    """The declared fields of ``values``, each converted and checked; a missing required one, or a bad
    value, raises ``error`` in one line naming ``prefix.field``, the value and what is allowed."""
    fields = declared_fields(cls)
    for name, spec in fields.items():
        if spec.default is REQUIRED and name not in values:
            raise error(f"{prefix}.{name} is missing; allowed: {_allowed(spec.metadata)}")
    return {
        key: _checked(f"{prefix}.{key}", value, fields[key].metadata, error)
        for key, value in values.items()
        if key in fields
    }


def strict_fields(cls: type, values: Mapping[str, Any], block: str, error: type[SettingsError]) -> dict[str, Any]:
    """:func:`typed_fields` of a block that takes no key it does not declare (an unknown one: one line)."""
    known = declared_fields(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise error(f"{block}: unknown key(s) {unknown}; known: {sorted(known)}")
    return typed_fields(cls, values, block, error)


def _allowed(spec: Mapping[str, Any]) -> str:
    allowed = spec["allowed"]
    return allowed() if callable(allowed) else allowed


def _checked(key: str, value: Any, spec: Mapping[str, Any], error: type[SettingsError]) -> Any:
    """``value`` converted to the field's type, or a one-line error naming ``key`` and the range."""
    if value is None and spec["nullable"]:
        return None
    converted = _convert(value, spec["kind"])
    if converted is None or not spec["check"](converted):
        raise error(f"{key}={_plain(value)!r} is not allowed; allowed: {_allowed(spec)}")
    return converted


def _plain(value: Any) -> Any:
    """A value as the user wrote it: OmegaConf's list and mapping nodes shown as a list and a dict."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value


def _convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` or None; booleans are never numbers, numbers never booleans; a list setting
    takes one string as a list of one (``task.metric=accuracy``) and holds strings only."""
    if isinstance(value, bool) or value is None:
        return value if kind is bool else None
    if kind is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence) or not all(isinstance(item, str) for item in items):
            return None
        return list(items)
    if kind is int:
        return value if isinstance(value, int) else None
    if kind is float:
        try:
            number = float(value)  # Hydra hands over `1e-3` as a float, a YAML `1` as an int
        except (TypeError, ValueError):
            return None
        return number if number == number else None  # NaN is never in range
    return value if isinstance(value, kind) else None
