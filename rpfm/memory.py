"""Peak memory per pipeline stage, for ``rpfm bench``: device memory on CUDA, resident memory on the CPU.

* CUDA: ``torch.cuda.max_memory_allocated`` since the stage began (``reset_peak_memory_stats`` at its start):
  tensors allocated by PyTorch, weights included; the caching allocator may reserve more.
* CPU: the process's peak resident set size (Linux ``VmHWM``). The high-water mark is reset at each stage start by
  writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), so each stage reports its own peak; where that is not
  possible the figure is the process's peak so far (``getrusage``), which only grows, and ``kind`` says so.
  RSS counts everything the process holds (Python, libraries, weights), not only tensors.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_MB = 2 ** 20


def _read_hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``start()`` at a stage's beginning, ``peak_mb()`` at its end (after synchronising the device)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.resettable = self.cuda or (_read_hwm_kb() is not None and _reset_hwm())
        if self.cuda:
            self.kind = "cuda max_memory_allocated"
        elif self.resettable:
            self.kind = "peak RSS (VmHWM, reset per stage)"
        else:
            self.kind = "peak RSS of the process so far (getrusage)"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            _reset_hwm()

    def peak_mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / _MB
        kb = _read_hwm_kb() if self.resettable else None
        if kb is None:   # ru_maxrss is in KiB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return rss / (_MB if sys.platform == "darwin" else 1024)
        return kb / 1024


__all__ = ["PeakMemory"]
