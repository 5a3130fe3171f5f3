"""CPU backends of the adaLN ops with fewer passes over the activations than the reference (same maths).

Spec: ``rpfm.ops.reference.adaln_modulate_ref`` and ``gated_residual_adaln_ref``. Two tiers:

- ``cpp`` (priority 7): ``torch.ops.rpfm.adaln_modulate`` / ``gated_residual_adaln`` from ``rpfm._C``
  (csrc/cpu_fused.cpp): each token row is read once and every output written once (adaln 2 passes -> 1, gated
  residual + adaln 3 -> 1), vectorised for AVX2 where the CPU has it. Inference only: with autograd on it hands
  the call to the ``cpu`` tier.
- ``cpu`` (priority 5, pure PyTorch): ``addcmul`` does multiply-and-add in one pass and the modulation runs in place
  on the LayerNorm output: adaln 3 -> 2 passes, gated residual + adaln 5 -> 3.

Both sit above eager and below Triton; results differ from the reference by float rounding only.

``attention`` also has a ``cpp`` tier on CPU (priority 25, above SDPA's 20): ``torch.ops.rpfm.attention``
(csrc/cpu_attention.cpp), softmax attention as two register-tiled matmuls per (batch, head) that reads q, k, v
through their strides and writes o in the (B, T, H, Dh) layout the output projection reads. It serves sequences up
to :data:`CPP_ATTENTION_MAX_T` tokens (the demo model: 64) and hands longer ones to SDPA, whose key blocking wins
there (``python bench/cpu_attention.py``, 2 threads, batch x heads = 48, Dh = 64: ours 1.2-1.8x faster up to T = 128,
SDPA 5-30 % ahead from T = 192 on).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ext
from .attention import attention_sdpa
from .registry import register

CPP_ATTENTION_MAX_T = 128
"""Longest sequence ``attention``'s ``cpp`` tier runs itself (longer ones go to SDPA; see the module docstring)."""


def _cpu(*, device=None, **_) -> str | None:
    return None if device is not None and str(device).split(":")[0] == "cpu" else f"needs CPU tensors, got {device}"


def _cpu_fp32(*, device=None, dtype=None, **_) -> str | None:
    why = _cpu(device=device)
    if why is None and dtype is not None and dtype != torch.float32:
        why = f"needs float32, got {dtype}"
    return why


def _probe_cpp() -> tuple[bool, str]:
    return _ext.cpu_fused_ops()


def inference(*tensors: Tensor | None) -> bool:
    """True unless autograd would record a graph through one of ``tensors`` (None entries are ignored): the
    in-place and C++ fast paths run only then."""
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


def _modulate_(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """h * (1 + scale) + shift in one pass, in place on h unless autograd needs it; h (B, T, D), shift/scale (B, D)."""
    if not inference(h, shift, scale):
        return torch.addcmul(shift.unsqueeze(1), h, (1 + scale).unsqueeze(1))   # training: no in-place
    return torch.addcmul(shift.unsqueeze(1), h, (1 + scale).unsqueeze(1), out=h)


@register("adaln_modulate", "cpu", priority=5, constraints=(_cpu,))
def adaln_modulate_cpu(x: Tensor, shift: Tensor, scale: Tensor, *, eps: float = 1e-6) -> Tensor:
    """See :func:`rpfm.ops.reference.adaln_modulate_ref`."""
    return _modulate_(F.layer_norm(x, (x.shape[-1],), eps=eps), shift, scale)


@register("gated_residual_adaln", "cpu", priority=5, constraints=(_cpu,))
def gated_residual_adaln_cpu(x: Tensor, y: Tensor, gate: Tensor, shift: Tensor, scale: Tensor, *,
                             eps: float = 1e-6, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """See :func:`rpfm.ops.reference.gated_residual_adaln_ref`."""
    if bias is not None:
        y = y + bias
    x_new = torch.addcmul(x, gate.unsqueeze(1), y)                       # x + gate * y, one pass
    return x_new, _modulate_(F.layer_norm(x_new, (x.shape[-1],), eps=eps), shift, scale)


def _rows(m: Tensor, batch: int) -> Tensor:
    """A (B, D) modulation vector as the kernel takes it: rows with stride 1 along D; a (1, D) one is broadcast over
    the batch like the reference does (a zero row stride, no copy)."""
    if m.dim() == 2 and m.shape[0] == 1 and batch != 1:
        m = m.expand(batch, m.shape[1])
    return m if m.stride(-1) == 1 else m.contiguous()


@register("adaln_modulate", "cpp", priority=7, probe=_probe_cpp, constraints=(_cpu_fp32,),
          install_hint=_ext.BUILD_HINT)
def adaln_modulate_cpp(x: Tensor, shift: Tensor, scale: Tensor, *, eps: float = 1e-6) -> Tensor:
    """See :func:`rpfm.ops.reference.adaln_modulate_ref`. x (B, T, D); shift, scale (B, D)."""
    if not inference(x, shift, scale) or x.dim() != 3:
        return adaln_modulate_cpu(x, shift, scale, eps=eps)
    return torch.ops.rpfm.adaln_modulate(x.contiguous(), _rows(shift, x.shape[0]), _rows(scale, x.shape[0]), eps)


@register("gated_residual_adaln", "cpp", priority=7, probe=_probe_cpp, constraints=(_cpu_fp32,),
          install_hint=_ext.BUILD_HINT)
def gated_residual_adaln_cpp(x: Tensor, y: Tensor, gate: Tensor, shift: Tensor, scale: Tensor, *,
                             eps: float = 1e-6, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """See :func:`rpfm.ops.reference.gated_residual_adaln_ref`. x, y (B, T, D); gate, shift, scale (B, D);
    bias (D,) or None, added to y in the same pass."""
    if not inference(x, y, gate, shift, scale, bias) or x.dim() != 3 or y.shape != x.shape or \
            (bias is not None and (bias.dtype != x.dtype or bias.device != x.device)):
        return gated_residual_adaln_cpu(x, y, gate, shift, scale, eps=eps, bias=bias)
    B = x.shape[0]
    return torch.ops.rpfm.gated_residual_adaln(x.contiguous(), y.contiguous(), _rows(gate, B), _rows(shift, B),
                                               _rows(scale, B), eps, None if bias is None else bias.contiguous())


def _probe_cpp_attention() -> tuple[bool, str]:
    ok, why = _ext.cpu_fused_ops()
    if ok and not hasattr(torch.ops.rpfm, "attention"):
        return False, f"rpfm._C predates the CPU attention kernel: {_ext.REBUILD_HINT}"
    return ok, "rpfm._C small-sequence CPU attention (csrc/cpu_attention.cpp)" if ok else why


@register("attention", "cpp", priority=25, probe=_probe_cpp_attention, constraints=(_cpu_fp32,),
          install_hint=_ext.BUILD_HINT)
def attention_cpp(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """See :func:`rpfm.ops.reference.attention_ref`. q, k, v (B, T, H, Dh), any strides; returns (B, T, H, Dh).
    With autograd on, or past :data:`CPP_ATTENTION_MAX_T` tokens, SDPA runs instead."""
    if not inference(q, k, v) or q.dim() != 4 or q.shape[1] > CPP_ATTENTION_MAX_T or k.shape != q.shape or \
            v.shape != q.shape or k.dtype != q.dtype or v.dtype != q.dtype:
        return attention_sdpa(q, k, v)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return torch.ops.rpfm.attention(q, k, v)
