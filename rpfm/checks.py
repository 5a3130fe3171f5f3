"""Validation that does not stall the device: the statistics are computed now, the verdict is read later.

Checking a CPU tensor costs nothing and runs at once. Checking a device tensor the obvious way
(``bool(torch.isfinite(x).all())``, ``float(x.min())``) makes the host wait until every kernel queued before the
check has run, so it cannot queue the sampler meanwhile. A :class:`DeferredCheck` instead computes the statistics
on the device in one reduction, ``torch.aminmax`` (min and max; both NaN when any value is NaN, +-inf when any value
is +-inf, so they also tell whether the tensor is finite), copies the two numbers into pinned host memory without
blocking and records a CUDA event after the copy. ``resolve()`` waits for that event only -- it sits right behind
the input's own work in the stream, so the device goes on with the sampling queued after it -- and then calls the
check's ``judge(min, max)``, which raises the same ValueError the immediate check would.

:class:`Checks` collects the checks of one call. The pipeline resolves them before it returns (``to_output``
already does once the images are on the host), so an output made from a bad input is never returned.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Judge = Callable[[float, float], None]
"""``judge(min, max)``: returns for a good tensor, raises ValueError (with the user-facing message) for a bad one."""


class DeferredCheck:
    """One check of ``x``: its (min, max) are reduced on x's device now and judged by :meth:`resolve`.

    On CUDA the pair is copied into pinned host memory with ``non_blocking=True`` and an event is recorded on the
    current stream; on the CPU the pair is ready at once (no event). Nothing here reads a device value: the
    statistics are only read in :meth:`resolve`.
    """

    def __init__(self, x: Tensor, judge: Judge):
        stats = torch.stack(torch.aminmax(x.detach())).float()         # (2,): min, max (NaN/inf propagate)
        self._event: torch.cuda.Event | None = None
        if stats.device.type == "cuda":
            host = torch.empty(2, dtype=torch.float32, pin_memory=True)
            host.copy_(stats, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(stats.device))
            stats = host
        self._stats = stats         # on the host, or (other accelerators) on the device until resolve() reads it
        self._judge = judge
        self._resolved = False

    @property
    def resolved(self) -> bool:
        return self._resolved

    def resolve(self) -> None:
        """Wait for the statistics (this check's event only) and judge them; raises the check's ValueError for a
        bad tensor (again on every later call). Does nothing more once a good tensor has been judged."""
        if self._resolved:
            return
        if self._event is not None:
            self._event.synchronize()
        low, high = self._stats.tolist()
        self._judge(low, high)
        self._resolved = True


class Checks:
    """The pending checks of one pipeline call.

    ``defers(x)`` says whether a check of ``x`` is deferred: device tensors always, CPU tensors only with
    ``defer_cpu=True`` (tests use it to run the deferred path on a machine without a GPU; on CPU it gives the same
    verdicts as the immediate checks). :meth:`resolve` resolves them in the order they were added, so the first
    bad input is the one reported, as with immediate checks.
    """

    def __init__(self, *, defer_cpu: bool = False):
        self.defer_cpu = defer_cpu
        self._pending: list[DeferredCheck] = []

    def __len__(self) -> int:
        return len(self._pending)

    def defers(self, x: Tensor) -> bool:
        return self.defer_cpu or x.device.type != "cpu"

    def add(self, x: Tensor, judge: Judge) -> DeferredCheck:
        check = DeferredCheck(x, judge)
        self._pending.append(check)
        return check

    def resolve(self) -> None:
        """Resolve every pending check (raising the first failure); resolved checks are dropped."""
        for check in self._pending:
            check.resolve()
        self._pending.clear()


def check_values(x: Tensor, judge: Judge, checks: Checks | None = None) -> None:
    """Judge ``x``'s (min, max) now, or defer it into ``checks`` when that defers ``x`` (device tensors). One
    reduction either way; an empty ``x`` is not judged (its shape is refused elsewhere)."""
    if x.numel() == 0:
        return
    if checks is not None and checks.defers(x):
        checks.add(x, judge)
        return
    low, high = torch.aminmax(x.detach())
    judge(float(low), float(high))


__all__ = ["Checks", "DeferredCheck", "Judge", "check_values"]
