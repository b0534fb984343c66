"""Run identity: what a run computes, which folder its record lives in, and a lock so one point trains once.

One declaration (:data:`COMPUTING_PARTS`, :data:`LOOKUP_TABLES`, and ``computes=False`` field metadata on
the typed trainer settings) says which settings change what a run computes. Both the run's
``config_hash`` (:func:`config_hash`) and its folder's hyperparameter slug (:func:`hparams`) are taken
over that one view of the config (:func:`identity_view`), so they cannot disagree, and a sweep-only block
(a preset's ``protocol`` grid, ``data_root``, lookup tables, logger settings) never enters either.

The folder: the composed defaults of the run's group choices are composed again without any value
override; every computing leaf that differs from them, or that only the run has (``+key=value``), is a
hyperparameter. A group choice that changes what is computed but is not a folder level (the trainer
preset) is one too when it differs from ``conf/config.yaml``'s default (``trainer=paper``). The data a
run reads enters as a digest of the files' contents, so two data folders with different contents never
share a folder, and the same files at another path do not train twice.

    <runs_root>/<sweep_name>/<method>/<model>/<task>/[<slug>/]seed=<n>/result.json

The slug is ``leaf=value`` pairs sorted by key (``lr=0.01,num_virtual_tokens=10``), using the dotted
key where two leaves share a name; when it is long or needs characters a folder name should not
hold, it is shortened and ends with a hash of the full set (``__<8 hex>``).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import hashlib
import json
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import CONF_DIR

# THE declaration of what a run computes: the parts of its resolved config its numbers depend on. Nothing
# else enters its identity: not where or whether it runs (runs_root, sweep_name, force, save_adapter,
# device, gradient_checkpointing — recomputation gives the same numbers), not how it is logged (logger),
# and not what only a sweep reads (a preset's protocol grid, data_root, per-task lookup tables, hydra).
COMPUTING_PARTS = ("method", "model", "task", "trainer", "seed", "dtype")
# Leaves inside those parts that are lookup tables: the entry a run uses is copied into other settings
# before its identity is taken (trainer=paper's per-model table), so the table itself is not computed with.
# Typed settings mark their own non-computing fields (bench.settings: ``computes=False``).
LOOKUP_TABLES = ("task.paper",)
# Settings naming files: they enter as a digest of the files' contents (the same data at another path is
# the same run; other data under the same path is not).
DATA_KEYS = ("task.data_dir",)
# A preset's per-method settings (``per_method: {<method>: {<dotted key>: value}}``): sweep-only, like a
# protocol grid; the entry of the run's method is copied into the config before identity and folder are
# taken, so its values enter as what they change (bench.identity.apply_per_method).
PER_METHOD = "per_method"
GROUPS_IN_PATH = ("method", "model", "task")
REPEAT = "seed"
"""The setting a run repeats: a run is its setting plus this key. The report averages a setting's runs over it
and the trackers group them by what is left (:func:`setting_label`, :func:`setting_hash`)."""
SLUG_MAX = 64
SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
LOCK_NAME = "run.lock"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` → ``{"trainer.lr": 1}`` (lists stay leaves)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def identity_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides what the run computes, normalised.

    Typed settings are completed with their defaults (a setting added later, whose default keeps the old
    behaviour, leaves older runs' identity unchanged) and stripped of their non-computing fields; lookup
    tables are dropped; data folders become a digest of their files.
    """
    from bench.settings import trainer_identity

    view = {part: copy.deepcopy(config[part]) for part in COMPUTING_PARTS if part in config}
    for dotted in LOOKUP_TABLES:
        group, _, leaf = dotted.partition(".")
        if isinstance(view.get(group), dict):
            view[group].pop(leaf, None)
    if isinstance(view.get("trainer"), Mapping):
        view["trainer"] = trainer_identity(view["trainer"])
    if isinstance(view.get("method"), Mapping):
        view["method"] = _method_identity(view["method"])
    for dotted in DATA_KEYS:
        group, _, leaf = dotted.partition(".")
        if isinstance(view.get(group), dict) and view[group].get(leaf):
            view[group][leaf] = data_digest(str(view[group][leaf]))
    return view


class PerMethodError(ValueError):
    """A ``per_method`` entry names no registered method or a setting the config does not have."""


