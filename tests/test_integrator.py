"""EagerEulerCFG (the reference) on closed-form fields, and GraphEulerCFG == EagerEulerCFG.

Closed forms (t = 1 -> 0, uniform grid, dt = -1/N, x_0 the noise at t = 1):
- dx/dt = a x: one Euler step multiplies by (1 + dt a) = (1 - a/N), so x_N = (1 - a/N)^N x_0; one Heun step by
  1 + dt a + (dt a)^2 / 2 = 1 - h + h^2/2 with h = a/N. The exact flow is x(0) = e^{-a} x_0.
- dx/dt = 3 t^2 (x-independent): Euler adds dt * 3 t_i^2 (left Riemann sum of -int_0^1 3t^2 = -1), i.e.
  x_N = x_0 - (3/N) sum_{j=1..N} (j/N)^2 = x_0 - (N + 1)(2N + 1) / (2 N^2); Heun adds the trapezoid
  dt/2 * 3 (t_i^2 + t_{i+1}^2).
- CFG with v_c = a x, v_u = b x: the guided field is (b + w (a - b)) x, a linear field with that rate.
"""
from __future__ import annotations

import math

import pytest
import torch

from rpfm import _ext
from rpfm.integrators import EagerEulerCFG, GraphEulerCFG, time_grid

from .conftest import requires_cuda, requires_ext, run_python

SOLVERS = ["euler", "heun"]
SHAPE = (2, (3, 5, 4))  # B, (C, h, w): odd sizes on purpose


def linear_field(a: float, b: float | None = None):
    """v = a x (no CFG), or [a x_c; b x_u] for the doubled CFG batch."""
    def f(x_in, t):
        if b is None:
            return a * x_in
        B = x_in.shape[0] // 2
        return torch.cat([a * x_in[:B], b * x_in[B:]])
    return f


def linear_factor(rate: float, n: int, solver: str) -> float:
    h = rate / n
    step = 1 - h if solver == "euler" else 1 - h + h * h / 2
    return step ** n


def make(cls, field, *, n=8, w=1.0, solver="euler", dtype=torch.float32, device="cpu", B=SHAPE[0],
         latent=SHAPE[1], **kw):
    return cls(field, batch_size=B, latent_shape=latent, num_steps=n, guidance_scale=w, dtype=dtype,
               device=device, solver=solver, **kw)


def noise(B=SHAPE[0], latent=SHAPE[1], dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, *latent, generator=g).to(device=device, dtype=dtype)


