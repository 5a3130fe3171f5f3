"""Parity helpers shared by the kernel tests: the "k x eager error" tolerance rule and seeded inputs.

The rule (flash-attn's, style.md §2.2): a fused op computed in low precision may be as far from the fp32 truth as
``k`` times what eager PyTorch achieves in that same precision, plus a per-dtype floor.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Floors, relative to the output's scale max(1, max|truth|): about one unit in the last place of the storage dtype
# (fp16 eps 2^-10 ~ 9.8e-4, bf16 eps 2^-7 ~ 7.8e-3). A kernel that computes in fp32 and rounds once can land one ulp
# from a truth that eager happens to round identically (eager error 0); fp32 gets a few ulps for reassociated sums.
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_close_to_ref(fused: Tensor, ref_truth: Tensor, ref_lowp: Tensor, *, k: float = 2.0,
                        atol: float | None = None, name: str = "") -> None:
    """Assert ``max|fused - truth| <= k * max|eager_lowp - truth| + atol`` (all compared in fp64).

    fused: the kernel's output. ref_truth: the reference with ``upcast=True``. ref_lowp: the reference in the storage
    dtype (``upcast=False``). ``atol`` defaults to ``ATOL[fused.dtype] * max(1, max|truth|)``.
    """
    label = f"{name}: " if name else ""
    if fused.shape != ref_truth.shape or fused.shape != ref_lowp.shape:
        raise AssertionError(f"{label}shape mismatch: fused {tuple(fused.shape)}, truth {tuple(ref_truth.shape)}, "
                             f"eager {tuple(ref_lowp.shape)}")
    if fused.dtype != ref_truth.dtype:
        raise AssertionError(f"{label}dtype mismatch: fused {fused.dtype}, truth {ref_truth.dtype}")
    f, t, e = (a.detach().to("cpu", torch.float64) for a in (fused, ref_truth, ref_lowp))
    if fused.numel() == 0:
        return
    if not torch.equal(f.isfinite(), t.isfinite()):
        raise AssertionError(f"{label}non-finite values differ: fused has {(~f.isfinite()).sum().item()}, "
                             f"truth {(~t.isfinite()).sum().item()}")
    finite = t.isfinite()
    f, t, e = f[finite], t[finite], e[finite]
    if atol is None:
        atol = ATOL.get(fused.dtype, 1e-5) * max(1.0, t.abs().max().item() if t.numel() else 0.0)
    diff = (f - t).abs()
    eager_err = (e - t).abs().max().item() if t.numel() else 0.0
    bound = k * eager_err + atol
    if diff.numel() and diff.max().item() > bound:
        worst = diff.argmax().item()
        raise AssertionError(
            f"{label}max|fused - truth| = {diff.max().item():.3e} (mean {diff.mean().item():.3e}; worst: fused "
            f"{f[worst].item():.6g} vs truth {t[worst].item():.6g}) exceeds {k} * max|eager - truth| "
            f"({eager_err:.3e}, mean {(e - t).abs().mean().item():.3e}) + atol {atol:.1e} = {bound:.3e} "
            f"[{fused.dtype}, shape {tuple(fused.shape)}]")


def seeded_randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Tensor:
    """Standard normal values drawn in fp32 on CPU from ``seed``, then moved: identical on every device."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
