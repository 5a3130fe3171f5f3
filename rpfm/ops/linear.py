"""Fast backends of ``linear`` and ``linear_gelu_tanh`` (spec: ``rpfm.ops.reference.linear_ref`` and
``linear_gelu_tanh_ref``).

- ``onednn`` (CPU, float32): oneDNN's linear on a weight reordered once into its blocked layout, with the bias in
  the matmul's epilogue (ATen's CPU ``addmm`` first copies the broadcast bias into the output, a full extra pass
  over the activations). The tanh-GELU then runs in place as ``x * sigmoid(2u)`` (the same function:
  (1 + tanh u) / 2 = sigmoid(2u)), because tanh is the slow part of GELU on CPU: on this AVX2 machine, per
  (1024, 768) fc1 output at one thread, ATen's tanh takes 3.7 ms and its sigmoid 1.1 ms, and oneDNN's GELU(tanh)
  epilogue costs as much as ATen's GELU; fc1 + GELU went from 11.4-11.9 ms (epilogue) to 7.2-8.7 ms. The reordered
  weight is cached per parameter and rebuilt when the parameter's storage or version counter changes (in-place
  updates such as ``load_state_dict`` bump it), so results never use stale weights.
- ``cublaslt`` (CUDA, ``linear_gelu_tanh`` only): ``torch._addmm_activation(..., use_gelu=True)``, cuBLASLt's
  GELU(tanh) + bias epilogue: the fc1 output is written once, already activated, instead of written, read and
  written again by a separate GELU kernel.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .registry import register

_cache = WeakIdKeyDictionary()   # parameter -> ((data_ptr, version, shape), reordered weight)
_cache_lock = threading.Lock()


def _probe_onednn() -> tuple[bool, str]:
    if not torch.backends.mkldnn.is_available():
        return False, "torch was built without oneDNN (mkldnn)"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False, "this torch has no torch.ops.mkldnn._linear_pointwise"
    return True, "oneDNN linear with fused bias/GELU epilogue"


def _cpu_fp32(*, device=None, dtype=None, **_) -> str | None:
    if device is None or str(device).split(":")[0] != "cpu":
        return f"needs CPU tensors, got device {device}"
    if dtype is not None and dtype != torch.float32:
        return f"needs float32 (oneDNN's bf16 path needs AVX-512 here), got {dtype}"
    return None


def _cuda(*, device=None, **_) -> str | None:
    return None if device is not None and str(device).split(":")[0] == "cuda" else f"needs CUDA, got {device}"


def packed_weight(weight: Tensor) -> Tensor:
    """The oneDNN-reordered copy of ``weight`` (N, K), cached until the parameter changes."""
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    entry = _cache.get(weight)
    if entry is not None and entry[0] == key:
        return entry[1]
    with _cache_lock, torch.no_grad(), torch.inference_mode(False):
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        _cache[weight] = (key, packed)
    return packed


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, attr: str, algorithm: str) -> Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return None                                    # inference only: the caller falls back to the reference
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight(weight), bias, attr, [], algorithm)


_GELU_2K = 2 * math.sqrt(2 / math.pi)      # 2u = 2 * sqrt(2/pi) * (x + 0.044715 x^3)


GELU_CHUNK = 1 << 17
"""Elements per pass of :func:`gelu_tanh_` (512 KB of float32: the five passes stay in cache, and the scratch stays
below the size where a fresh allocation page-faults: one (1024, 1024) temporary made the whole GELU 10 ms instead
of 2.9 ms at one thread here)."""


def gelu_tanh_(y: Tensor) -> Tensor:
    """tanh-GELU in place on ``y`` (no autograd): y * sigmoid(2u), u = sqrt(2/pi) (y + 0.044715 y^3); equals
    ``F.gelu(y, approximate="tanh")`` up to float rounding (a few ulp). Works through a contiguous ``y`` in chunks
    of :data:`GELU_CHUNK` elements with one small scratch buffer."""
    flat = y.view(-1) if y.is_contiguous() else None
    parts = flat.split(GELU_CHUNK) if flat is not None else (y,)
    scratch = torch.empty(min(GELU_CHUNK, y.numel()), dtype=y.dtype, device=y.device) if flat is not None else None
    for part in parts:
        u = scratch[:part.numel()] if scratch is not None else torch.empty_like(part)
        torch.mul(part, part, out=u)
        u.mul_(_GELU_2K * 0.044715).add_(_GELU_2K).mul_(part)
        part.mul_(u.sigmoid_())
    return y


@register("linear", "onednn", priority=10, probe=_probe_onednn, constraints=(_cpu_fp32,))
def linear_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = _onednn(x, weight, bias, "none", "")
    return F.linear(x, weight, bias) if out is None else out


@register("linear_gelu_tanh", "onednn", priority=10, probe=_probe_onednn, constraints=(_cpu_fp32,))
def linear_gelu_tanh_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = _onednn(x, weight, bias, "none", "")
    return F.gelu(F.linear(x, weight, bias), approximate="tanh") if out is None else gelu_tanh_(out)


@register("linear_gelu_tanh", "cublaslt", priority=10, constraints=(_cuda,))
def linear_gelu_tanh_cublaslt(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    if bias is None:
        return F.gelu(F.linear(x, weight), approximate="tanh")
    x2 = x.reshape(-1, x.shape[-1])                                             # (M, K)
    out = torch._addmm_activation(bias, x2, weight.t(), use_gelu=True)          # (M, N), GELU(tanh) epilogue
    return out.view(*x.shape[:-1], weight.shape[0])
