"""patchify / unpatchify: fused Triton gathers vs rpfm.ops.reference. Pure data movement, so bit-exact."""
from __future__ import annotations

import pytest
import torch

import rpfm.ops
from rpfm.ops import registry
from rpfm.ops.reference import patchify_ref, unpatchify_ref
from rpfm.testing import seeded_randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (Cx, Cc, h, w): the RPFM layout (x C=4, ctx = source + pose latents 2C=8), odd channel counts, a non-square crop.
PATCHIFY_SHAPES = [(4, 8, 8, 8), (3, 5, 4, 12), (1, 0, 4, 4),
                   pytest.param(4, 8, 32, 32, marks=pytest.mark.cuda, id="preset-32x32")]


def _exact(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous()
    assert torch.equal(got, want), f"max diff {(got.double() - want.double()).abs().max().item():.3e}"


@pytest.mark.parametrize("p", [1, 2, 4])
@pytest.mark.parametrize("Cx,Cc,h,w", PATCHIFY_SHAPES)
@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_patchify(kernels, device, dtype, B, Cx, Cc, h, w, p):
    x = seeded_randn(B, Cx, h, w, seed=0, dtype=dtype, device=device)
    ctx = seeded_randn(B, Cc, h, w, seed=1, dtype=dtype, device=device) if Cc else None
    _exact(kernels.patchify.patchify_triton(x, ctx, patch_size=p), patchify_ref(x, ctx, patch_size=p))


def test_patchify_non_contiguous_and_cast(kernels, device):
    x = seeded_randn(2, 3, 8, 12, seed=2, device=device, dtype=torch.float16).to(memory_format=torch.channels_last)
    ctx = (seeded_randn(2, 10, 8, 24, seed=3, device=device) * 100)[:, ::2, :, ::2]   # fp32, strided; cast to fp16
    assert not ctx.is_contiguous() and not x.is_contiguous()
    _exact(kernels.patchify.patchify_triton(x, ctx, patch_size=2), patchify_ref(x, ctx, patch_size=2))


@pytest.mark.parametrize("C", [3, 4])
@pytest.mark.parametrize("g", [2, 4, pytest.param(16, marks=pytest.mark.cuda, id="preset-g16")])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unpatchify(kernels, device, dtype, g, C):
    y = seeded_randn(2, g * g, 2 * 2 * C, seed=4, dtype=dtype, device=device)
    want = unpatchify_ref(y, patch_size=2, channels=C)
    _exact(kernels.patchify.unpatchify_triton(y, patch_size=2, channels=C), want)
    y_t = y.transpose(1, 2).contiguous().transpose(1, 2)                       # same values, feature-major strides
    _exact(kernels.patchify.unpatchify_triton(y_t, patch_size=2, channels=C), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_matches_reference(kernels, device, dtype):
    """Patchify then unpatchify (layouts differ: (c, p1, p2) in, (p1, p2, c) out), both paths agree bit for bit."""
    x = seeded_randn(2, 3, 8, 8, seed=5, dtype=dtype, device=device)
    ctx = seeded_randn(2, 1, 8, 8, seed=6, dtype=dtype, device=device)
    fused = kernels.patchify.unpatchify_triton(kernels.patchify.patchify_triton(x, ctx, patch_size=2),
                                               patch_size=2, channels=4)
    _exact(fused, unpatchify_ref(patchify_ref(x, ctx, patch_size=2), patch_size=2, channels=4))


def test_bad_inputs(kernels, device):
    x = torch.zeros(2, 3, 8, 8, device=device)
    with pytest.raises(ValueError, match=r"patchify: the latent size \(h, w\) = \(8, 8\) must be divisible by "
                                         r"patch_size=3"):
        kernels.patchify.patchify_triton(x, patch_size=3)
    with pytest.raises(ValueError, match=r"patchify: ctx must be \(B, Cc, h, w\).*got shape \(2, 1, 8, 6\)"):
        kernels.patchify.patchify_triton(x, torch.zeros(2, 1, 8, 6, device=device), patch_size=2)
    with pytest.raises(ValueError, match=r"patch_size must be a positive int, got 0"):
        kernels.patchify.patchify_triton(x, patch_size=0)
    y = torch.zeros(2, 16, 12, device=device)
    with pytest.raises(ValueError, match=r"unpatchify: y's last dim must be p\*p\*C = 2\*2\*4 = 16, got 12"):
        kernels.patchify.unpatchify_triton(y, patch_size=2, channels=4)
    with pytest.raises(ValueError, match=r"unpatchify: expected a square token grid, got T=15 tokens"):
        kernels.patchify.unpatchify_triton(y[:, :15], patch_size=2, channels=3)


# ---------------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("op", ["patchify", "unpatchify"])
def test_registry_refuses_cpu(op):
    assert registry.resolve(op, device="cpu", dtype=torch.float32).name == "eager"
    with rpfm.ops.use_backend(op, "triton"):
        with pytest.raises(RuntimeError, match=rf"{op} backend 'triton' was requested but "
                                               r"(is unavailable|cannot run here: needs CUDA tensors)"):
            registry.resolve(op, device="cpu", dtype=torch.float32)


@pytest.mark.cuda
def test_dispatch_on_cuda(kernels):
    x = seeded_randn(2, 4, 32, 32, seed=7, dtype=torch.bfloat16, device="cuda")
    ctx = seeded_randn(2, 8, 32, 32, seed=8, dtype=torch.bfloat16, device="cuda")
    assert registry.resolve("patchify", device="cuda", dtype=torch.bfloat16).name == "triton"
    tokens = rpfm.ops.patchify(x, ctx, patch_size=2)
    _exact(tokens, patchify_ref(x, ctx, patch_size=2))
    _exact(rpfm.ops.unpatchify(tokens[..., :16], patch_size=2, channels=4),
           unpatchify_ref(tokens[..., :16], patch_size=2, channels=4))