class TinyField(torch.nn.Module):
    """A small conv field with time and a CFG condition: v = net(x) + t * c, with c zero for the uncond half."""

    def __init__(self, channels: int, b_in: int, cfg: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(channels, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, channels, 1)
        self.lin = torch.nn.Linear(1, 8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        c = torch.randn(b_in, channels, 1, 1, generator=g)
        if cfg:
            c[b_in // 2:] = 0                                      # null condition on the uncond half
        self.register_buffer("c", c)

    def forward(self, x, t):
        t = t.to(x.dtype)                                             # the time table is fp32
        temb = self.lin(t[:, None])[:, :, None, None]                 # (B_in, 8, 1, 1)
        h = torch.nn.functional.silu(self.conv1(x) + temb)
        return self.conv2(h) + t[:, None, None, None] * self.c


def tiny_field(w, B=SHAPE[0], latent=SHAPE[1], dtype=torch.float32, device="cpu"):
    cfg = w != 1.0
    return TinyField(latent[0], 2 * B if cfg else B, cfg).to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------- grid
def test_time_grid():
    t, dt = time_grid(4)
    assert t.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert dt.tolist() == [-0.25] * 4
    assert t.dtype == dt.dtype == torch.float32


# ------------------------------------------------------------------------------------------ eager, closed form
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("a", [0.7, -1.3])
def test_eager_linear_field_closed_form(solver, a):
    n = 10
    x0 = noise()
    got = make(EagerEulerCFG, linear_field(a), n=n, solver=solver)(x0)
    torch.testing.assert_close(got, x0 * linear_factor(a, n, solver), rtol=1e-6, atol=1e-6)
    # and it converges to the exact flow e^{-a}: relative error ~ a^2 / 2N (Euler), ~ a^3 / 6N^2 (Heun)
    n = 400
    fine = make(EagerEulerCFG, linear_field(a), n=n, solver=solver)(x0)
    rtol = a * a / n if solver == "euler" else abs(a) ** 3 / (3 * n * n) + 1e-5
    torch.testing.assert_close(fine, x0 * math.exp(-a), rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_eager_time_dependent_field_closed_form(solver):
    n = 7
    x0 = noise()
    got = make(EagerEulerCFG, lambda x, t: 3 * t[:, None, None, None] ** 2 * torch.ones_like(x), n=n,
               solver=solver)(x0)
    if solver == "euler":
        shift = -(n + 1) * (2 * n + 1) / (2 * n ** 2)
    else:
        ts = [1 - i / n for i in range(n + 1)]
        shift = sum(-0.5 / n * 3 * (ts[i] ** 2 + ts[i + 1] ** 2) for i in range(n))
    torch.testing.assert_close(got, x0 + shift, rtol=0, atol=2e-6)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("w", [1.5, 0.0, 3.0])
def test_eager_cfg_linear_closed_form(solver, w):
    a, b, n = 0.8, -0.4, 6
    x0 = noise()
    got = make(EagerEulerCFG, linear_field(a, b), n=n, w=w, solver=solver, cfg=True)(x0)
    torch.testing.assert_close(got, x0 * linear_factor(b + w * (a - b), n, solver), rtol=1e-6, atol=1e-6)


def test_eager_passes_time_and_doubled_batch():
    seen = []

    def field(x_in, t):
        seen.append((x_in.shape[0], t.shape, t[0].item()))
        return torch.zeros_like(x_in)

    make(EagerEulerCFG, field, n=2, w=1.5, solver="heun")(noise())
    assert seen == [(4, (4,), 1.0), (4, (4,), 0.5), (4, (4,), 0.5), (4, (4,), 0.0)]


def test_eager_validation():
    f = linear_field(1.0)
    with pytest.raises(ValueError, match="solver: expected one of"):
        make(EagerEulerCFG, f, solver="rk4")
    with pytest.raises(ValueError, match="num_steps: expected an int >= 1"):
        make(EagerEulerCFG, f, n=0)
    with pytest.raises(ValueError, match="guidance_scale: expected a finite number"):
        make(EagerEulerCFG, f, w=float("nan"))
    with pytest.raises(ValueError, match="built with cfg=False"):
        make(EagerEulerCFG, f, w=2.0, cfg=False)
    sampler = make(EagerEulerCFG, f)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 5, 4\)"):
        sampler(torch.randn(3, 3, 5, 4))
    with pytest.raises(ValueError, match=r"noise must be float32 \(the state.s dtype\)"):
        sampler(noise().half())


# ------------------------------------------------------------------------------------------ graph == eager (CPU)
def _compare(solver, w, dtype=torch.float32, device="cpu", n=5, atol=1e-6):
    field = tiny_field(w, dtype=dtype, device=device)
    x0 = noise(dtype=dtype, device=device)
    eager = make(EagerEulerCFG, field, n=n, w=w, solver=solver, dtype=dtype, device=device)(x0)
    graph = make(GraphEulerCFG, field, n=n, w=w, solver=solver, dtype=dtype, device=device)(x0)
    torch.testing.assert_close(graph, eager, rtol=atol, atol=atol)
    return graph, eager


@requires_ext
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("w", [1.0, 1.1, 2.5])
def test_graph_matches_eager_cpu(solver, w):
    graph, eager = _compare(solver, w)
    assert torch.equal(graph, eager)  # same ops in the same order: bit for bit on CPU


@requires_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_graph_matches_eager_cpu_low_precision(dtype):
    graph, eager = _compare("heun", 1.5, dtype=dtype, atol=0)
    assert torch.equal(graph, eager)


@requires_ext
@pytest.mark.parametrize("solver", SOLVERS)
def test_graph_linear_closed_form_cpu(solver):
    a, b, w, n = 0.8, -0.4, 1.7, 9
    x0 = noise()
    got = make(GraphEulerCFG, linear_field(a, b), n=n, w=w, solver=solver)(x0)
    torch.testing.assert_close(got, x0 * linear_factor(b + w * (a - b), n, solver), rtol=1e-6, atol=1e-6)


@requires_ext
def test_graph_cpu_reuse_set_guidance_and_nfe():
    calls = []
    field = tiny_field(2.0)

    def counted(x_in, t):
        calls.append(1)
        return field(x_in, t)

    sampler = make(GraphEulerCFG, counted, n=4, w=2.0, solver="heun")
    assert sampler.nfe == 8 and not sampler.captured
    first = sampler(noise(seed=1)).clone()
    assert len(calls) == 8
    assert torch.equal(first, make(EagerEulerCFG, field, n=4, w=2.0, solver="heun")(noise(seed=1)))
    sampler.set_guidance(0.5)
    second = sampler(noise(seed=2))
    assert torch.equal(second, make(EagerEulerCFG, field, n=4, w=0.5, solver="heun")(noise(seed=2)))
    # the result is the static state: the next call overwrites it
    third = sampler(noise(seed=3))
    assert third.data_ptr() == second.data_ptr()


@requires_ext
def test_graph_errors_name_the_argument():
    f = tiny_field(1.0)
    with pytest.raises(RuntimeError, match=r"velocity_fn\(x_in, 0\) returned shape \[2, 3, 5\], expected "
                                           r"\[4, 3, 5, 4\] \(the doubled batch"):
        make(GraphEulerCFG, lambda x, t: x[:2, :, :, 0], w=1.5)(noise())
    with pytest.raises(RuntimeError, match=r"returned dtype Double, expected Float"):
        make(GraphEulerCFG, lambda x, t: x.double())(noise())
    with pytest.raises(RuntimeError, match=r"must return a Tensor, got <class 'int'>"):
        make(GraphEulerCFG, lambda x, t: 3)(noise())
    with pytest.raises(ZeroDivisionError):  # a Python error inside velocity_fn keeps its type
        make(GraphEulerCFG, lambda x, t: 1 / 0)(noise())
    sampler = make(GraphEulerCFG, f)
    with pytest.raises(ValueError, match=r"noise must be float32 \(the state.s dtype\) or torch.float32, got "
                                         r"torch.bfloat16"):
        sampler(noise().bfloat16())
    with pytest.raises(ValueError, match=r"guidance_scale: expected a finite number"):
        sampler.set_guidance(float("inf"))
    with pytest.raises(ValueError, match="built with cfg=False"):
        sampler.set_guidance(2.0)


@requires_ext
def test_cpp_class_errors():
    C = _ext.extension()
    t, dt = time_grid(3)
    kw = dict(batch_size=1, latent_shape=[2, 3, 3], dt=dt, guidance=1.0, cfg=False, solver="euler",
              dtype=torch.float32, device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"CUDA graph was requested \(use_graph=True\) for device cpu"):
        C.EulerCFGGraph(lambda x, k: x, use_graph=True, **kw)
    g = C.EulerCFGGraph(lambda x, k: x, use_graph=False, **kw)
    assert g.steps == 3 and g.nfe == 3 and g.shape == [1, 2, 3, 3] and g.dtype == torch.float32
    with pytest.raises(RuntimeError, match=r"capture: this sampler runs eagerly"):
        g.capture()
    with pytest.raises(RuntimeError, match=r"guidance must be finite, got nan"):
        C.EulerCFGGraph(lambda x, k: x, use_graph=False, **{**kw, "cfg": True, "guidance": float("nan")})
    with pytest.raises(RuntimeError, match=r"noise must be on cpu, got meta"):
        g.run(torch.empty(1, 2, 3, 3, device="meta"))
    with pytest.raises(RuntimeError, match=r"solver must be \"euler\" or \"heun\", got \"rk4\""):
        C.EulerCFGGraph(lambda x, k: x, use_graph=False, **{**kw, "solver": "rk4"})
    # the k passed to velocity_fn indexes the time grid: Heun visits t_i then t_{i+1}
    seen = []
    h = C.EulerCFGGraph(lambda x, k: seen.append(k) or torch.zeros_like(x), use_graph=False,
                        **{**kw, "solver": "heun"})
    h.run(torch.zeros(1, 2, 3, 3))
    assert seen == [0, 1, 1, 2, 2, 3]


def test_graph_without_extension_raises_with_reason():
    code = ("from rpfm.integrators import GraphEulerCFG\n"
            "try:\n"
            "    GraphEulerCFG(lambda x, t: x, batch_size=1, latent_shape=(1, 2, 2), num_steps=2, guidance_scale=1.0)\n"
            "except RuntimeError as e:\n"
            "    print('raised:', e)\n")
    out = run_python(code, {"RPFM_DISABLE_EXT": "1"})
    assert out.startswith("raised:") and "RPFM_DISABLE_EXT" in out


# ---------------------------------------------------------------------------------------------------- CUDA
@requires_cuda
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("w", [1.0, 1.1])
def test_graph_matches_eager_cuda(solver, w):
    _compare(solver, w, device="cuda", n=6, atol=1e-5)


@requires_cuda
def test_graph_cuda_replay_fresh_noise_deterministic_and_guidance():
    w, n = 1.5, 5
    field = tiny_field(w, device="cuda")
    sampler = make(GraphEulerCFG, field, n=n, w=w, solver="heun", device="cuda")
    eager = make(EagerEulerCFG, field, n=n, w=w, solver="heun", device="cuda")
    first = sampler(noise(device="cuda", seed=1)).clone()
    assert sampler.captured
    torch.testing.assert_close(first, eager(noise(device="cuda", seed=1)), rtol=1e-5, atol=1e-5)
    # fresh noise: catches a forgotten copy into the static state
    second = sampler(noise(device="cuda", seed=2)).clone()
    torch.testing.assert_close(second, eager(noise(device="cuda", seed=2)), rtol=1e-5, atol=1e-5)
    assert not torch.equal(first, second)
    # two replays of the same input are bit-identical
    again = sampler(noise(device="cuda", seed=2)).clone()
    assert torch.equal(again, second)
    # guidance changes through the device scalar, without recapture
    graph_before = sampler._graph
    sampler.set_guidance(3.0)
    eager.set_guidance(3.0)
    third = sampler(noise(device="cuda", seed=2)).clone()
    assert sampler._graph is graph_before and sampler.captured
    torch.testing.assert_close(third, eager(noise(device="cuda", seed=2)), rtol=1e-5, atol=1e-5)
    assert not torch.equal(third, second)


@requires_cuda
def test_graph_cuda_new_shape_recaptures():
    w = 1.1
    for B, latent in ((2, (4, 8, 8)), (3, (4, 16, 12))):
        field = tiny_field(w, B=B, latent=latent, device="cuda")
        x0 = noise(B=B, latent=latent, device="cuda")
        sampler = make(GraphEulerCFG, field, n=4, w=w, B=B, latent=latent, device="cuda")
        got = sampler(x0).clone()
        expected = make(EagerEulerCFG, field, n=4, w=w, B=B, latent=latent, device="cuda")(x0)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="Build a new integrator for a new shape"):
            sampler(noise(B=B + 1, latent=latent, device="cuda"))


@requires_cuda
def test_graph_cuda_bf16_close_to_eager():
    field = tiny_field(1.1, dtype=torch.bfloat16, device="cuda")
    x0 = noise(dtype=torch.bfloat16, device="cuda")
    eager = make(EagerEulerCFG, field, n=6, w=1.1, dtype=torch.bfloat16, device="cuda")(x0)
    graph = make(GraphEulerCFG, field, n=6, w=1.1, dtype=torch.bfloat16, device="cuda")(x0)
    torch.testing.assert_close(graph.float(), eager.float(), rtol=2e-2, atol=2e-2)


@requires_cuda
def test_graph_cuda_linear_closed_form():
    a, b, w, n = 0.8, -0.4, 1.7, 9
    x0 = noise(device="cuda")
    got = make(GraphEulerCFG, linear_field(a, b), n=n, w=w, solver="heun", device="cuda")(x0)
    torch.testing.assert_close(got, x0 * linear_factor(b + w * (a - b), n, "heun"), rtol=1e-5, atol=1e-5)
