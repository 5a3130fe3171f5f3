"""adaln_modulate: fused Triton kernel vs rpfm.ops.reference.adaln_modulate_ref."""
from __future__ import annotations

import pytest
import torch

import rpfm.ops
from rpfm import _ext
from rpfm.ops import registry
from rpfm.ops.reference import adaln_modulate_ref
from rpfm.testing import assert_close_to_ref, seeded_randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HIDDEN = [40, 384, 1152]                            # odd width, RPFM-S, RPFM-XL
BATCH_TOKENS = [(1, 4), (2, 16),                    # batch 1 and the CFG-doubled batch, small for the interpreter
                pytest.param(16, 256, marks=pytest.mark.cuda, id="preset-16x256")]


def _inputs(B, T, D, dtype, device, *, shared: bool = False, seed: int = 0):
    x = seeded_randn(B, T, D, seed=seed, dtype=dtype, device=device) * 2 + 0.5
    rows = 1 if shared else B
    shift = seeded_randn(rows, D, seed=seed + 1, dtype=dtype, device=device)
    scale = seeded_randn(rows, D, seed=seed + 2, dtype=dtype, device=device) * 0.5
    return x, shift, scale


def _check(kernels, x, shift, scale, name):
    fused = kernels.adaln.adaln_modulate_triton(x, shift, scale, eps=1e-6)
    assert fused.is_contiguous()
    assert_close_to_ref(fused, adaln_modulate_ref(x, shift, scale, upcast=True),
                        adaln_modulate_ref(x, shift, scale, upcast=False), name=name)


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
@pytest.mark.parametrize("B,T", BATCH_TOKENS)
@pytest.mark.parametrize("D", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity(kernels, device, dtype, D, B, T, shared):
    _check(kernels, *_inputs(B, T, D, dtype, device, shared=shared), name=f"adaln {dtype} D={D}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous(kernels, device, dtype):
    B, T, D = 2, 8, 40
    base = seeded_randn(T, B, 2 * D, seed=3, dtype=dtype, device=device)
    shift_t = seeded_randn(D, B, seed=4, dtype=dtype, device=device)
    scale = seeded_randn(B, D, seed=5, dtype=dtype, device=device)
    x_view = base[..., :D].transpose(0, 1)            # (B, T, D), batch/token strides swapped, unit last stride
    x_strided = base.transpose(0, 1)[..., ::2]        # last-dim stride 2: copied by the launcher
    for x in (x_view, x_strided):
        assert not x.is_contiguous()
        _check(kernels, x, shift_t.t(), scale, name="adaln non-contiguous")


def test_row_too_wide(kernels, device):
    x = torch.zeros(1, 1, 20000, device=device)
    with pytest.raises(ValueError, match=r"adaln_modulate: hidden size D=20000 exceeds the max block"):
        kernels.adaln.adaln_modulate_triton(x, x[0], x[0])


def test_bad_shapes(kernels, device):
    x = torch.zeros(2, 4, 40, device=device)
    with pytest.raises(ValueError, match=r"shift must have shape \(B, D\) = \(2, 40\).*got \(2, 41\)"):
        kernels.adaln.adaln_modulate_triton(x, torch.zeros(2, 41, device=device), torch.zeros(2, 40, device=device))
    with pytest.raises(ValueError, match=r"x must be \(B, T, D\)"):
        kernels.adaln.adaln_modulate_triton(x[0], x[:, 0], x[:, 0])
    with pytest.raises(TypeError, match=r"x must be float32, float16 or bfloat16, got torch.int32"):
        kernels.adaln.adaln_modulate_triton(x.int(), x[:, 0], x[:, 0])


@pytest.mark.cuda
def test_cpu_tensor_refused_on_gpu_build(kernels):
    x = torch.zeros(2, 4, 40)
    with pytest.raises(RuntimeError, match=r"adaln_modulate: the Triton kernel needs CUDA tensors, got cpu"):
        kernels.adaln.adaln_modulate_triton(x, x[:, 0], x[:, 0])
    with pytest.raises(ValueError, match=r"one device.*x on cpu, shift on cuda"):
        kernels.adaln.adaln_modulate_triton(x, x[:, 0].cuda(), x[:, 0])


# ---------------------------------------------------------------------------------------------------- registry
def test_auto_selection_never_picks_triton_on_cpu():
    # rpfm.ops.cpu: the C++ one-pass kernel when rpfm._C is built, else the PyTorch tier; never triton
    assert registry.resolve("adaln_modulate", device="cpu", dtype=torch.float32).name == ("cpp" if _ext.HAS_EXT else "cpu")


def test_explicit_triton_on_cpu_raises_with_reason():
    with rpfm.ops.use_backend("adaln_modulate", "triton"):
        with pytest.raises(RuntimeError, match=r"adaln_modulate backend 'triton' was requested but "
                                               r"(is unavailable: .*(no CUDA device|triton not importable)|"
                                               r"cannot run here: needs CUDA tensors, got device cpu)"):
            registry.resolve("adaln_modulate", device="cpu", dtype=torch.float32)


@pytest.mark.cuda
def test_auto_selection_picks_triton_on_cuda(kernels):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert registry.resolve("adaln_modulate", device="cuda", dtype=dtype).name == "triton"
    assert registry.resolve("adaln_modulate", device="cuda", dtype=torch.float64).name == "eager"
    x, shift, scale = _inputs(2, 16, 384, torch.bfloat16, "cuda")
    assert torch.equal(rpfm.ops.adaln_modulate(x, shift, scale), kernels.adaln.adaln_modulate_triton(x, shift, scale))


def test_forced_eager_is_the_reference(device):
    x, shift, scale = _inputs(2, 4, 40, torch.float32, device)
    with rpfm.ops.use_backend("adaln_modulate", "eager"):
        out = rpfm.ops.adaln_modulate(x, shift, scale)
    assert torch.equal(out, adaln_modulate_ref(x, shift, scale))
