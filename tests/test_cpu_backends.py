"""The CPU fast backends (oneDNN linear with fused bias/GELU, fewer-pass adaLN) and the cuBLASLt GELU epilogue
against their eager references."""
from __future__ import annotations

import pytest
import torch

from rpfm import _ext, ops
from rpfm.ops import reference as ref
from rpfm.ops.cpu import adaln_modulate_cpu, gated_residual_adaln_cpu
from rpfm.ops.linear import (GELU_CHUNK, gelu_tanh_, linear_gelu_tanh_cpu, linear_gelu_tanh_cublaslt,
                             linear_gelu_tanh_onednn, linear_onednn, packed_weight)

ONEDNN = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _lin(M=(3, 17), K=40, N=72, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*M, K, generator=g), torch.randn(N, K, generator=g) / K ** 0.5,
            torch.randn(N, generator=g) if bias else None)


@ONEDNN
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_and_gelu_epilogue_match_reference(bias):
    x, w, b = _lin(bias=bias)
    with torch.no_grad():
        torch.testing.assert_close(linear_onednn(x, w, b), ref.linear_ref(x, w, b), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(linear_gelu_tanh_onednn(x, w, b), ref.linear_gelu_tanh_ref(x, w, b),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_cpu_linear_gelu_matches_reference_and_keeps_autograd(bias):
    x, w, b = _lin(bias=bias)
    with torch.no_grad():
        torch.testing.assert_close(linear_gelu_tanh_cpu(x, w, b), ref.linear_gelu_tanh_ref(x, w, b),
                                   rtol=1e-5, atol=1e-5)
    w = torch.nn.Parameter(w)
    linear_gelu_tanh_cpu(x, w, b).square().sum().backward()          # the reference path, differentiable
    w_ref = torch.nn.Parameter(w.detach().clone())
    ref.linear_gelu_tanh_ref(x, w_ref, b).square().sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)


def test_sigmoid_form_gelu_equals_tanh_gelu_everywhere():
    # (1 + tanh u) / 2 == sigmoid(2u): the in-place CPU GELU must match ATen's tanh GELU over the whole line,
    # including the saturated tails (|x| up to 60, where x^3 is large and sigmoid underflows to 0 / rounds to 1).
    x = torch.cat([torch.linspace(-60, 60, 200_001), torch.randn(10_000) * 3, torch.tensor([0.0, -0.0, 1e-30])])
    want = torch.nn.functional.gelu(x, approximate="tanh")
    y = x.clone()
    got = gelu_tanh_(y)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-6)
    assert got.data_ptr() == y.data_ptr() and torch.isfinite(got).all()          # in place, no inf/nan in tails
    # several chunks with a short last one, and a non-contiguous view (one pass without chunks)
    z = torch.randn(3 * GELU_CHUNK + 5) * 4
    torch.testing.assert_close(gelu_tanh_(z.clone()), torch.nn.functional.gelu(z, approximate="tanh"),
                               rtol=2e-6, atol=1e-6)
    m = torch.randn(64, 96) * 4
    view = m.clone().t()
    torch.testing.assert_close(gelu_tanh_(view), torch.nn.functional.gelu(m.t(), approximate="tanh"),
                               rtol=2e-6, atol=1e-6)


@ONEDNN
def test_onednn_packed_weight_follows_in_place_updates():
    x, w, b = _lin()
    w = torch.nn.Parameter(w)
    with torch.no_grad():
        first = packed_weight(w)
        assert packed_weight(w) is first                      # cached
        w.mul_(2)                                             # load_state_dict / optimizer-style in-place update
        torch.testing.assert_close(linear_onednn(x, w, b), ref.linear_ref(x, w, b), rtol=1e-5, atol=1e-5)
    assert packed_weight(w) is not first


@ONEDNN
def test_onednn_falls_back_when_gradients_are_needed():
    x, w, b = _lin()
    w = torch.nn.Parameter(w)
    out = linear_gelu_tanh_onednn(x, w, b)
    out.sum().backward()
    assert w.grad is not None


def test_cublaslt_adapter_shapes_and_bias_on_cpu():
    # torch._addmm_activation also runs on CPU, where ATen applies the exact (erf) GELU; CUDA applies the tanh form
    # (cuBLASLt's GELU epilogue, or gelu_(..., "tanh") when Lt cannot run). This checks the adapter's reshape and
    # bias on CPU; the tanh parity is the CUDA test below.
    x, w, b = _lin()
    torch.testing.assert_close(linear_gelu_tanh_cublaslt(x, w, b), torch.nn.functional.gelu(x @ w.t() + b),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cublaslt_gelu_epilogue_matches_reference_cuda(dtype):
    x, w, b = (t.cuda() for t in _lin(M=(16, 256), K=384, N=1536))
    truth = ref.linear_gelu_tanh_ref(x, w, b)
    got = linear_gelu_tanh_cublaslt(x.to(dtype), w.to(dtype), b.to(dtype)).float()
    eager = ref.linear_gelu_tanh_ref(x.to(dtype), w.to(dtype), b.to(dtype)).float()
    assert (got - truth).abs().max() <= 2 * (eager - truth).abs().max() + 1e-5


@pytest.mark.parametrize("B, T, D", [(1, 16, 384), (4, 64, 1023)])
def test_fewer_pass_adaln_matches_reference(B, T, D):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g)
    gate, shift, scale = (torch.randn(B, D, generator=g) for _ in range(3))
    torch.testing.assert_close(adaln_modulate_cpu(x, shift, scale), ref.adaln_modulate_ref(x, shift, scale),
                               rtol=1e-5, atol=1e-5)
    for got, want in zip(gated_residual_adaln_cpu(x, y, gate, shift, scale),
                         ref.gated_residual_adaln_ref(x, y, gate, shift, scale)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cpu_resolution_and_forced_eager():
    names = ops.resolve_opset("cpu", torch.float32, head_dim=64).names
    fused = "cpp" if _ext.HAS_EXT else "cpu"                 # the C++ one-pass kernels, else the PyTorch tier
    assert names["adaln_modulate"] == names["gated_residual_adaln"] == fused
    assert names["linear"] == "eager" and names["linear_gelu_tanh"] == "cpu"   # MKL matmul (measured fastest here)
    assert ops.resolve_opset("cpu", torch.bfloat16, head_dim=64).names["linear"] == "eager"
    with ops.use_backend("*", "eager"):
        eager = ops.resolve_opset("cpu", torch.float32, head_dim=64)
    x, w, b = _lin()
    assert torch.equal(eager.linear_gelu_tanh(x, w, b), ref.linear_gelu_tanh_ref(x, w, b))
