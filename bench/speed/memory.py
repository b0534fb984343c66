"""What a training step holds in memory, per contender, on any device.

Contenders live side by side in one process (they alternate round-robin), so the process's resident set or
the device's total says nothing about one of them.  A contender's peak is therefore put together from its
own parts, each counted from the tensors themselves:

* ``weights``: every parameter of its model (a frozen backbone included: the method cannot run without it);
* ``optimizer``: the optimizer's state tensors (AdamW: two per trainable parameter);
* ``gradients``: one per trainable parameter, alive between backward and ``zero_grad``;
* ``saved``: the tensors autograd saves for backward during the forward (activations; weights excluded),
  the part a frozen backbone shrinks, since only what the input gradients need is saved.

``accounted_peak = weights + optimizer + gradients + saved`` counts activations and gradients as if alive at
once (backward frees the first as it makes the second) and leaves out the temporaries of single ops.  On
CUDA the allocator measures the step instead:
``cuda_peak = weights + optimizer + (max allocated during the step - allocated before it)``, which adds the
temporaries (the optimizer's foreach buffers, autocast's bf16 copies) and is the figure reported there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from bench.measure import synchronize


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct storages among ``tensors`` (tied or viewed tensors count once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's state tensors (AdamW's moments; its step counters are scalars)."""
    return tensor_bytes(
        value for state in optimizer.state.values() for value in state.values() if isinstance(value, torch.Tensor)
    )


class SavedTensors:
    """Counts the distinct storages autograd saves for backward while active, except ``excluded`` ones."""

    def __init__(self, excluded: set[int]) -> None:
        self.excluded, self.storages = excluded, {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor without storage (e.g. a wrapper subclass)
            return tensor
        if storage.data_ptr() not in self.excluded:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def step_memory(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: Callable[[], Any], device: torch.device
) -> dict[str, Any]:
    """One untimed call of ``run`` (a training step of ``model`` with ``optimizer``): its memory by part, in bytes.

    Call it after a warm-up step, so that the optimizer's state exists before the step measured.
    """
    parameters = list(model.parameters())
    weights = tensor_bytes(parameters)
    gradients = tensor_bytes(p for p in parameters if p.requires_grad)
    saved = SavedTensors({p.untyped_storage().data_ptr() for p in parameters})
    cuda = device.type == "cuda"
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with saved.hooks():
        run()
    synchronize(device)
    state = optimizer_bytes(optimizer)
    body = {"weights": weights, "optimizer": state, "gradients": gradients, "saved": saved.bytes}
    body["accounted_peak"] = weights + state + gradients + saved.bytes
    if cuda:
        body["cuda_step"] = int(torch.cuda.max_memory_allocated(device) - before)
        body["cuda_peak"] = weights + state + body["cuda_step"]
    body["peak"] = body.get("cuda_peak", body["accounted_peak"])
    body["peak_source"] = "cuda allocator" if cuda else "accounted"
    return body


def memory_ratios(methods: dict[str, dict[str, Any]], pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """``a/b`` -> ratio of the two contenders' peaks, for each pair where both were measured."""
    peaks = {name: stats.get("memory", {}).get("peak") for name, stats in methods.items()}
    return {f"{a}/{b}": round(peaks[a] / peaks[b], 4) for a, b in pairs if peaks.get(a) and peaks.get(b)}


def measure_memory(contenders: Iterable[Any], device: torch.device) -> None:
    """Each live step contender's :func:`step_memory` (one untimed step each, after the timed rounds) into its
    ``info["memory"]``; a failure there (an out-of-memory step) is recorded, not raised."""
    from bench.speed.timing import one_line

    for contender in contenders:
        measure = getattr(contender.run, "memory", None)
        if contender.error or measure is None:
            continue
        try:
            contender.info["memory"] = measure(device)
        except Exception as error:  # noqa: BLE001 — the timings stand without the memory figure
            contender.info["memory"] = {"error": one_line(error)}
