"""Exponential moving average of the trainable weights (DiT / X-MDPT: decay 0.9999, updated every optimizer step).

The EMA is a full frozen copy of the model (``EMA.module``), so sampling and export use it directly: its
``state_dict()`` is a complete RPFM state dict (frozen tensors such as ``pos_embed`` are copied, not averaged).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """ema <- decay * ema + (1 - decay) * param, for every parameter that requires grad in ``model``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay: expected a number in [0, 1], got {decay}.")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]

    def _pairs(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        mine, theirs = dict(self.module.named_parameters()), dict(model.named_parameters())
        return [mine[n] for n in self._names], [theirs[n].detach() for n in self._names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights (the unwrapped model, not the DDP wrapper)."""
        ema, params = self._pairs(model)
        w = 1.0 - self.decay
        if hasattr(torch, "_foreach_lerp_"):     # one fused launch per dtype/device group on GPU (as timm does)
            torch._foreach_lerp_(ema, params, w)
        else:
            for e, p in zip(ema, params):
                e.lerp_(p, w)                   # e + w (p - e)

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)
