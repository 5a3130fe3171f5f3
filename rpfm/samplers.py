"""ODE samplers with one signature: ``sample(f, x1, *, num_steps, ...) -> SampleResult``.

f(x, t) is the (guided) velocity; x1 (B, ...) is the noise at t = 1; integration runs from t = 1 to t = 0 (the
convention of ``rpfm.flow``). Fixed-step solvers use the uniform grid t_i = 1 - i/N.

- ``euler``: N evaluations.
- ``heun``: Heun's second-order method (explicit trapezoid), 2N evaluations.
- ``dopri5``: adaptive Dormand-Prince through torchdiffeq (atol = rtol = 1e-5 by default, LFM); one solve costs
  2 + 6 * (accepted + rejected steps) evaluations. ``num_steps`` is ignored.

``callback(step, t, x) -> x or None`` (optional) runs at the end of every fixed step with the step index, the step's
start time t (a 0-dim tensor) and the new state x; a returned tensor replaces the state (diffusers'
``callback_on_step_end``). dopri5 has no steps the caller could edit: it calls ``callback`` after every velocity
evaluation (step = evaluation index, x = the stage state, read-only) and refuses a returned replacement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, Tensor, Tensor], "Tensor | None"]
SOLVERS = ("euler", "heun", "dopri5")


@dataclass
class SampleResult:
    """x0: (B, ...) the state at t = 0. nfe: number of velocity evaluations (a batched CFG call counts once)."""

    x0: Tensor
    nfe: int


def time_grid(num_steps: int, *, device=None) -> Tensor:
    """The uniform fixed-step grid from 1 to 0: (num_steps + 1,) fp32."""
    n = check_num_steps(num_steps)
    t = 1.0 - torch.arange(n + 1, dtype=torch.float64) / n          # exact endpoints, rounded once to fp32
    return t.to(device=device, dtype=torch.float32)


def check_num_steps(num_steps: int) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps: expected an int >= 1, got {type(num_steps).__name__} {num_steps!r}.")
    if num_steps < 1:
        raise ValueError(f"num_steps: expected an int >= 1 (the paper uses 60 or 30 Euler steps), got {num_steps}.")
    return num_steps


def check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"solver: unknown solver {solver!r}. Choose one of {list(SOLVERS)}.")
    return solver


def check_tolerances(atol: float, rtol: float) -> tuple[float, float]:
    """dopri5's error tolerances: finite numbers > 0 (torchdiffeq would assert on 0 or NaN, and take negative ones
    silently)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: expected a finite number > 0 (the default is 1e-5), got {value!r}.")
    return float(atol), float(rtol)


class _Counted:
    def __init__(self, f: Velocity):
        self.f, self.nfe = f, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.f(x, t)


def _after_step(callback: StepCallback | None, i: int, t: Tensor, x: Tensor) -> Tensor:
    if callback is None:
        return x
    new = callback(i, t, x)
    if new is None:
        return x
    if not isinstance(new, Tensor) or new.shape != x.shape:
        raise ValueError(f"callback: step {i} returned {type(new).__name__}"
                         f"{'' if not isinstance(new, Tensor) else ' of shape ' + str(tuple(new.shape))} as the new "
                         f"latents; expected a tensor of shape {tuple(x.shape)} (or nothing, to keep them).")
    return new.to(x.dtype)


def euler(f: Velocity, x1: Tensor, *, num_steps: int, callback: StepCallback | None = None) -> SampleResult:
    """Fixed-step explicit Euler from t = 1 to t = 0."""
    f = _Counted(f)
    ts = time_grid(num_steps, device=x1.device)
    x = x1
    for i in range(num_steps):
        x = x + (ts[i + 1] - ts[i]) * f(x, ts[i])
        x = _after_step(callback, i, ts[i], x)
    return SampleResult(x, f.nfe)


def heun(f: Velocity, x1: Tensor, *, num_steps: int, callback: StepCallback | None = None) -> SampleResult:
    """Heun's method (explicit trapezoid, 2nd order): predictor Euler step, corrector with the averaged slope."""
    f = _Counted(f)
    ts = time_grid(num_steps, device=x1.device)
    x = x1
    for i in range(num_steps):
        dt = ts[i + 1] - ts[i]
        d0 = f(x, ts[i])
        x_pred = x + dt * d0
        x = x + dt * 0.5 * (d0 + f(x_pred, ts[i + 1]))
        x = _after_step(callback, i, ts[i], x)
    return SampleResult(x, f.nfe)


def dopri5(f: Velocity, x1: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5,
           callback: StepCallback | None = None) -> SampleResult:
    """Adaptive Dormand-Prince 5(4) via torchdiffeq, time in float64 (LFM's options)."""
    atol, rtol = check_tolerances(atol, rtol)
    try:
        from torchdiffeq import odeint
    except ImportError as e:  # pragma: no cover - torchdiffeq is a core dependency
        raise ImportError("solver='dopri5' needs torchdiffeq: pip install torchdiffeq") from e
    counted = _Counted(f)

    def rhs(tt: Tensor, x: Tensor) -> Tensor:
        v = counted(x, tt.to(torch.float32))
        if callback is not None and callback(counted.nfe - 1, tt.to(torch.float32), x) is not None:
            raise ValueError("callback: solver='dopri5' cannot take replaced latents (its stages are not steps a "
                             "caller can edit). Return nothing from the callback, or use solver='euler'/'heun'.")
        return v

    t = torch.tensor([1.0, 0.0], device=x1.device, dtype=torch.float64)
    xs = odeint(rhs, x1, t, method="dopri5", atol=atol, rtol=rtol, options={"dtype": torch.float64})
    return SampleResult(xs[-1], counted.nfe)


def sample(f: Velocity, x1: Tensor, *, solver: str = "euler", num_steps: int = 60, atol: float = 1e-5,
           rtol: float = 1e-5, callback: StepCallback | None = None) -> SampleResult:
    """Integrate dx/dt = f(x, t) from t = 1 (x1, noise) to t = 0 with the named solver."""
    check_solver(solver)
    if solver == "dopri5":
        return dopri5(f, x1, atol=atol, rtol=rtol, callback=callback)
    check_num_steps(num_steps)
    return (euler if solver == "euler" else heun)(f, x1, num_steps=num_steps, callback=callback)