def apply_per_method(config: dict[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Copy the run's method's entry of the ``per_method`` block into ``config`` and drop the block (in place, so
    a second call changes nothing); return what it set.

    A preset sets e.g. ``per_method: {<method>: {method.num_virtual_tokens: 10}}`` to give one method of a
    multirun over every method its own values. With ``base`` (the composed defaults before this), a setting
    whose value in ``config`` differs from ``base``'s was given on the command line, and it wins."""
    table = config.pop(PER_METHOD, None) or {}
    from methods import method_names

    unknown = sorted(set(table) - set(method_names()))
    if unknown:
        raise PerMethodError(f"{PER_METHOD}: {unknown[0]!r} is not a registered method; known: {method_names()}")
    applied = {}
    for dotted, value in (table.get(str(config.get("method", {}).get("name"))) or {}).items():
        node, leaf = _leaf_parent(config, str(dotted))
        if node is None:
            raise PerMethodError(f"{PER_METHOD}.{config['method']['name']}: {dotted!r} is not a setting of this run")
        given, default = node[leaf], _leaf_value(base, str(dotted)) if base is not None else node[leaf]
        if given == default:
            node[leaf] = applied[dotted] = value
    return applied


def _leaf_parent(tree: Mapping[str, Any] | None, dotted: str) -> tuple[dict[str, Any] | None, str]:
    """(the mapping holding ``dotted``'s last part, that part); (None, part) when the path does not exist."""
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return (node, leaf) if isinstance(node, dict) and leaf in node else (None, leaf)


def _leaf_value(tree: Mapping[str, Any] | None, dotted: str) -> Any:
    node, leaf = _leaf_parent(tree, dotted)
    return node[leaf] if node is not None else None


def _digest(value: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` as canonical JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def config_hash(config: Mapping[str, Any]) -> str:
    """Hash of :func:`identity_view`: equal hash ⇔ the same computation."""
    return _digest(identity_view(config), 16)


def _method_identity(values: Mapping[str, Any]) -> dict[str, Any]:
    """A method block completed with its config class's defaults (unknown methods as they are)."""
    from methods import METHODS
    from methods.registry import field_defaults

    cls = METHODS.get(str(values.get("name")))
    return {**field_defaults(cls), **values} if cls is not None else dict(values)


@functools.lru_cache(maxsize=64)
def data_digest(path: str) -> str:
    """``sha256:<16 hex>`` of a data file's or folder's contents (hidden entries skipped), or ``missing:<path>``."""
    root = Path(path)
    if not root.exists():
        return f"missing:{path}"
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        relative = file.relative_to(root).as_posix() if file != root else file.name
        if any(part.startswith(".") for part in Path(relative).parts):
            continue  # editor and OS droppings do not change what a loader reads
        digest.update(relative.encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:16]}"


def _in_path(key: str) -> bool:
    group, _, leaf = key.partition(".")
    return key == REPEAT or (leaf == "name" and group in GROUPS_IN_PATH)


def hparams(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Every computing setting of ``config`` that differs from ``defaults`` (dotted key → value; removed
    keys → None), plus each group choice outside the path that differs from ``conf/config.yaml``'s
    (``{"trainer": "paper"}``). The seed and the path's group names are folder levels of their own."""
    ours, base = flatten(identity_view(config)), flatten(identity_view(defaults))
    changed = {key: value for key, value in ours.items() if key not in base or base[key] != value}
    changed.update({key: None for key in base if key not in ours})
    for group, default in root_choices().items():
        name = ours.pop(f"{group}.name", None)
        changed.pop(f"{group}.name", None)
        if name is not None and name != default:
            changed[group] = name
    return {key: changed[key] for key in sorted(changed) if not _in_path(key)}


@functools.lru_cache(maxsize=1)
def root_choices() -> dict[str, str]:
    """``conf/config.yaml``'s default choice of each computing group that is not a folder level
    (``{"trainer": "default"}``): a run choosing otherwise names its choice in its slug."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml")).get("defaults", [])
    choices = {k: v for entry in defaults if isinstance(entry, dict) for k, v in entry.items()}
    return {
        part: str(choices[part])
        for part in COMPUTING_PARTS
        if part not in GROUPS_IN_PATH and part in choices and (CONF_DIR / part).is_dir()
    }


def job_point(config: dict[str, Any], choices: Mapping[str, str | None]) -> dict[str, Any]:
    """The hyperparameters (folder slug) of a Hydra job's resolved ``config``: its ``per_method`` entry is applied
    to it and to the composed defaults of its group choices alike, so a preset's own per-method values are
    not hyperparameters, while a command-line override is."""
    defaults = composed_defaults(choices)
    base = copy.deepcopy(defaults)
    apply_per_method(defaults)
    apply_per_method(config, base)
    return hparams(config, defaults)


_COMPOSED: dict[tuple[str, ...], dict[str, Any]] = {}
"""composed_defaults' answers in this process: a protocol checks, and a multirun process runs, many points of the
same group choices, and each composition costs a quarter of a second. Keyed on the overrides and on what the
configs' interpolations read besides the files (the environment, ``${registry:methods}``)."""


def _composition_inputs() -> tuple[str, ...]:
    import methods

    return (repr(sorted(os.environ.items())), ",".join(methods.method_names()))


def composed_defaults(choices: Mapping[str, str | None]) -> dict[str, Any]:
    """The config Hydra composes from these group choices alone (no value overrides), resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [
        f"{group}={choice}"
        for group, choice in sorted(choices.items())
        if choice is not None and not group.startswith("hydra")
    ]
    in_job = GlobalHydra.instance().is_initialized()  # inside a Hydra job (any launcher restores it)
    if in_job:
        from hydra.core.hydra_config import HydraConfig

        # extra config folders (a plugin method's YAML, README "Adding a method") must stay searchable
        searchpath = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
        overrides += [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []
    key = ("job" if in_job else str(CONF_DIR), *_composition_inputs(), *overrides)
    if key not in _COMPOSED:
        with contextlib.nullcontext() if in_job else initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        _COMPOSED[key] = OmegaConf.to_container(cfg, resolve=True)
    return copy.deepcopy(_COMPOSED[key])


def _format(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def slug(params: Mapping[str, Any]) -> str | None:
    """A short readable folder name for a set of hyperparameters (None when there are none)."""
    if not params:
        return None
    leaves = [key.rsplit(".", 1)[-1] for key in params]
    names = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(params, leaves)]
    pairs = sorted(zip(names, params.values()), key=lambda pair: pair[0])
    text = ",".join(f"{name}={_format(value)}" for name, value in pairs)
    safe = SAFE.sub("_", text)
    if safe == text and len(text) <= SLUG_MAX:
        return text
    digest = _digest(dict(params), 8)
    return f"{safe[: SLUG_MAX - 10]}__{digest}"


def setting_label(config: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """``method/model/task[/<slug>]``: a run's setting as its folder names it, the seed level left out; the
    report's point (method, model, task, hparams) and a tracker's group."""
    names = [str((config.get(group) or {}).get("name")) for group in GROUPS_IN_PATH]
    point = slug(params or {})
    return "/".join(names + ([point] if point else []))


def run_label(config: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """``method/model/task/[slug/]seed=n``: a run's folder below its sweep, how summaries and trackers name it."""
    return f"{setting_label(config, params)}/{REPEAT}={config.get(REPEAT)}"


def setting_hash(config: Mapping[str, Any]) -> str:
    """Hash of :func:`identity_view` without the seed: equal for the repeats of one setting, and only for them."""
    view = {part: value for part, value in identity_view(config).items() if part != REPEAT}
    return _digest(view, 16)


def run_dir(config: Mapping[str, Any], params: Mapping[str, Any]) -> Path:
    """``<runs_root>/<sweep_name>/<method>/<model>/<task>/[<slug>/]seed=<n>``."""
    return Path(str(config["runs_root"]), str(config["sweep_name"]), run_label(config, params))


@dataclass
class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/run.lock``; the file names the holder (pid, host).

    The kernel drops the lock when its process ends, however it ends, so a lock file left behind by
    a killed run is stale and the next run takes it over.
    """

    path: Path
    handle: Any = None

    def acquire(self) -> str | None:
        """Take the lock; None on success, else a line naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return f"locked by {holder} ({self.path})"
        except OSError as error:  # a filesystem without flock: run unlocked rather than not at all
            print(f"warning: cannot lock {self.path} ({error}); running without a lock", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self.handle = handle
        return None

    @staticmethod
    def holder(path: Path) -> str | None:
        """Who holds the lock file at ``path`` ("pid N on HOST since T"), or None when nobody does: no file,
        or a holder on this host that is gone (a killed run's file). A holder on another host is taken
        as alive (it cannot be checked from here): remove its file by hand once its job has ended."""
        try:
            text = path.read_text()
        except OSError:
            return None
        try:
            info = json.loads(text)
            pid, host = int(info["pid"]), str(info["host"])
        except (ValueError, KeyError, TypeError):
            return f"another process ({path})"  # being written right now, or foreign: assume held
        if host == socket.gethostname() and not _alive(pid):
            return None
        return f"pid {pid} on {host} since {info.get('since')}"

    def release(self) -> None:
        """Remove the file, then drop the lock (a waiter that opened the old file re-checks the record)."""
        if self.handle is not None:
            self.path.unlink(missing_ok=True)
            self.handle.close()
            self.handle = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
