"""Fast backends of ``linear`` and ``linear_gelu_tanh`` (spec: ``rpfm.ops.reference.linear_ref`` and
``linear_gelu_tanh_ref``).

- ``cpu`` (CPU, float32, ``linear_gelu_tanh``; the default there): ATen's matmul (MKL) and then the tanh-GELU in
  place in one pass (:func:`gelu_tanh_`: the C++ kernel of ``rpfm._C``, else PyTorch ops in cache-sized chunks)
  instead of ATen's GELU, whose tanh is the slow part on CPU (on an AVX2 EPYC, per (1024, 768) fc1 output: ATen's
  GELU 1.9 ms at 2 threads, the chunked sigmoid form 1.2 ms, the C++ pass 0.65 ms on one thread and 0.40 ms on
  two: it ran on one until rpfm._C linked OpenMP). ``linear`` itself stays ATen's
  on CPU: measured on the demo model (D = 192, 2 threads), MKL's ``addmm`` beat oneDNN's reordered-weight linear by
  6-13 % over the whole sampler (paired, interleaved runs), bias copy included.
- ``onednn`` (CPU, float32; explicit only: ``RPFM_LINEAR_BACKEND=onednn``): oneDNN's linear on a weight reordered
  once into its blocked layout, with the bias in the matmul's epilogue, then the same in-place GELU. It was the CPU
  default until the measurement above; kept for CPUs where oneDNN's kernels win (AVX-512, AMX). The reordered
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

from .. import _ext
from .cpu import inference
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
    if not inference(x, weight, bias):
        return None                                    # inference only: the caller falls back to the reference
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight(weight), bias, attr, [], algorithm)


_GELU_2K = 2 * math.sqrt(2 / math.pi)      # 2u = 2 * sqrt(2/pi) * (x + 0.044715 x^3)


GELU_CHUNK = 1 << 17
"""Elements per pass of :func:`gelu_tanh_` (512 KB of float32: the five passes stay in cache, and the scratch stays
below the size where a fresh allocation page-faults: one (1024, 1024) temporary made the whole GELU 10 ms instead
of 2.9 ms at one thread here)."""


def gelu_tanh_(y: Tensor, bias: Tensor | None = None) -> Tensor:
    """tanh-GELU of ``y + bias`` in place on ``y`` (no autograd): v * sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3),
    v = y + bias; equals ``F.gelu(y + bias, approximate="tanh")`` up to float rounding (a few ulp). ``bias``: (N,)
    for ``y`` (..., N), or None.

    A contiguous float32 CPU ``y`` goes through ``torch.ops.rpfm.gelu_tanh_`` (csrc/cpu_fused.cpp: one vectorised
    pass, the bias added on the way) when ``rpfm._C`` has it; otherwise :func:`gelu_tanh_chunked_`."""
    if y.dtype == torch.float32 and y.device.type == "cpu" and y.is_contiguous() and _ext.cpu_fused_ops()[0] and \
            (bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu")):
        torch.ops.rpfm.gelu_tanh_(y, None if bias is None else bias.contiguous())
        return y
    if bias is not None:
        y.add_(bias)
    return gelu_tanh_chunked_(y)


def gelu_tanh_chunked_(y: Tensor) -> Tensor:
    """:func:`gelu_tanh_` in PyTorch ops: through a contiguous ``y`` in chunks of :data:`GELU_CHUNK` elements with
    one small scratch buffer (five passes per chunk, in cache)."""
    flat = y.view(-1) if y.is_contiguous() else None
    parts = flat.split(GELU_CHUNK) if flat is not None else (y,)
    scratch = torch.empty(min(GELU_CHUNK, y.numel()), dtype=y.dtype, device=y.device) if flat is not None else None
    for part in parts:
        u = scratch[:part.numel()] if scratch is not None else torch.empty_like(part)
        torch.mul(part, part, out=u)
        u.mul_(_GELU_2K * 0.044715).add_(_GELU_2K).mul_(part)
        part.mul_(u.sigmoid_())
    return y


@register("linear", "onednn", priority=-1, probe=_probe_onednn, constraints=(_cpu_fp32,))
def linear_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = _onednn(x, weight, bias, "none", "")
    return F.linear(x, weight, bias) if out is None else out


@register("linear_gelu_tanh", "onednn", priority=-1, probe=_probe_onednn, constraints=(_cpu_fp32,))
def linear_gelu_tanh_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = _onednn(x, weight, bias, "none", "")
    return F.gelu(F.linear(x, weight, bias), approximate="tanh") if out is None else gelu_tanh_(out)


@register("linear_gelu_tanh", "cpu", priority=10, constraints=(_cpu_fp32,))
def linear_gelu_tanh_cpu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """ATen's matmul, then :func:`gelu_tanh_` in place on its fresh output with the bias added in the same pass
    (ATen's ``addmm`` would copy the bias into the output first: 6 % of a demo-model step). The reference when
    autograd is on."""
    if not inference(x, weight, bias):
        return F.gelu(F.linear(x, weight, bias), approximate="tanh")
    if bias is None or not _ext.cpu_fused_ops()[0]:
        return gelu_tanh_(F.linear(x, weight, bias))
    y = torch.mm(x.reshape(-1, x.shape[-1]), weight.t())                                  # (M, N), no bias pass
    return gelu_tanh_(y, bias).view(*x.shape[:-1], weight.shape[0])


@register("linear_gelu_tanh", "cublaslt", priority=10, constraints=(_cuda,))
def linear_gelu_tanh_cublaslt(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    if bias is None:
        return F.gelu(F.linear(x, weight), approximate="tanh")
    x2 = x.reshape(-1, x.shape[-1])                                             # (M, K)
    out = torch._addmm_activation(bias, x2, weight.t(), use_gelu=True)          # (M, N), GELU(tanh) epilogue
    return out.view(*x.shape[:-1], weight.shape[0])
