"""Drop-in fast sampling for an RPFM model: the C++ CUDA-graph integrator with static condition buffers.

:class:`ModelGraphSampler` binds :class:`rpfm.integrators.GraphEulerCFG` to the model's velocity with the per-step
work hoisted out of the loop (:class:`rpfm.hoisted.HoistedVelocity`: timestep embeddings, every adaLN modulation
and the context patch embedding, computed once per call into static tables). The condition (aggregated vector y
and context latents, already doubled for CFG) lives in static buffers; each call copies the new condition and
noise in, refreshes the tables and replays. One sampler serves one
(batch, latent shape, steps, dtype, device, solver, CFG on/off); the guidance scale changes without recapture.

What a captured graph depends on beyond its key, and how a change is noticed (:meth:`ModelGraphSampler.is_stale`):

- Weights: the graph reads parameters through the pointers it captured. In-place updates (``load_state_dict``,
  optimizer steps, ``copy_``) are seen by the next replay. Replacing parameter storage (``model.to(...)``, new
  ``nn.Parameter`` objects) would leave the graph reading freed memory, so every call compares a fingerprint of the
  parameters' storage and **recaptures** when it changed: a replay never uses stale weights.
- Op backends: the graph replays the kernels it captured. The fingerprint also holds the op backends the model
  resolves now (``model.set_backends``, ``ops.use_backend`` + ``model.reset_backends``), so a change recaptures and
  ``RPFMOutput.backends`` always names what ran.

:class:`GraphSamplerCache` keeps at most ``max_size`` samplers (least recently used evicted first; each holds a
private CUDA memory pool), remembers keys whose warm-up or capture failed (so ``sampler_backend="auto"`` falls back
to the eager loop once, with one logged reason, instead of retrying every call), and is safe to use from several
threads: each sampler serialises its calls with a lock (its static buffers are shared).

:class:`CapturedStage` captures any other fixed-shape step around the sampler (``fn(x) -> tensors``, e.g. the
streamer's pose encoding and decoding) in a CUDA graph with a static input buffer; :class:`EagerStage` is its
twin with the same signature that just calls ``fn`` (CPU, and the fallback when capture fails).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable
from collections import OrderedDict

import torch
from torch import Tensor

from .hoisted import HoistedVelocity
from .integrators import GraphEulerCFG, time_grid
from .model import RPFM, Condition

logger = logging.getLogger("rpfm")

DEFAULT_CACHE_SIZE = 4
"""Captured samplers kept per pipeline (env ``RPFM_GRAPH_CACHE_SIZE``)."""


def capture_fingerprint(model: RPFM, device: torch.device, dtype: torch.dtype,
                        *others: torch.nn.Module | None) -> tuple:
    """What a captured graph reads by pointer beyond its key: (the storage of the model's parameters and of the
    ``others``' parameters and buffers, the op backends the model resolves now)."""
    backends = tuple(sorted(model.opset(device, dtype).names.items()))
    storage = tuple((p.data_ptr(), p.dtype) for p in model.parameters())
    storage += tuple((t.data_ptr(), t.dtype) for m in others if m is not None for t in (*m.parameters(), *m.buffers()))
    return storage, backends


class ModelGraphSampler:
    """Captured fixed-step Euler/Heun + CFG sampling of ``model`` for one shape (see the module docstring).

    cond: a condition of batch B (not doubled); noise: (B, C, h, w). ``__call__`` returns a new float32 tensor at
    t = 0 (the ODE state is fp32 whatever the model's dtype).
    """

    def __init__(self, model: RPFM, cond: Condition, *, num_steps: int, guided: bool, solver: str = "euler",
                 warmup_steps: int = 2):
        self.model = model
        self.guided = guided
        self.device, self.dtype = cond.y.device, cond.y.dtype
        self._lock = threading.Lock()
        with torch.inference_mode(False):    # static buffers stay normal tensors (updated in place by later calls)
            template = cond.with_null() if guided else cond
            self.static = Condition(template.y.clone(), None if template.ctx is None else template.ctx.clone())
            self.velocity = HoistedVelocity(model, self.static, time_grid(num_steps, self.device)[0])
        cfg = model.config
        # The integrator (a C++ object) must not hold a reference back to self (see rpfm.integrators).
        self.integrator = GraphEulerCFG(
            self.velocity, batch_size=cond.batch_size, latent_shape=(cfg.latent_channels, cfg.latent_size,
                                                                     cfg.latent_size),
            num_steps=num_steps, guidance_scale=1.0, dtype=self.dtype, device=self.device, solver=solver,
            cfg=guided, indexed=True, warmup_steps=warmup_steps)
        self.fingerprint = capture_fingerprint(model, self.device, self.dtype)

    @property
    def nfe(self) -> int:
        return self.integrator.nfe

    @property
    def backends(self) -> dict:
        """The op backends this sampler runs (captured, on CUDA)."""
        return dict(self.fingerprint[1])

    def is_stale(self) -> bool:
        return capture_fingerprint(self.model, self.device, self.dtype) != self.fingerprint

    @torch.no_grad()
    def __call__(self, cond: Condition, noise: Tensor, guidance_scale: float) -> Tensor:
        B = self.integrator.batch_size
        with self._lock:                                      # static buffers: one call at a time
            self.static.y[:B].copy_(cond.y)                   # the null half stays zero
            if self.static.ctx is not None:
                self.static.ctx[:B].copy_(cond.ctx)
                if self.guided:
                    self.static.ctx[B:].copy_(cond.ctx)
            self.velocity.update(self.static)                 # per-call tables, before the loop (not per step)
            if self.guided:
                self.integrator.set_guidance(guidance_scale)
            return self.integrator(noise).clone()


def _cache_size() -> int:
    raw = os.environ.get("RPFM_GRAPH_CACHE_SIZE", "")
    try:
        size = int(raw) if raw else DEFAULT_CACHE_SIZE
    except ValueError:
        raise ValueError(f"RPFM_GRAPH_CACHE_SIZE: expected an int >= 1, got {raw!r}.") from None
    if size < 1:
        raise ValueError(f"RPFM_GRAPH_CACHE_SIZE: expected an int >= 1, got {size}.")
    return size


class GraphSamplerCache:
    """ModelGraphSamplers keyed by everything a captured graph depends on; stale ones are rebuilt, the least
    recently used is evicted beyond ``max_size``, and keys that failed to capture are remembered (see the module
    docstring)."""

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
            raise ValueError(f"max_size: expected an int >= 1, got {max_size!r}.")
        self.max_size = max_size if max_size is not None else _cache_size()
        self._samplers: OrderedDict[tuple, ModelGraphSampler] = OrderedDict()
        self._failed: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._samplers)

    def clear(self) -> None:
        with self._lock:
            self._samplers.clear()
            self._failed.clear()

    @staticmethod
    def key(noise: Tensor, dtype: torch.dtype, *, num_steps: int, guided: bool, solver: str) -> tuple:
        return (tuple(noise.shape), dtype, noise.device, num_steps, guided, solver)

    def failure(self, key: tuple) -> str | None:
        """Why capture failed for ``key`` earlier (None if it did not)."""
        return self._failed.get(key)

    def mark_failed(self, key: tuple, reason: str) -> None:
        with self._lock:
            self._samplers.pop(key, None)
            self._failed[key] = reason

    def get(self, model: RPFM, cond: Condition, noise: Tensor, *, num_steps: int, guided: bool,
            solver: str) -> ModelGraphSampler:
        key = self.key(noise, cond.y.dtype, num_steps=num_steps, guided=guided, solver=solver)
        with self._lock:
            sampler = self._samplers.get(key)
            if sampler is not None and not sampler.is_stale():
                self._samplers.move_to_end(key)
                return sampler
            self._samplers.pop(key, None)    # free the old graph before capturing a new one
            while len(self._samplers) >= self.max_size:
                self._samplers.popitem(last=False)
            sampler = self._samplers[key] = ModelGraphSampler(model, cond, num_steps=num_steps, guided=guided,
                                                              solver=solver)
            return sampler


