"""One run over several processes: DDP or FSDP2 with torch.distributed, launched from inside the run.

The run's own process (the Hydra job, under any launcher) stays in charge: it holds the run's lock,
starts ``distributed.nproc_per_node`` workers on its node with :func:`launch`, waits for them and writes
the one record from what rank 0 hands back. Every worker runs the code a single-process run runs
(``bench.runner._run_here``) with a :class:`Group` in context (:func:`current_group`): the training loop
asks it to split each global batch over the ranks and to wrap the model; evaluation to split the
evaluation batches.

Why ``torch.multiprocessing`` rather than torchrun's elastic agent (``torch.distributed.launcher``), and
not ``accelerate``: the agent's rendezvous costs about 7 s per run on a 2-core machine against 0.15 s for
a fork; its restarts are the scheduler's business here (a failed run is a record, a preempted one is
rerun); and what a rank computed must come back to the launching process, which a file per rank does
simply. ``accelerate`` would add a dependency to wrap the same two torch calls (DDP, ``fully_shard``).
On CPU the workers are forked (no second import of torch and transformers) and run one intra-op thread
each: an OpenMP thread pool does not survive a fork, and a forked worker with more threads hangs once
its parent has computed anything (measured). On CUDA they are spawned (CUDA cannot be forked).
"""

from __future__ import annotations

import contextvars
import importlib
import json
import os
import signal
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.checkpoint import SIGNALS, Interrupted
from bench.data import IGNORE_INDEX
from bench.settings import DistributedConfig, DistributedConfigError

_GROUP: contextvars.ContextVar[Group | None] = contextvars.ContextVar("group", default=None)


def current_group() -> Group | None:
    """The process group of the run this process is a rank of (None: a single-process run)."""
    return _GROUP.get()


