"""Fixed-step Euler / Heun + classifier-free-guidance integrators: the eager reference and the CUDA-graph engine.

:class:`EagerEulerCFG` is the spec: a plain Python loop over :func:`rpfm.ops.reference.euler_cfg_step_ref`.
:class:`GraphEulerCFG` runs the same loop in C++ (``rpfm._C.EulerCFGGraph``), captured once into a single CUDA graph
and replayed; on CPU it runs that C++ loop eagerly. Both have the same constructor and call signature, and on the
same inputs they agree to fp32 rounding (on CPU, bit for bit).

Conventions (rpfm.flow): integrate dx/dt = v from t = 1 (noise) to t = 0 (data) on the uniform grid
t_i = 1 - i/N, i = 0..N, with dt = -1/N. With guidance the velocity is v_u + w (v_c - v_u) (Eq. 7) on all channels.

The ``velocity_fn(x_in, t) -> v`` contract:

- ``x_in``: (B_in, C, h, w). With CFG on, B_in = 2B and ``x_in = [x; x]``: return ``[v_cond; v_uncond]``,
  conditional half first (the batched CFG forward; the function applies the null condition to the second half).
  With CFG off, B_in = B. CFG is on when ``guidance_scale != 1`` (LFM: w = 1 skips the unconditional pass), or when
  ``cfg=True`` is passed so the scale can change later without a new capture.
- ``t``: (B_in,) float32 on the device, every entry the current time t_k. It is a view of a static table: read it,
  never modify it in place; the same holds for ``x_in``. With ``indexed=True`` the function gets the grid index
  k (an int, t_k = ``integrator.t[k]``) instead, so it can read tables precomputed for the grid
  (:class:`rpfm.hoisted.HoistedVelocity`).
- Returns v: (B_in, C, h, w) in ``dtype`` on ``device``. It runs under ``torch.no_grad()``.
- ``dtype`` is the velocity's (the model's) dtype; the ODE state is always float32 (x_in is the state cast to
  ``dtype``; each update computes in fp32 and stores fp32), so a bf16 model does not round the state 60 times.
  Noise may be float32 or ``dtype``; the result is float32.
- For the graph variant it must be capturable: no host syncs (``.item()``, ``.cpu()``, data-dependent Python
  control flow), no new shapes per call, and it must not keep a reference to the integrator (the C++ object owns
  it, and that cycle is invisible to Python's garbage collector).

Solvers: ``"euler"`` (N evaluations) and ``"heun"`` (2N: predictor x + dt k1, corrector x + dt/2 (k1 + k2) with k2 at
t_{i+1}, the last step included).

Example::

    field = lambda x, t: -x                      # any (x_in, t) -> v
    sampler = GraphEulerCFG(field, batch_size=2, latent_shape=(4, 32, 32), num_steps=10, guidance_scale=1.0,
                            dtype=torch.float32, device="cuda")
    x0 = sampler(torch.randn(2, 4, 32, 32, device="cuda")).clone()   # clone: the result is a static buffer
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch
from torch import Tensor

from . import _ext, samplers
from .flow import check_guidance_scale
from .ops.reference import euler_cfg_step_ref
from .samplers import check_num_steps

VelocityFn = Callable[[Tensor, Tensor], Tensor]
SOLVERS = ("euler", "heun")


def time_grid(num_steps: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The uniform grid from noise to data: t (N + 1,) with t_i = 1 - i/N, and dt (N,) = -1/N. Both float32."""
    n = check_num_steps(num_steps)
    return samplers.time_grid(n, device=device), torch.full((n,), -1.0 / n, dtype=torch.float32, device=device)


# ---------------------------------------------------------------------------------------------------- checks
def _check_guidance(guidance_scale: float, cfg: bool) -> float:
    guidance_scale = check_guidance_scale(guidance_scale)
    if not cfg and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale: {guidance_scale} needs the unconditional branch, but this integrator was "
                         f"built with cfg=False; build it with cfg=True (or a guidance_scale != 1).")
    return guidance_scale