class EagerStage:
    """``fn(x)`` run as is: the twin of :class:`CapturedStage` (same signature) on CPU and after a failed capture."""

    kind = "eager"

    def __init__(self, fn: Callable[[Tensor], Any], example: Tensor):
        self.fn = fn

    def __call__(self, x: Tensor) -> Any:
        return self.fn(x)


class CapturedStage:
    """``fn(x)`` captured in one CUDA graph for ``example``'s shape, dtype and device.

    A call copies ``x`` into the static input buffer and replays; it returns the outputs ``fn`` returned during
    capture (static buffers, overwritten by the next call: copy what must outlive it). ``fn`` must be capturable:
    no host syncs, no data-dependent Python control flow; it may read other tensors that stay in place (weights,
    constants). Warm-up runs ``warmup`` calls on a side stream; the capture is thread-local (other threads' CUDA
    calls cannot invalidate it). Static buffers are made outside inference mode, so a first call inside
    ``torch.inference_mode()`` does not break later ones. Warm-up or capture errors propagate to the caller.
    """

    kind = "cuda-graph"

    def __init__(self, fn: Callable[[Tensor], Any], example: Tensor, *, warmup: int = 2):
        device = example.device
        with torch.inference_mode(False), torch.no_grad():
            self.static_in = example.clone()
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    fn(self.static_in)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.static_out = fn(self.static_in)

    def __call__(self, x: Tensor) -> Any:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


_logged: set[str] = set()


def log_fallback_once(reason: str, what: str = "graph sampler", instead: str = "sampling with the eager loop") -> None:
    """One warning per distinct reason (a capture that failed is not retried, so it is not reported again)."""
    if reason not in _logged:
        _logged.add(reason)
        logger.warning("rpfm: %s unavailable (%s); %s.", what, reason, instead)
