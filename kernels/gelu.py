"""GELU, tanh approximation, elementwise: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

Must match: ``rpfm.ops.reference.gelu_tanh_ref`` (same signature, minus ``upcast``).
Fused: nothing beyond the activation itself (load, fp32 math, one rounding on store). It exists so the MLP can run
without torch.compile; fusing it into the fc1 matmul epilogue is left to cuBLASLt / torch.compile. Forward only.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._heuristics import FP_FUSION, check_inputs, elementwise_config


@triton.jit
def _gelu_tanh_kernel(X, OUT, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)        # sqrt(2/pi) (x + 0.044715 x^3)
    # 0.5 (1 + tanh(u)) == sigmoid(2u): no cancellation near 0, no tanh intrinsic needed. The exponent is clamped
    # so very negative x gives x * e^-80 (~0) instead of x / inf (and no overflow warning in the interpreter).
    y = x / (1.0 + tl.exp(tl.minimum(-2.0 * u, 80.0)))
    tl.store(OUT + offs, y.to(OUT.dtype.element_ty), mask=mask)


def gelu_tanh_triton(x: Tensor) -> Tensor:
    """Any shape. Returns a contiguous tensor of x's shape and dtype (a non-contiguous x is copied first)."""
    check_inputs("gelu_tanh", _gelu_tanh_kernel, x=x)
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n:
        block, num_warps = elementwise_config(n)
        _gelu_tanh_kernel[(triton.cdiv(n, block),)](x, out, n, BLOCK=block, num_warps=num_warps,
                                                    enable_fp_fusion=FP_FUSION)
    return out
