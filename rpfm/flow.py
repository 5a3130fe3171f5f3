"""THE convention module: flow-matching path, velocity target, loss, and classifier-free guidance.

Conventions (spec §1; pinned here once, translated by checkpoint converters, never inside the model):

- **Time direction (LFM):** t in [0, 1], **t = 0 is data, t = 1 is Gaussian noise**. Sampling integrates
  dz/dt = v from t = 1 to t = 0. Lipman et al. and SiT use the opposite labels.
- **Path (conditional OT with sigma_min, Eq. 3):** z_t = (1 - t) z_0 + (sigma_min + (1 - sigma_min) t) z_1.
- **Velocity target (Eq. 4):** u_t = (1 - sigma_min) z_1 - z_0 (= dz_t/dt).
- **Loss (Eq. 6):** mean squared error over batch x C x h x w, no per-t weighting; t ~ U(0, 1) per sample, fp32.
  The model sees raw t (no x1000).
- **Model call order (DiT):** ``model(x, t, *, z_s, z_p, f_pose, f_src)``; conditioning is keyword-only.
- **Classifier-free guidance (Eq. 7):** v = v_u + w (v_c - v_u) on **all** output channels. The null condition
  keeps the input concatenation and zeroes the aggregated vector y (X-MDPT's mask). Both branches run as one
  batched 2B forward, conditional half first; with w == 1 the unconditional branch is not computed at all.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import RPFM, Condition

SIGMA_MIN = 1e-5
"""LFM's hard-coded sigma_min; the paper only says "almost zero"."""

COND_DROP_PROB = 0.1
"""Training-time probability of replacing y by the null condition (X-MDPT, DiT, LFM)."""


def interpolate(z0: Tensor, z1: Tensor, t: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """z_t on the path from data z0 (t = 0) to noise z1 (t = 1). z0, z1: (B, ...); t: (B,)."""
    t = t.reshape(-1, *([1] * (z0.dim() - 1))).to(z0.dtype)
    return (1 - t) * z0 + (sigma_min + (1 - sigma_min) * t) * z1


def target_velocity(z0: Tensor, z1: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """u_t = d z_t / dt = (1 - sigma_min) z1 - z0 (independent of t on this path)."""
    return (1 - sigma_min) * z1 - z0


def sample_time(batch_size: int, *, device=None, generator: torch.Generator | None = None) -> Tensor:
    """t ~ U(0, 1) i.i.d. per sample, fp32 (no logit-normal or shifted schedule)."""
    return torch.rand(batch_size, device=device, generator=generator, dtype=torch.float32)


def condition_keep_mask(batch_size: int, *, p_drop: float = COND_DROP_PROB, device=None,
                        generator: torch.Generator | None = None) -> Tensor:
    """Per-sample {0, 1} mask: 0 (drop y) with probability ``p_drop``. Use in training mode only."""
    return (torch.rand(batch_size, device=device, generator=generator) >= p_drop).float()


def flow_matching_loss(model: RPFM, z0: Tensor, *, z_s: Tensor, z_p: Tensor, f_pose: Tensor | None = None,
                       f_src: Tensor | None = None, keep_mask: Tensor | None = None, t: Tensor | None = None,
                       noise: Tensor | None = None, sigma_min: float = SIGMA_MIN,
                       generator: torch.Generator | None = None) -> Tensor:
    """L = E ||v_theta(z_t, t, ...) - u_t||^2 (Eq. 6). z0: (B, C, h, w) clean target latents. Returns a scalar."""
    B = z0.shape[0]
    if t is None:
        t = sample_time(B, device=z0.device, generator=generator)
    if noise is None:
        noise = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype, generator=generator)
    z_t = interpolate(z0, noise, t, sigma_min)
    v = model(z_t, t, z_s=z_s, z_p=z_p, f_pose=f_pose, f_src=f_src, keep_mask=keep_mask)
    return F.mse_loss(v.float(), target_velocity(z0, noise, sigma_min).float())


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, guidance_scale: float | Tensor) -> Tensor:
    """Eq. 7: v_u + w (v_c - v_u). w = 1 returns v_c; w = 0 returns v_u."""
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def check_guidance_scale(guidance_scale: float) -> float:
    """Validate the guidance scale w (a finite number >= 0; 1.0 = guidance off)."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise TypeError(f"guidance_scale: expected a number, got {type(guidance_scale).__name__}.")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale: expected a finite number >= 0 (1.0 = no guidance; the paper uses 1.1 "
                         f"at 256x256), got {guidance_scale}.")
    return float(guidance_scale)


class GuidedVelocity:
    """The ODE right-hand side f(x, t) = CFG-combined velocity for a fixed condition, with an NFE counter.

    The condition is prepared once (outside the loop). With ``guidance_scale == 1`` a call is one B-sized forward;
    otherwise one batched 2B forward (conditional half first). Either way one call counts as **one NFE** (LFM).

    x: (B, C, h, w) the ODE state (float32; cast to the model's dtype for the forward); t: 0-dim or (B,) tensor.
    Returns (B, C, h, w) float32: the samplers keep the state in fp32 whatever the model's dtype (a bf16 state
    rounded at every step drifts ~3x further from the fp32 solution over 60 steps).
    """

    def __init__(self, model: RPFM, cond: Condition, guidance_scale: float = 1.0):
        self.model = model
        self.guidance_scale = check_guidance_scale(guidance_scale)
        self.guided = self.guidance_scale != 1.0
        self.cond = cond.with_null() if self.guided else cond
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        t = t.expand(B) if t.dim() == 0 else t
        x = x.to(self.cond.y.dtype)                               # the model's dtype
        if not self.guided:
            return self.model.velocity(x, t, self.cond).float()
        v = self.model.velocity(torch.cat([x, x]), torch.cat([t, t]), self.cond).float()    # (2B, C, h, w)
        return cfg_combine(v[:B], v[B:], self.guidance_scale)
