"""Fused adaLN modulation: ``LayerNorm(x) * (1 + scale) + shift`` in one pass over x.

Must match: ``rpfm.ops.reference.adaln_modulate_ref`` (same signature, minus ``upcast``).
Fused: the mean/variance reduction, the normalisation and the per-sample affine modulation, one read of x and one
write of the output per row; all arithmetic in fp32 whatever the storage dtype, rounded once on store (so the result
tracks ``adaln_modulate_ref(..., upcast=True)``, the parity truth).
Not fused: producing shift/scale (the adaLN linear layer on the conditioning vector), gating, the residual (see
``gated_residual.py``). Forward only: no backward, no autotuning (the block is the whole row, D <= 16384).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._heuristics import FP_FUSION, check_inputs, last_dim_contiguous, modulation, row_config


@triton.jit
def _layernorm_modulate(x, shift, scale, mask, D, eps):
    """fp32 row ``x`` (padded lanes masked) -> ``(x - mean) / sqrt(var + eps) * (1 + scale) + shift``."""
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / D          # biased variance, as F.layer_norm
    rstd = 1.0 / tl.sqrt(var + eps)            # not tl.rsqrt: keep fp32 parity with the eager reference tight
    return xc * rstd * (1.0 + scale) + shift


@triton.jit
def _adaln_modulate_kernel(X, SHIFT, SCALE, OUT, T, D, stride_xb, stride_xt, stride_shift_b, stride_scale_b, eps,
                           BLOCK_D: tl.constexpr):
    t = tl.program_id(0)                       # one program per (token, sample) row
    b = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(X + b * stride_xb + t * stride_xt + cols, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(SHIFT + b * stride_shift_b + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(SCALE + b * stride_scale_b + cols, mask=mask, other=0.0).to(tl.float32)
    y = _layernorm_modulate(x, shift, scale, mask, D, eps)
    tl.store(OUT + (b * T + t) * D + cols, y.to(OUT.dtype.element_ty), mask=mask)


def adaln_modulate_triton(x: Tensor, shift: Tensor, scale: Tensor, *, eps: float = 1e-6) -> Tensor:
    """x: (B, T, D); shift, scale: (B, D) or (1, D). Returns a contiguous (B, T, D) tensor in x's dtype.

    x may have any batch/token strides (views are read in place); a last dim with non-unit stride is copied.
    """
    op = "adaln_modulate"
    check_inputs(op, _adaln_modulate_kernel, x=x, shift=shift, scale=scale)
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be (B, T, D), got shape {tuple(x.shape)}.")
    B, T, D = x.shape
    x = last_dim_contiguous(x)
    shift, stride_shift = modulation(op, "shift", shift, B, D)
    scale, stride_scale = modulation(op, "scale", scale, B, D)
    block_d, num_warps = row_config(op, D)
    out = torch.empty((B, T, D), device=x.device, dtype=x.dtype)
    if out.numel():
        _adaln_modulate_kernel[(T, B)](x, shift, scale, out, T, D, x.stride(0), x.stride(1), stride_shift,
                                       stride_scale, float(eps), BLOCK_D=block_d, num_warps=num_warps,
                                       enable_fp_fusion=FP_FUSION)
    return out
