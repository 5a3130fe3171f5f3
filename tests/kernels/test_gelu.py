"""gelu_tanh: fused Triton kernel vs rpfm.ops.reference.gelu_tanh_ref."""
from __future__ import annotations

import pytest
import torch

import rpfm.ops
from rpfm.ops import registry
from rpfm.ops.reference import gelu_tanh_ref
from rpfm.testing import assert_close_to_ref, seeded_randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(7,), (3, 5, 7), (2, 16, 4 * 40), (1, 4, 4 * 384),            # MLP hidden = 4 D
          pytest.param((16, 256, 4 * 1152), marks=pytest.mark.cuda, id="preset-XL")]


def _check(kernels, x, name):
    assert_close_to_ref(kernels.gelu.gelu_tanh_triton(x), gelu_tanh_ref(x, upcast=True),
                        gelu_tanh_ref(x, upcast=False), name=name)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity(kernels, device, dtype, shape):
    _check(kernels, seeded_randn(*shape, seed=0, dtype=dtype, device=device) * 3, name=f"gelu {dtype} {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tails_and_zero(kernels, device, dtype):
    """Large |x| (tanh saturates; the clamped exponent must not overflow) and exact zero."""
    x = torch.cat([torch.linspace(-30, 30, 241), torch.zeros(1)]).to(device=device, dtype=dtype)
    _check(kernels, x, name=f"gelu tails {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous(kernels, device, dtype):
    x = seeded_randn(40, 6, seed=1, dtype=dtype, device=device).t()        # (6, 40), column-major
    out = kernels.gelu.gelu_tanh_triton(x)
    assert out.shape == x.shape and out.is_contiguous()
    _check(kernels, x, name="gelu non-contiguous")


def test_empty(kernels, device):
    assert kernels.gelu.gelu_tanh_triton(torch.empty(0, 3, device=device)).shape == (0, 3)


# ---------------------------------------------------------------------------------------------------- registry
def test_registry_refuses_cpu():
    assert registry.resolve("gelu_tanh", device="cpu", dtype=torch.float32).name == "eager"
    with rpfm.ops.use_backend("gelu_tanh", "triton"):
        with pytest.raises(RuntimeError, match=r"gelu_tanh backend 'triton' was requested but "
                                               r"(is unavailable|cannot run here: needs CUDA tensors)"):
            registry.resolve("gelu_tanh", device="cpu", dtype=torch.float32)


@pytest.mark.cuda
def test_dispatch_on_cuda(kernels):
    x = seeded_randn(4, 8, 96, seed=2, dtype=torch.bfloat16, device="cuda")
    assert registry.resolve("gelu_tanh", device="cuda", dtype=torch.bfloat16).name == "triton"
    assert torch.equal(rpfm.ops.gelu_tanh(x), kernels.gelu.gelu_tanh_triton(x))
