"""Timing and memory that mean the same on CPU and GPU.

GPU kernels run asynchronously, so every timer synchronises first; the first steps pay for
allocation and kernel selection, so medians skip a warm-up.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Collection
from dataclasses import dataclass, field

import psutil
import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@dataclass
class StepTimer:
    """Per-step wall times and token counts; ``warmup`` first steps are excluded from the median."""

    device: torch.device
    warmup: int = 3
    step_times: list[float] = field(default_factory=list)
    real_tokens: int = 0
    virtual_tokens: int = 0
    samples: int = 0
    total_s: float = 0.0
    peak_rss: int = 0
    _start: float = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self, real_tokens: int, virtual_tokens: int, samples: int) -> float:
        synchronize(self.device)
        elapsed = time.perf_counter() - self._start
        self.step_times.append(elapsed)
        self.total_s += elapsed
        self.real_tokens += real_tokens
        self.virtual_tokens += virtual_tokens
        self.samples += samples
        self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)
        return elapsed

    def median_step_s(self) -> float | None:
        timed = self.step_times[self.warmup :] or self.step_times
        return statistics.median(timed) if timed else None

    def tokens_per_s(self) -> float | None:
        return self.real_tokens / self.total_s if self.total_s > 0 else None

    def samples_per_s(self) -> float | None:
        return self.samples / self.total_s if self.total_s > 0 else None


def peak_memory_bytes(device: torch.device, timer_peak_rss: int) -> int:
    """CUDA max allocated on GPU; on CPU the peak resident set size sampled at every step."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(max(timer_peak_rss, psutil.Process().memory_info().rss))


def weights_sha256(module: torch.nn.Module, skip: Collection[str] = ()) -> str:
    """Hash of a module's tensors (names and bytes) except the ``state_dict`` names in ``skip`` (what a
    method owns: LoRA's matrices, head-only's LM head); proves a frozen backbone stayed frozen."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name in skip or not torch.is_tensor(tensor):
            continue
        if hasattr(tensor, "full_tensor"):  # an FSDP2 shard (DTensor): the whole tensor, gathered from every rank
            tensor = tensor.full_tensor()
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
