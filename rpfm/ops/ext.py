"""The C++ backend of ``euler_cfg_step``: ``torch.ops.rpfm.euler_cfg_step_`` from ``rpfm._C``.

Spec: :func:`rpfm.ops.reference.euler_cfg_step_ref`. The op has CPU and CUDA kernels (csrc/euler_cfg.cpp,
csrc/euler_cfg_cuda.cu) and a Meta kernel, so torch.compile and CUDA-graph capture accept it. It computes in fp32
and rounds exactly like the reference (no fused multiply-add).

The kernel wants what a sampler has anyway: x and v contiguous with the same dtype, dt and guidance 0-dim float32
tensors on x's device. This adapter converts dt/guidance given in another form (a Python float, a CPU or float64
scalar) and makes v contiguous; it cannot fix an x it must update in place, so a non-contiguous x raises.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from .registry import register

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _probe() -> tuple[bool, str]:
    return _ext.HAS_EXT, _ext.EXT_REASON


def _supported(device: str | None = None, dtype: torch.dtype | None = None, **_) -> str | None:
    if device not in (None, "cpu", "cuda"):
        return f"device {device!r} (rpfm._C has CPU and CUDA kernels)"
    if device == "cuda":
        why = _ext.cuda_unsupported() if _ext.has_cuda() else \
            "rpfm._C was built without CUDA (RPFM_WITH_CUDA=OFF or no nvcc at build time)"
        if why:
            return why
    if dtype is not None and dtype not in _DTYPES:
        return f"dtype {dtype} (the kernel supports float32, float16 and bfloat16)"
    return None


def _scalar(s, like: Tensor) -> Tensor:
    if isinstance(s, Tensor) and s.dim() == 0 and s.dtype == torch.float32 and s.device == like.device:
        return s
    return torch.as_tensor(s, dtype=torch.float32, device=like.device).reshape(())


@register("euler_cfg_step", "ext", priority=20, probe=_probe, constraints=(_supported,),
          install_hint="pip install --no-build-isolation . (builds rpfm._C)")
def euler_cfg_step_ext(x: Tensor, v: Tensor, dt: Tensor, guidance: Tensor) -> Tensor:
    """In place: x <- x + dt * (v_u + guidance * (v_c - v_u)) (v: (2B, ...)) or x + dt * v (v: (B, ...)).

    Returns x. See :func:`rpfm.ops.reference.euler_cfg_step_ref` for shapes and dtypes.
    """
    torch.ops.rpfm.euler_cfg_step_(x, v.contiguous(), _scalar(dt, x), _scalar(guidance, x))
    return x
