"""gated_residual_adaln: fused Triton kernel vs rpfm.ops.reference.gated_residual_adaln_ref."""
from __future__ import annotations

import pytest
import torch

import rpfm.ops
from rpfm.ops import registry
from rpfm.ops.reference import gated_residual_adaln_ref
from rpfm.testing import assert_close_to_ref, seeded_randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HIDDEN = [40, 384, 1152]
BATCH_TOKENS = [(1, 4), (2, 16), pytest.param(16, 256, marks=pytest.mark.cuda, id="preset-16x256")]


def _inputs(B, T, D, dtype, device, *, shared: bool = False, seed: int = 10):
    x = seeded_randn(B, T, D, seed=seed, dtype=dtype, device=device) * 3
    y = seeded_randn(B, T, D, seed=seed + 1, dtype=dtype, device=device)
    rows = 1 if shared else B
    gate, shift, scale = (seeded_randn(rows, D, seed=seed + i, dtype=dtype, device=device) for i in (2, 3, 4))
    return x, y, gate, shift, scale * 0.5


def _check(kernels, args, name):
    x_new, h = kernels.gated_residual.gated_residual_adaln_triton(*args, eps=1e-6)
    truth = gated_residual_adaln_ref(*args, upcast=True)
    lowp = gated_residual_adaln_ref(*args, upcast=False)
    assert x_new.is_contiguous() and h.is_contiguous()
    assert_close_to_ref(x_new, truth[0], lowp[0], name=f"{name} x'")
    assert_close_to_ref(h, truth[1], lowp[1], name=f"{name} h")


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
@pytest.mark.parametrize("B,T", BATCH_TOKENS)
@pytest.mark.parametrize("D", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity(kernels, device, dtype, D, B, T, shared):
    _check(kernels, _inputs(B, T, D, dtype, device, shared=shared), name=f"gated_residual {dtype} D={D}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous(kernels, device, dtype):
    B, T, D = 2, 8, 40
    x, y, gate, shift, scale = _inputs(B, T, D, dtype, device)
    x = x.transpose(0, 1).contiguous().transpose(0, 1)                      # (B, T, D) viewed from (T, B, D)
    y = torch.cat([y, y], dim=-1)[..., ::2]                                  # last-dim stride 2: copied
    gate = gate.t().contiguous().t()                                         # (B, D) with stride (1, B)
    assert not (x.is_contiguous() or y.is_contiguous() or gate.is_contiguous())
    _check(kernels, (x, y, gate, shift, scale), name="gated_residual non-contiguous")


def test_zero_gate_is_adaln(kernels, device):
    """adaLN-Zero at init: gate = 0 leaves the residual stream untouched and h = adaln(x)."""
    x, y, gate, shift, scale = _inputs(2, 4, 40, torch.float32, device)
    x_new, h = kernels.gated_residual.gated_residual_adaln_triton(x, y, torch.zeros_like(gate), shift, scale)
    assert torch.equal(x_new, x)
    torch.testing.assert_close(h, kernels.adaln.adaln_modulate_triton(x, shift, scale), rtol=0, atol=0)


def test_bad_shapes(kernels, device):
    x = torch.zeros(2, 4, 40, device=device)
    v = torch.zeros(2, 40, device=device)
    with pytest.raises(ValueError, match=r"gated_residual_adaln: y must have shape \(B, T, D\) like x = \(2, 4, 40\), "
                                         r"got \(2, 5, 40\)"):
        kernels.gated_residual.gated_residual_adaln_triton(x, torch.zeros(2, 5, 40, device=device), v, v, v)
    with pytest.raises(ValueError, match=r"gate must have shape"):
        kernels.gated_residual.gated_residual_adaln_triton(x, x, torch.zeros(3, 40, device=device), v, v)
    with pytest.raises(ValueError, match=r"hidden size D=20000 exceeds the max block"):
        w = torch.zeros(1, 1, 20000, device=device)
        kernels.gated_residual.gated_residual_adaln_triton(w, w, w[0], w[0], w[0])


# ---------------------------------------------------------------------------------------------------- registry
def test_auto_selection_never_picks_triton_on_cpu():
    assert registry.resolve("gated_residual_adaln", device="cpu", dtype=torch.float16).name == "cpu"   # rpfm.ops.cpu, never triton


def test_explicit_triton_on_cpu_raises_with_reason():
    with rpfm.ops.use_backend("gated_residual_adaln", "triton"):
        with pytest.raises(RuntimeError, match=r"gated_residual_adaln backend 'triton' was requested but "
                                               r"(is unavailable|cannot run here: needs CUDA tensors)"):
            registry.resolve("gated_residual_adaln", device="cpu", dtype=torch.float32)


@pytest.mark.cuda
def test_dispatch_on_cuda(kernels):
    args = _inputs(2, 16, 384, torch.bfloat16, "cuda")
    assert registry.resolve("gated_residual_adaln", device="cuda", dtype=torch.bfloat16).name == "triton"
    for got, want in zip(rpfm.ops.gated_residual_adaln(*args),
                         kernels.gated_residual.gated_residual_adaln_triton(*args)):
        assert torch.equal(got, want)


def test_forced_eager_is_the_reference(device):
    args = _inputs(2, 4, 40, torch.float32, device)
    with rpfm.ops.use_backend("gated_residual_adaln", "eager"):
        out = rpfm.ops.gated_residual_adaln(*args)
    for got, want in zip(out, gated_residual_adaln_ref(*args)):
        assert torch.equal(got, want)