class _FixedStepCFG:
    """Shared constructor, validation and static tables of the two integrators."""

    def __init__(self, velocity_fn: VelocityFn, *, batch_size: int, latent_shape: Sequence[int], num_steps: int,
                 guidance_scale: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 solver: str = "euler", cfg: bool | None = None, indexed: bool = False):
        if not callable(velocity_fn):
            raise TypeError(f"velocity_fn: expected a callable (x_in, t) -> v, got {type(velocity_fn).__name__}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}.")
        latent_shape = tuple(int(s) for s in latent_shape)
        if len(latent_shape) != 3 or min(latent_shape) < 1:
            raise ValueError(f"latent_shape: expected (C, h, w) with positive sizes, got {latent_shape}.")
        if solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}.")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {dtype}.")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.velocity_fn = velocity_fn
        self.indexed = bool(indexed)
        self.batch_size = batch_size
        self.latent_shape = latent_shape
        self.num_steps = check_num_steps(num_steps)
        self.solver = solver
        self.dtype = dtype
        self.device = device
        self.cfg = (guidance_scale != 1.0) if cfg is None else bool(cfg)
        self.guidance_scale = _check_guidance(guidance_scale, self.cfg)
        with torch.inference_mode(False):   # static tables: normal tensors even if built inside inference mode
            self.t, self.dt = time_grid(num_steps, device)                             # (N + 1,), (N,)
            b_in = 2 * batch_size if self.cfg else batch_size
            self._t_table = self.t[:, None].expand(num_steps + 1, b_in).contiguous()    # (N + 1, B_in)
            self._t_rows = list(self._t_table.unbind(0))                               # N + 1 views of (B_in,)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, C, h, w) of the noise and of the result."""
        return (self.batch_size, *self.latent_shape)

    @property
    def nfe(self) -> int:
        """velocity_fn evaluations per call (a batched cond + uncond evaluation counts once, as in LFM)."""
        return self.num_steps * (2 if self.solver == "heun" else 1)

    def _check_noise(self, noise: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(noise, Tensor):
            raise TypeError(f"{name}: noise must be a Tensor, got {type(noise).__name__}.")
        if tuple(noise.shape) != self.shape:
            raise ValueError(f"{name}: noise must have shape {self.shape} (batch_size, *latent_shape), got "
                             f"{tuple(noise.shape)}. Build a new integrator for a new shape (each shape is its own "
                             f"captured graph).")
        if noise.dtype not in (torch.float32, self.dtype):
            raise ValueError(f"{name}: noise must be float32 (the state's dtype) or {self.dtype}, got {noise.dtype}.")
        if noise.device != self.device:
            raise ValueError(f"{name}: noise must be on {self.device}, got {noise.device}.")


# ---------------------------------------------------------------------------------------------------- eager
class EagerEulerCFG(_FixedStepCFG):
    """The reference fixed-step Euler / Heun + CFG integrator: a Python loop over ``euler_cfg_step_ref``.

    ``__call__(noise)`` takes noise (B, C, h, w) at t = 1 and returns a new float32 tensor (B, C, h, w) at t = 0.
    """

    def __init__(self, velocity_fn: VelocityFn, *, batch_size: int, latent_shape: Sequence[int], num_steps: int,
                 guidance_scale: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 solver: str = "euler", cfg: bool | None = None, indexed: bool = False):
        super().__init__(velocity_fn, batch_size=batch_size, latent_shape=latent_shape, num_steps=num_steps,
                         guidance_scale=guidance_scale, dtype=dtype, device=device, solver=solver, cfg=cfg,
                         indexed=indexed)
        with torch.inference_mode(False):
            self._half_dt = self.dt * 0.5                                              # exact in fp32
            self._w = torch.tensor(self.guidance_scale, dtype=torch.float32, device=self.device)

    def set_guidance(self, guidance_scale: float) -> None:
        self.guidance_scale = _check_guidance(guidance_scale, self.cfg)
        self._w.fill_(self.guidance_scale)

    def _v(self, x: Tensor, k: int) -> Tensor:
        x_in = (torch.cat([x, x]) if self.cfg else x).to(self.dtype)                  # (B_in, C, h, w)
        return self.velocity_fn(x_in, k if self.indexed else self._t_rows[k])

    @torch.no_grad()
    def __call__(self, noise: Tensor) -> Tensor:
        self._check_noise(noise)
        x, w = noise.to(torch.float32, copy=True), self._w                           # fp32 state
        for i in range(self.num_steps):
            v1 = self._v(x, i)
            if self.solver == "euler":
                euler_cfg_step_ref(x, v1, self.dt[i], w)
                continue
            x_pred = euler_cfg_step_ref(x.clone(), v1, self.dt[i], w)                # x + dt k1
            euler_cfg_step_ref(x, v1, self._half_dt[i], w)                            # x + dt/2 k1
            euler_cfg_step_ref(x, self._v(x_pred, i + 1), self._half_dt[i], w)        # + dt/2 k2
        return x


# ---------------------------------------------------------------------------------------------------- graph
class GraphEulerCFG(_FixedStepCFG):
    """The same loop in C++ (``rpfm._C.EulerCFGGraph``): one CUDA graph per (shape, steps, dtype, cfg, solver).

    The first call warms up ``warmup_steps`` single steps on a side stream and captures one loop (thread-local
    capture mode); later calls copy the noise into the static state and replay. ``set_guidance`` writes the device
    scalar the graph reads (no recapture). On CPU the C++ loop runs eagerly. Raises RuntimeError (with the reason)
    if rpfm._C is unavailable or was not built for this GPU's architecture. Calls are serialised by a lock.

    ``__call__(noise)`` returns the integrator's static float32 state buffer (B, C, h, w): the next call overwrites
    it, so clone it to keep it.
    """

    def __init__(self, velocity_fn: VelocityFn, *, batch_size: int, latent_shape: Sequence[int], num_steps: int,
                 guidance_scale: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 solver: str = "euler", cfg: bool | None = None, indexed: bool = False, warmup_steps: int = 2):
        super().__init__(velocity_fn, batch_size=batch_size, latent_shape=latent_shape, num_steps=num_steps,
                         guidance_scale=guidance_scale, dtype=dtype, device=device, solver=solver, cfg=cfg,
                         indexed=indexed)
        ext = _ext.extension()
        use_graph = self.device.type == "cuda"
        if use_graph and not _ext.has_cuda():
            raise RuntimeError(f"GraphEulerCFG: device {self.device} needs rpfm._C built with CUDA, but "
                               f"{_ext.EXT_REASON}. Rebuild on a machine with nvcc and a CUDA torch: "
                               f"pip install --no-build-isolation .")
        why = _ext.cuda_unsupported(self.device) if use_graph else None
        if why:
            raise RuntimeError(f"GraphEulerCFG: {why}")
        self._lock = threading.Lock()
        # A closure over the function and the static time rows only (not over self): see the module docstring.
        fn, rows = velocity_fn, self._t_rows

        def velocity_at(x_in: Tensor, k: int) -> Tensor:
            return fn(x_in, rows[k])

        self._graph = ext.EulerCFGGraph(
            velocity_fn if self.indexed else velocity_at, batch_size=batch_size,
            latent_shape=list(self.latent_shape), dt=self.dt, guidance=self.guidance_scale, cfg=self.cfg,
            solver=solver, dtype=dtype, device=self.device, use_graph=use_graph, warmup_steps=warmup_steps)

    @property
    def captured(self) -> bool:
        return self._graph.captured

    def set_guidance(self, guidance_scale: float) -> None:
        self.guidance_scale = _check_guidance(guidance_scale, self.cfg)
        self._graph.set_guidance(self.guidance_scale)

    @torch.no_grad()
    def capture(self, noise: Tensor) -> None:
        """Warm up and capture now (``__call__`` does it on first use). ``noise`` only seeds the warm-up."""
        self._check_noise(noise)
        with self._lock:
            self._capture(noise)

    def _capture(self, noise: Tensor) -> None:
        self._graph.x.copy_(noise)
        self._graph.capture()   # with the GIL held; other threads' CUDA calls cannot break it (thread-local mode)

    @torch.no_grad()
    def __call__(self, noise: Tensor) -> Tensor:
        self._check_noise(noise)
        with self._lock:        # one static state: concurrent calls would interleave their steps
            if self._graph.use_graph and not self._graph.captured:
                self._capture(noise)
            return self._graph.run(noise)


__all__ = ["EagerEulerCFG", "GraphEulerCFG", "time_grid", "SOLVERS"]
