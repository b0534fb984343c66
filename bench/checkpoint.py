"""Preemption-safe runs: SIGTERM/SIGINT stop a run at a safe point, and a rerun resumes mid-training.

A checkpoint (``<run_dir>/checkpoint/``) holds what training changes and nothing else: the trainable
parameters (a frozen backbone is never copied), the best-so-far trainable parameters, the optimizer and
scheduler states, the RNG states (torch, CUDA, numpy, Python), the loop position (step, epoch: the
batches of an epoch are a function of its seed, so a resumed run skips the ones already trained on), the
stop rule's counters, the validation history and the step timer. Tensors are written with safetensors,
everything else as JSON (``state.json``, the commit point: written last, atomically); nothing is ever
unpickled, so a planted file cannot run code.

It is written when a signal stops the run, and every ``trainer.checkpoint_every`` validation passes
(SIGKILL, node loss). A rerun of the same point (same ``config_hash``) resumes from it; a checkpoint of
another computation, of another format, or unreadable is named in one warning line and ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bench.identity import config_hash

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
FORMAT = 1
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):  # noqa: N818 — the record's status word
    """A signal (SIGTERM/SIGINT) stopped the run; ``saved_step``: the checkpoint written, if any."""

    def __init__(self, signum: int, step: int | None = None, saved_step: int | None = None) -> None:
        self.signum, self.step, self.saved_step = signum, step, saved_step
        where = f" at step {step}" if step is not None else ""
        saved = f"; checkpoint at step {saved_step}" if saved_step is not None else ""
        super().__init__(f"{signal.Signals(signum).name}{where}{saved}: rerun the same command to resume")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (SIGTERM: 143)."""
        return 128 + int(self.signum)


class CheckpointError(RuntimeError):
    """A checkpoint of this computation that cannot be put back (written by another version of the code)."""