@dataclass(frozen=True)
class Group:
    """This rank's place in a distributed run and the few collective steps the trainer needs."""

    rank: int
    world_size: int
    local_rank: int
    strategy: str

    def shard(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's rows of a global batch, and the factor its mean loss is scaled by.

        Each rank's loss is a mean over its label positions and DDP/FSDP average the gradients over
        the ranks; scaling by ``local positions × world / global positions`` turns that average into the
        mean over the global batch's positions, as one process computes it (uneven shards included).
        A rank left without rows (a last batch smaller than the world) computes one row, weighted 0,
        so that it still takes part in the gradient all-reduce. (Text-to-text classification counts one
        position per row, while its loss covers the label word's tokens: there, label words of unequal
        length make the weighting approximate.)"""
        rows = batch["input_ids"].shape[0]
        start, stop = rows * self.rank // self.world_size, rows * (self.rank + 1) // self.world_size
        weights = (batch["labels"] != IGNORE_INDEX).reshape(rows, -1).sum(1)
        total = int(weights.sum())
        if stop == start:
            return {key: value[:1] for key, value in batch.items()}, 0.0
        factor = int(weights[start:stop].sum()) * self.world_size / total if total else 1.0
        return {key: value[start:stop] for key, value in batch.items()}, factor

    def scaled_loss(self, loss: torch.Tensor, factor: float) -> tuple[torch.Tensor, float]:
        """(what this rank back-propagates, the global batch's mean loss, the same on every rank)."""
        scaled = loss * factor if factor else loss.nan_to_num() * 0.0
        shown = scaled.detach().float() / self.world_size
        dist.all_reduce(shown)
        return scaled, float(shown)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module a training step calls: DDP over ``model`` (its frozen weights neither broadcast nor
        reduced), or ``model`` itself sharded in place by FSDP2."""
        if self.strategy == "fsdp":
            fully_shard_model(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
        buffers = [name for name, _ in model.named_buffers()]
        # every rank built the same model from the same seed: nothing frozen needs sending
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen + buffers)
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def eval_share(self, batches: list[list[int]]) -> list[int]:
        """The numbers of the evaluation batches this rank computes: every ``world_size``-th under DDP
        (the whole batch on one rank, so its padding and numbers are a single process's); all of them
        under FSDP, whose every forward gathers parameters from every rank."""
        if self.strategy == "fsdp":
            return list(range(len(batches)))
        return list(range(self.rank, len(batches), self.world_size))

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (pickled: for small Python objects)."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def fully_shard_model(model: torch.nn.Module) -> None:
    """FSDP2: each transformer layer (the classes the backbone names in ``_no_split_modules``) is one
    shard group, the rest of the model (embeddings, soft prompt, head) the root's."""
    from torch.distributed.fsdp import fully_shard

    backbone = getattr(model, "backbone", model)
    layers = set(getattr(backbone, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in layers:
            fully_shard(module)
    fully_shard(model)


@dataclass(frozen=True)
class _Spec:
    """What every worker of one launch needs to join the group."""

    plan: DistributedConfig
    node_rank: int
    init_method: str
    backend: str
    device_type: str
    out: str


def node_rank(plan: DistributedConfig) -> int:
    """This node's rank in a run over ``plan.nnodes`` nodes: ``NODE_RANK`` (torchrun's name) or Slurm's
    ``SLURM_NODEID``; 0 on one node."""
    if plan.nnodes == 1:
        return 0
    value = os.environ.get("NODE_RANK", os.environ.get("SLURM_NODEID"))
    if value is None or not value.isdigit() or int(value) >= plan.nnodes:
        raise DistributedConfigError(
            f"distributed.nnodes={plan.nnodes} needs NODE_RANK or SLURM_NODEID in [0, {plan.nnodes}) "
            f"in the environment (got {value!r})"
        )
    return int(value)


def _init_method(plan: DistributedConfig, folder: str) -> str:
    """Where the ranks meet: a file in the launch's own folder on one node (no port to pick or race
    for); ``MASTER_ADDR:MASTER_PORT`` (node 0) across nodes."""
    if plan.nnodes == 1:
        return f"file://{Path(folder, 'rendezvous')}"
    address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not address or not port:
        raise DistributedConfigError(
            f"distributed.nnodes={plan.nnodes} needs MASTER_ADDR and MASTER_PORT (node 0's address) in the environment"
        )
    return f"tcp://{address}:{port}"


def launch(plan: DistributedConfig, device: torch.device, target: Callable[..., Any], *args: Any) -> list[Any]:
    """Run ``target(*args)`` on this node's ``plan.nproc_per_node`` ranks; their return values, by local rank.

    A rank that raises ends the launch: the others are stopped and its exception is raised here, with
    the rank's traceback as its cause (so ``Diverged`` stays ``Diverged``). An exception raised here while
    waiting (a signal) stops the workers too."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as folder:
        spec = _Spec(plan, node_rank(plan), _init_method(plan, folder), plan.backend_for(device), device.type, folder)
        ranks, method = plan.nproc_per_node, start_method(device)
        context = mp.start_processes(_worker, args=(spec, target, args), nprocs=ranks, start_method=method, join=False)
        try:
            while not context.join():
                pass
        except ProcessException as error:
            # the rank's own error wins; a rank a signal ended (Slurm signals every process of a job) is
            # the run interrupted, as a single process would be
            raise _rank_error(folder, plan.nproc_per_node) or _signalled(error) or error  # noqa: B904
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
                    process.join()
        return [_read(folder, rank)[1] for rank in range(plan.nproc_per_node)]


def start_method(device: torch.device) -> str:
    """``spawn`` on CUDA (it cannot be forked), ``fork`` elsewhere (module docstring)."""
    return "spawn" if device.type == "cuda" else "fork"


def _signalled(error: Exception) -> Interrupted | None:
    name = getattr(error, "signal_name", None)
    numbers = {signal.Signals(number).name: number for number in SIGNALS}
    return Interrupted(numbers[name]) if name in numbers else None


class RankTraceback(Exception):  # noqa: N818 — it carries a traceback, it is not raised alone
    """A worker's traceback, chained as the cause of the exception :func:`launch` raises for it."""


def _worker(local_rank: int, spec: _Spec, target: Callable[..., Any], args: tuple) -> None:
    """One rank: join the group, run ``target`` with the :class:`Group` in context, leave its outcome
    in ``<out>/<local_rank>.json`` for the launcher."""
    for number in SIGNALS:  # the launcher decides what a signal does to the run
        signal.signal(number, signal.SIG_DFL)
    plan = spec.plan
    rank = spec.node_rank * plan.nproc_per_node + local_rank
    if spec.device_type == "cuda":
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(1)  # a forked OpenMP pool with more threads hangs (module docstring)
    dist.init_process_group(spec.backend, init_method=spec.init_method, rank=rank, world_size=plan.world_size)
    token = _GROUP.set(Group(rank, plan.world_size, local_rank, plan.strategy))
    try:
        outcome: tuple[str, Any] = ("ok", target(*args))
    except BaseException as error:  # noqa: BLE001 — handed to the launcher, then re-raised
        outcome = ("error", (error, traceback.format_exc()))
        _write(spec.out, local_rank, outcome)
        raise
    finally:
        _GROUP.reset(token)
        dist.destroy_process_group()
    _write(spec.out, local_rank, outcome)


def _write(folder: str, rank: int, outcome: tuple[str, Any]) -> None:
    """A rank's outcome as JSON (a record, or its exception's class, arguments and attributes): nothing the
    launcher reads back can run code."""
    status, value = outcome
    if status == "error":
        error, text = value
        kind = type(error)
        body = {
            "status": status,
            "class": f"{kind.__module__}:{kind.__qualname__}",
            "args": error.args,
            "attrs": vars(error),
            "traceback": text,
        }
    else:
        body = {"status": status, "value": value}
    try:
        payload = json.dumps(body, default=str)
    except (TypeError, ValueError):  # an argument JSON cannot hold even as text: keep the message
        payload = json.dumps({**body, "class": "builtins:RuntimeError", "args": [str(value)], "attrs": {}})
    temp = Path(folder, f"{rank}.tmp")
    temp.write_text(payload, encoding="utf-8")
    temp.replace(Path(folder, f"{rank}.json"))


def _exception(name: str, args: list[Any], attrs: dict[str, Any]) -> BaseException:
    """The exception a rank raised, rebuilt from its class name (ours or a builtin; any other becomes a
    RuntimeError naming it), arguments and attributes, without calling its constructor."""
    module, _, qualname = name.partition(":")
    kind: Any = None
    if module == "builtins" or module.split(".")[0] in ("bench", "methods"):
        kind = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        return RuntimeError(f"{qualname}: {' '.join(map(str, args))}")
    error = kind.__new__(kind)
    error.args = tuple(args)
    error.__dict__.update(attrs)
    return error


def _read(folder: str, rank: int) -> tuple[str, Any]:
    body = json.loads(Path(folder, f"{rank}.json").read_text(encoding="utf-8"))
    if body["status"] == "error":
        return "error", (_exception(body["class"], body["args"], body["attrs"]), body["traceback"])
    return body["status"], body["value"]


def _rank_error(folder: str, ranks: int) -> BaseException | None:
    """The exception of the lowest local rank that left one, its traceback chained as the cause."""
    for rank in range(ranks):
        if Path(folder, f"{rank}.json").exists():
            status, value = _read(folder, rank)
            if status == "error":
                error, text = value
                error.__cause__ = RankTraceback(f"rank {rank}:\n{text}")
                return error
    return None
