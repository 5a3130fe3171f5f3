"""Register the fused Triton kernels (``rpfm.kernels``) as the ``triton`` backend of the elementwise/row ops.

Priority 10, above eager (0). Available when triton imports and a CUDA device is present; the constraint keeps auto
selection on CUDA tensors of float32/float16/bfloat16 only, so CPU runs always resolve to eager. Nothing here
imports triton or the kernel modules at import time: the probe and the first call do, which keeps ``import rpfm``
light and lets tests set ``TRITON_INTERPRET=1`` (read when ``@triton.jit`` decorates) before the kernels load.

In the source tree ``kernels/`` is a top-level folder that the wheel ships as ``rpfm.kernels``; ``_load_kernels``
maps it under that name when the package is not installed (so kernel files use relative imports only).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from .registry import register

INSTALL_HINT = "pip install 'rpfm[triton]'"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _load_kernels() -> ModuleType:
    """``rpfm.kernels``: the installed subpackage, else the repo's top-level ``kernels/`` registered under that name."""
    try:
        return importlib.import_module("rpfm.kernels")
    except ModuleNotFoundError as e:
        if e.name not in ("rpfm.kernels", "rpfm"):
            raise  # rpfm.kernels exists but something it imports is missing: report that, not a path fallback
    init = Path(__file__).resolve().parents[2] / "kernels" / "__init__.py"
    if not init.is_file():
        raise ImportError(f"rpfm.kernels is not installed and {init} does not exist; reinstall rpfm.")
    spec = importlib.util.spec_from_file_location("rpfm.kernels", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["rpfm.kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("rpfm.kernels", None)
        raise
    parent = sys.modules.get("rpfm")
    if parent is not None:
        setattr(parent, "kernels", module)
    return module


@functools.lru_cache(maxsize=None)
def _kernel(module: str) -> ModuleType:
    _load_kernels()
    return importlib.import_module(f"rpfm.kernels.{module}")


def _probe() -> tuple[bool, str]:
    try:
        kernels = _load_kernels()
    except ImportError as e:
        return False, f"rpfm.kernels not importable ({e})"
    if not kernels.HAS_TRITON:
        return False, kernels.TRITON_REASON
    if not torch.cuda.is_available():
        return False, "no CUDA device (the Triton kernels run on GPU; TRITON_INTERPRET=1 is for tests only)"
    return True, kernels.TRITON_REASON


def _cuda_float(*, device=None, dtype=None, **_) -> str | None:
    """Metadata-only: CUDA tensors of float32/float16/bfloat16 (dtype None = not specified, accepted)."""
    if device is None or str(device).split(":")[0] != "cuda":
        return f"needs CUDA tensors, got device {device}"
    if dtype is not None and dtype not in _DTYPES:
        return f"needs float32, float16 or bfloat16, got {dtype}"
    return None


def _triton(op: str):
    return register(op, "triton", priority=10, probe=_probe, constraints=(_cuda_float,), install_hint=INSTALL_HINT)


# Thin adapters with the reference signatures; each resolves its kernel module once, on first call.
@_triton("adaln_modulate")
def adaln_modulate(x, shift, scale, *, eps: float = 1e-6):
    return _kernel("adaln").adaln_modulate_triton(x, shift, scale, eps=eps)


@_triton("gated_residual_adaln")
def gated_residual_adaln(x, y, gate, shift, scale, *, eps: float = 1e-6, bias=None):
    if bias is not None:   # never on the model's GPU path (the matmul epilogue adds the bias there): API parity only
        y = y + bias
    return _kernel("gated_residual").gated_residual_adaln_triton(x, y, gate, shift, scale, eps=eps)


@_triton("patchify")
def patchify(x, ctx=None, *, patch_size: int):
    return _kernel("patchify").patchify_triton(x, ctx, patch_size=patch_size)


@_triton("unpatchify")
def unpatchify(y, *, patch_size: int, channels: int):
    return _kernel("patchify").unpatchify_triton(y, patch_size=patch_size, channels=channels)


@_triton("gelu_tanh")
def gelu_tanh(x):
    return _kernel("gelu").gelu_tanh_triton(x)