class Signals:
    """SIGTERM/SIGINT handlers for the span of a run (main thread only; elsewhere signals act as before).

    Outside training a signal raises :class:`Interrupted` at once (nothing is half-updated); while
    ``deferred`` (the training loop) it is only noted, and the loop stops at its next safe point. A second
    SIGINT raises at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, signum: int, frame: object) -> None:
        pending = self.signum
        self.signum = pending or signum
        # a second SIGTERM is the same request again (Slurm signals every process of a job, and a parent
        # such as bench.protocol forwards it); a second SIGINT is an impatient user
        if not self.deferred or (pending is not None and signum == signal.SIGINT):
            raise Interrupted(signum)


@dataclasses.dataclass
class Checkpoints:
    """The training loop's checkpoint hook (bench.train.train): :meth:`resume` before the first step,
    :meth:`at_safe_point` after every step that training goes on from."""

    folder: Path
    digest: str  # the run's config_hash: a checkpoint of another computation is never resumed
    # the run's resolved config, stored beside the tensors: a later version of the code recomputes the hash
    # from it, so a setting added since (whose default keeps the old behaviour) does not orphan the checkpoint
    config: Mapping[str, Any] | None = None
    signals: Signals | None = None
    every: int | None = None  # validation passes between checkpoints (None: only when a signal stops the run)
    resumed_from: int | None = None  # the step a resumed run started from
    saved_step: int | None = None

    def resume(self, live: Any) -> None:
        """Restore ``live`` (bench.train.Checkpointable) from the checkpoint when there is a usable one."""
        if self.signals is not None:
            self.signals.deferred = True
        state = self._readable()
        if state is None:
            return
        try:
            restore(live, state, load_file(str(self.folder / state["tensors"])))
        except (ValueError, KeyError, TypeError, RuntimeError) as error:  # written by another version of the code
            raise CheckpointError(
                f"{self.folder}: cannot resume ({type(error).__name__}: {error}); delete it to start from step 0"
            ) from error
        self.resumed_from = self.saved_step = live.state.step
        print(f"resume {self.folder} from step {live.state.step}", flush=True)

    def at_safe_point(self, live: Any) -> None:
        """Save at every ``every``-th validation pass; on a pending signal save and raise :class:`Interrupted`."""
        validated = bool(live.result.history) and live.result.history[-1]["step"] == live.state.step
        signum = self.signals.signum if self.signals is not None else None
        if signum is not None or (validated and self.every and len(live.result.history) % self.every == 0):
            self.save(live)
        if signum is not None:
            raise Interrupted(signum, live.state.step, self.saved_step)

    def finish(self, live: Any) -> None:
        """End of training: a signal noted in its last step stops the run (the latest checkpoint stays)."""
        if self.signals is not None:
            self.signals.deferred = False
            if self.signals.signum is not None:
                raise Interrupted(self.signals.signum, live.state.step, self.saved_step)

    def save(self, live: Any) -> None:
        """Tensors first, then ``state.json`` naming them (atomic): a kill mid-save leaves the previous one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors, state = capture(live)
        name = f"tensors-{live.state.step}.safetensors"
        temp = self.folder / f".{name}.tmp"
        save_file(tensors, str(temp))
        os.replace(temp, self.folder / name)
        body = {"format": FORMAT, "config_hash": self.digest, "config": self.config, "tensors": name, **state}
        _write_json(self.folder / STATE_FILE, body)
        for old in self.folder.glob("tensors-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.saved_step = live.state.step

    def remove(self) -> None:
        """Drop the checkpoint once the run has ended for good (ok or diverged)."""
        for path in self.folder.glob("*") if self.folder.is_dir() else []:
            path.unlink(missing_ok=True)
        if self.folder.is_dir():
            self.folder.rmdir()

    def on_disk(self) -> int | None:
        """The step of the checkpoint a rerun would resume from (None: none usable)."""
        state = self._readable()
        return int(state["step"]) if state is not None else None

    def _readable(self) -> dict[str, Any] | None:
        """The checkpoint's state when it belongs to this computation; else None, with a warning line why."""
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            problem = _mismatch(state, self.digest) or (
                None if (self.folder / str(state["tensors"])).is_file() else f"{state['tensors']} is missing"
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            problem = f"unreadable ({type(error).__name__}: {error})"
        if problem:
            print(f"warning: {path}: {problem}; starting from step 0", file=sys.stderr, flush=True)
            return None
        return state


def _mismatch(state: dict[str, Any], digest: str) -> str | None:
    if state.get("format") != FORMAT:
        return f"checkpoint format {state.get('format')!r}, this version reads {FORMAT}"
    stored = state.get("config")
    # recomputed from the stored config where there is one (as a finished record's is: bench.runner)
    written_for = config_hash(stored) if isinstance(stored, Mapping) else state.get("config_hash")
    if written_for != digest:
        return f"a checkpoint of another computation (config_hash {state.get('config_hash')}, this run {digest})"
    return None


def _write_json(path: Path, body: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(body, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


# ---- what a checkpoint holds ----------------------------------------------------------------------------


def capture(live: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON state) of a training loop at a safe point."""
    tensors = {f"param/{n}": p.detach().cpu().clone() for n, p in live.model.named_parameters() if p.requires_grad}
    loop, loop_tensors = {}, []
    for item in dataclasses.fields(live.state):
        value = getattr(live.state, item.name)
        if isinstance(value, dict) and all(torch.is_tensor(v) for v in value.values()):
            loop_tensors.append(item.name)  # best_params: the best-so-far trainable parameters
            tensors.update({f"loop/{item.name}/{k}": v.detach().cpu().clone() for k, v in value.items()})
        else:
            loop[item.name] = value
    optimizer = live.optimizer.state_dict()
    optimizer_json: dict[str, Any] = {"param_groups": optimizer["param_groups"], "state": {}}
    for index, entries in optimizer["state"].items():
        optimizer_json["state"][str(index)] = {k: v for k, v in entries.items() if not torch.is_tensor(v)}
        tensors.update(
            {f"optim/{index}/{k}": v.detach().cpu().clone() for k, v in entries.items() if torch.is_tensor(v)}
        )
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    state = {
        "step": live.state.step,
        "loop": loop,
        "loop_tensors": loop_tensors,
        "result": {f.name: getattr(live.result, f.name) for f in dataclasses.fields(live.result) if f.name != "timer"},
        "timer": {k: getattr(live.result.timer, k) for k in TIMER_FIELDS},
        "loss_watch": list(live.watch.losses),
        "optimizer": optimizer_json,
        "scheduler": live.scheduler.state_dict() if live.scheduler is not None else None,
        "rng": {"python": random.getstate(), "numpy": _numpy_state()},
    }
    return tensors, state


TIMER_FIELDS = ("step_times", "real_tokens", "virtual_tokens", "samples", "total_s", "peak_rss")


def restore(live: Any, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Put a captured training loop back (the inverse of :func:`capture`)."""
    params = {n: p for n, p in live.model.named_parameters() if p.requires_grad}
    saved = {k.removeprefix("param/") for k in tensors if k.startswith("param/")}
    if saved != set(params):
        raise ValueError(
            f"checkpoint parameters differ from the model's trainable ones: {sorted(saved ^ set(params))[:5]}"
        )
    with torch.no_grad():
        for name, parameter in params.items():
            parameter.copy_(tensors[f"param/{name}"])
    for name, value in state["loop"].items():
        setattr(live.state, name, value)
    for name in state["loop_tensors"]:
        prefix = f"loop/{name}/"
        setattr(live.state, name, {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
    for name, value in state["result"].items():
        setattr(live.result, name, value)
    for name, value in state["timer"].items():
        setattr(live.result.timer, name, value)
    live.watch.losses = list(state["loss_watch"])
    live.optimizer.load_state_dict(_optimizer_state(live.optimizer, state["optimizer"], tensors))
    if live.scheduler is not None and state["scheduler"] is not None:
        live.scheduler.load_state_dict(state["scheduler"])
    _restore_rng(state["rng"], tensors)


def _optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any], tensors: dict[str, torch.Tensor]):
    """The optimizer's state_dict rebuilt from JSON and tensors (JSON lists back to the tuples it had)."""
    current = optimizer.state_dict()["param_groups"]
    groups = [
        {k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in g.items()}
        for g, now in zip(saved["param_groups"], current)
    ]
    state: dict[int, dict[str, Any]] = {int(i): dict(entries) for i, entries in saved["state"].items()}
    for key, tensor in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": groups}


def _numpy_state() -> list[Any]:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), position, has_gauss, gauss]


def _restore_rng(rng: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"])
    names = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    cuda = [tensors[k] for k in names]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
