"""Public ops. Each dispatches through the registry to a backend; none has maths of its own.

The model does not call these per step: it resolves an :class:`OpSet` once per (device, dtype) and keeps the
functions (see ``rpfm.model``). The module-level functions below are for users and tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import attention as _attention  # noqa: F401  (registers the attention backends)
from . import eager as _eager  # noqa: F401  (registers the eager reference backends)
from . import ext as _ext  # noqa: F401  (registers the rpfm._C backends; probes lazily)
from . import linear as _linear  # noqa: F401  (registers the oneDNN / cuBLASLt linear backends)
from . import cpu as _cpu  # noqa: F401  (registers the fewer-pass CPU adaLN backends)
from . import reference
from .registry import backends, register, report, resolve, use_backend

OP_NAMES = ("adaln_modulate", "gated_residual_adaln", "patchify", "unpatchify", "gelu_tanh", "attention",
            "euler_cfg_step", "linear", "linear_gelu_tanh")

try:  # Triton kernels are optional: without triton the eager backends serve every op.
    from . import triton as _triton  # noqa: F401
except ImportError:
    pass


@dataclass(frozen=True)
class OpSet:
    """The resolved function for every op, for one device type and dtype. ``names`` says which backend each is."""

    adaln_modulate: Callable
    gated_residual_adaln: Callable
    patchify: Callable
    unpatchify: Callable
    gelu_tanh: Callable
    attention: Callable
    euler_cfg_step: Callable
    linear: Callable
    linear_gelu_tanh: Callable
    names: dict

    @property
    def residual_takes_bias(self) -> bool:
        """True when ``gated_residual_adaln`` adds the residual branch's output bias itself for less than the
        matmul would pay (the C++ CPU kernel: ATen's addmm copies the bias into its output in a separate pass), so
        the model calls the proj / fc2 linears without bias and hands the bias to the residual op."""
        return self.names.get("gated_residual_adaln") == "cpp"


def resolve_opset(device: torch.device | str, dtype: torch.dtype, *, head_dim: int | None = None,
                  explicit: dict[str, str] | None = None) -> OpSet:
    """Resolve every op once. ``explicit`` maps op -> backend name to require (raises if it cannot run)."""
    device = torch.device(device)
    meta = dict(device=device.type, dtype=dtype, head_dim=head_dim)
    explicit = explicit or {}
    unknown = sorted(set(explicit) - set(OP_NAMES))
    if unknown:
        raise ValueError(f"backends: unknown ops {unknown}. Ops: {list(OP_NAMES)}.")
    chosen = {}
    for op in OP_NAMES:
        if op in explicit:
            with use_backend(op, explicit[op]):
                chosen[op] = resolve(op, **meta)
        else:
            chosen[op] = resolve(op, **meta)
    return OpSet(**{op: b.fn for op, b in chosen.items()}, names={op: b.name for op, b in chosen.items()})


def _dispatch(op: str, *tensors: torch.Tensor) -> Callable:
    t = tensors[0]
    return resolve(op, device=t.device.type, dtype=t.dtype).fn


def adaln_modulate(x, shift, scale, *, eps: float = 1e-6):
    """See :func:`rpfm.ops.reference.adaln_modulate_ref`."""
    return _dispatch("adaln_modulate", x)(x, shift, scale, eps=eps)


def gated_residual_adaln(x, y, gate, shift, scale, *, eps: float = 1e-6, bias=None):
    """See :func:`rpfm.ops.reference.gated_residual_adaln_ref`."""
    return _dispatch("gated_residual_adaln", x)(x, y, gate, shift, scale, eps=eps, bias=bias)


def patchify(x, ctx=None, *, patch_size: int):
    """See :func:`rpfm.ops.reference.patchify_ref`."""
    return _dispatch("patchify", x)(x, ctx, patch_size=patch_size)


def unpatchify(y, *, patch_size: int, channels: int):
    """See :func:`rpfm.ops.reference.unpatchify_ref`."""
    return _dispatch("unpatchify", y)(y, patch_size=patch_size, channels=channels)


def gelu_tanh(x):
    """See :func:`rpfm.ops.reference.gelu_tanh_ref`."""
    return _dispatch("gelu_tanh", x)(x)


def attention(q, k, v):
    """(B, T, H, Dh) x 3 -> (B, T, H, Dh). See :func:`rpfm.ops.reference.attention_ref`."""
    return resolve("attention", device=q.device.type, dtype=q.dtype, head_dim=q.shape[-1]).fn(q, k, v)


def linear(x, weight, bias=None):
    """See :func:`rpfm.ops.reference.linear_ref`."""
    return _dispatch("linear", x)(x, weight, bias)


def linear_gelu_tanh(x, weight, bias=None):
    """See :func:`rpfm.ops.reference.linear_gelu_tanh_ref`."""
    return _dispatch("linear_gelu_tanh", x)(x, weight, bias)


def euler_cfg_step(x, v, dt, guidance):
    """In-place Euler + CFG update. See :func:`rpfm.ops.reference.euler_cfg_step_ref`."""
    return _dispatch("euler_cfg_step", x)(x, v, dt, guidance)


__all__ = ["OpSet", "resolve_opset", "use_backend", "report", "register", "backends", "resolve", "reference",
           *OP_NAMES]
