"""Fused adaLN-Zero residual update plus the next adaLN: ``x' = x + gate * y``; ``h = adaln(x', shift, scale)``.

Must match: ``rpfm.ops.reference.gated_residual_adaln_ref`` (same signature, minus ``upcast``).
Fused: the gated residual add, the LayerNorm statistics and the modulation, in one pass: x and y are read once and
x' and h written once per row (eager reads the residual stream three times). x' is kept in fp32 registers for the
norm, so h is computed from the unrounded sum, like the fp32 truth ``gated_residual_adaln_ref(..., upcast=True)``.
Not fused: the attention/MLP producing y, the adaLN linear producing gate/shift/scale. Returns new tensors; nothing
is updated in place. Forward only.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._heuristics import FP_FUSION, check_inputs, check_shape, last_dim_contiguous, modulation, row_config
from .adaln import _layernorm_modulate


@triton.jit
def _gated_residual_adaln_kernel(X, Y, GATE, SHIFT, SCALE, X_OUT, H_OUT, T, D,
                                 stride_xb, stride_xt, stride_yb, stride_yt,
                                 stride_gate_b, stride_shift_b, stride_scale_b, eps, BLOCK_D: tl.constexpr):
    t = tl.program_id(0)                       # one program per (token, sample) row
    b = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(X + b * stride_xb + t * stride_xt + cols, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(Y + b * stride_yb + t * stride_yt + cols, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(GATE + b * stride_gate_b + cols, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(SHIFT + b * stride_shift_b + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(SCALE + b * stride_scale_b + cols, mask=mask, other=0.0).to(tl.float32)
    x_new = x + gate * y                        # padded lanes stay 0
    h = _layernorm_modulate(x_new, shift, scale, mask, D, eps)
    row = (b * T + t) * D
    tl.store(X_OUT + row + cols, x_new.to(X_OUT.dtype.element_ty), mask=mask)
    tl.store(H_OUT + row + cols, h.to(H_OUT.dtype.element_ty), mask=mask)


def gated_residual_adaln_triton(x: Tensor, y: Tensor, gate: Tensor, shift: Tensor, scale: Tensor, *,
                                eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """x, y: (B, T, D); gate, shift, scale: (B, D) or (1, D). Returns (x', h), contiguous (B, T, D) in x's dtype."""
    op = "gated_residual_adaln"
    check_inputs(op, _gated_residual_adaln_kernel, x=x, y=y, gate=gate, shift=shift, scale=scale)
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be (B, T, D), got shape {tuple(x.shape)}.")
    B, T, D = x.shape
    check_shape(op, "y", y, (B, T, D), "(B, T, D) like x")
    x, y = last_dim_contiguous(x), last_dim_contiguous(y)
    gate, stride_gate = modulation(op, "gate", gate, B, D)
    shift, stride_shift = modulation(op, "shift", shift, B, D)
    scale, stride_scale = modulation(op, "scale", scale, B, D)
    block_d, num_warps = row_config(op, D)
    x_out = torch.empty((B, T, D), device=x.device, dtype=x.dtype)
    h_out = torch.empty_like(x_out)
    if x_out.numel():
        _gated_residual_adaln_kernel[(T, B)](x, y, gate, shift, scale, x_out, h_out, T, D,
                                             x.stride(0), x.stride(1), y.stride(0), y.stride(1),
                                             stride_gate, stride_shift, stride_scale, float(eps),
                                             BLOCK_D=block_d, num_warps=num_warps,
                                             enable_fp_fusion=FP_FUSION)
    return x_out, h_out
