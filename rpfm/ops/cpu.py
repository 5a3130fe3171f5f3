"""CPU backends of the adaLN ops with fewer passes over the activations than the reference (same maths).

Spec: ``rpfm.ops.reference.adaln_modulate_ref`` and ``gated_residual_adaln_ref``. The reference spends one pass per
PyTorch op (LayerNorm, ``* (1 + scale)``, ``+ shift``; the gated residual adds ``gate * y`` and ``x + ...``); here
``addcmul`` does multiply-and-add in one pass and the modulation runs in place on the LayerNorm output:
adaln 3 -> 2 passes, gated residual + adaln 5 -> 3. Chosen on CPU only (priority 5: above eager, below Triton);
results differ from the reference by float rounding only (a fused multiply-add may round once instead of twice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import register


def _cpu(*, device=None, **_) -> str | None:
    return None if device is not None and str(device).split(":")[0] == "cpu" else f"needs CPU tensors, got {device}"


def _modulate_(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """h * (1 + scale) + shift in one pass, in place on h unless autograd needs it; h (B, T, D), shift/scale (B, D)."""
    if torch.is_grad_enabled() and (h.requires_grad or shift.requires_grad or scale.requires_grad):
        return torch.addcmul(shift.unsqueeze(1), h, (1 + scale).unsqueeze(1))   # training: no in-place
    return torch.addcmul(shift.unsqueeze(1), h, (1 + scale).unsqueeze(1), out=h)


@register("adaln_modulate", "cpu", priority=5, constraints=(_cpu,))
def adaln_modulate_cpu(x: Tensor, shift: Tensor, scale: Tensor, *, eps: float = 1e-6) -> Tensor:
    """See :func:`rpfm.ops.reference.adaln_modulate_ref`."""
    return _modulate_(F.layer_norm(x, (x.shape[-1],), eps=eps), shift, scale)


@register("gated_residual_adaln", "cpu", priority=5, constraints=(_cpu,))
def gated_residual_adaln_cpu(x: Tensor, y: Tensor, gate: Tensor, shift: Tensor, scale: Tensor, *,
                             eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """See :func:`rpfm.ops.reference.gated_residual_adaln_ref`."""
    x_new = torch.addcmul(x, gate.unsqueeze(1), y)                       # x + gate * y, one pass
    return x_new, _modulate_(F.layer_norm(x_new, (x.shape[-1],), eps=eps), shift, scale)
