"""Attention backends behind one signature: ``attention(q, k, v) -> o`` with q, k, v, o all (B, T, H, Dh).

Priority: flash_attn (version-gated) > xformers > cpp (CPU float32, short sequences; registered in
``rpfm.ops.cpu``) > sdpa (PyTorch, always present) > math (the reference).
Each adapter permutes to its library's native layout itself, so callers never care which one ran.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import attention_ref
from .registry import register

FLASH_ATTN_MIN = (2, 6, 3)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _cuda_half(*, device=None, dtype=None, **_) -> str | None:
    if device is not None and str(device).split(":")[0] != "cuda":
        return f"needs CUDA tensors, got device {device}"
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
        return f"needs fp16 or bf16, got {dtype}"
    return None


def _cuda_only(*, device=None, **_) -> str | None:
    if device is not None and str(device).split(":")[0] != "cuda":
        return f"needs CUDA tensors, got device {device}"
    return None


def _head_dim_ok(*, head_dim=None, **_) -> str | None:
    if head_dim is not None and (head_dim % 8 or head_dim > 256):
        return f"head_dim must be a multiple of 8 and <= 256, got {head_dim}"
    return None


def _probe_flash() -> tuple[bool, str]:
    try:
        mod = importlib.import_module("flash_attn")
    except (ImportError, OSError, RuntimeError) as e:
        return False, f"flash_attn not importable ({type(e).__name__}: {e})"
    version = getattr(mod, "__version__", "0")
    if _version_tuple(version) < FLASH_ATTN_MIN:
        return False, f"flash_attn {version} < required {'.'.join(map(str, FLASH_ATTN_MIN))}"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"flash_attn {version}"


@register("attention", "flash_attn", priority=40, probe=_probe_flash, constraints=(_cuda_half, _head_dim_ok),
          install_hint="pip install 'rpfm[flash]' (flash-attn>=2.6.3, built for your torch)")
def attention_flash(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    from flash_attn import flash_attn_func  # natively (B, T, H, Dh)

    return flash_attn_func(q, k, v)


def _probe_xformers() -> tuple[bool, str]:
    try:
        ops = importlib.import_module("xformers.ops")
    except (ImportError, OSError, RuntimeError) as e:
        return False, f"xformers not importable ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:  # an xformers wheel built for another torch imports but its compiled ops fail on first use
        q = torch.randn(1, 8, 1, 64, device="cuda", dtype=torch.float16)
        ops.memory_efficient_attention(q, q, q)
    except (RuntimeError, NotImplementedError, OSError, ValueError) as e:
        return False, f"xformers compiled ops do not run with this torch ({type(e).__name__}: {e})"
    return True, "xformers memory_efficient_attention"


@register("attention", "xformers", priority=30, probe=_probe_xformers, constraints=(_cuda_only,),
          install_hint="pip install 'rpfm[xformers]' (an xformers wheel built for your torch)")
def attention_xformers(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    from xformers.ops import memory_efficient_attention  # natively (B, T, H, Dh)

    return memory_efficient_attention(q, k, v)


@register("attention", "sdpa", priority=20)
def attention_sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    # SDPA wants (B, H, T, Dh); it dispatches to FlashAttention-2 / memory-efficient / cuDNN kernels on GPU.
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2)


@register("attention", "math", priority=0)
def attention_math(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return attention_ref(q, k, v)
