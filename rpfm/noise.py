"""The initial noise x1 ~ N(0, I) at t = 1: from one generator, one generator per sample, or given ``latents``.

Diffusers' conventions: ``generator`` is one ``torch.Generator`` for the whole batch or a list with one per sample
(sample i then depends only on generator i, so a batch reproduces the single-sample calls); ``latents`` is the
noise itself, (B, C, h, w), used as given (cast to the pipeline's device and dtype).
Noise is drawn in fp32 on the generator's device (CPU without one) and then moved, so a seed gives the same image
on every device. With ``checks`` (an ``rpfm.checks.Checks``), the NaN/Inf check of device ``latents`` is deferred
(read when the checks are resolved), so it does not make the host wait for the device.
"""
from __future__ import annotations

from typing import Any, Sequence

import math

import torch
from torch import Tensor

from .checks import Checks, check_values
from .images import to_device


def _draw(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)


def initial_noise(batch_size: int, latent_shape: Sequence[int], *, generator: Any = None, latents: Any = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                  checks: Checks | None = None) -> Tensor:
    """x1: (B, C, h, w) in ``dtype`` on ``device``.

    Args:
        batch_size: B, the number of samples.
        latent_shape: (C, h, w).
        generator: None, a ``torch.Generator``, or a list/tuple of B generators (one per sample).
        latents: None, or the noise itself: a float tensor (B, C, h, w) (or (C, h, w) when B = 1).
        checks: where to defer the NaN/Inf check of device ``latents``; None checks now.
    """
    shape = (batch_size, *map(int, latent_shape))
    if latents is not None:
        if generator is not None:
            raise ValueError("latents: pass either latents= (the initial noise itself) or generator= (to draw it), "
                             "not both.")
        if not isinstance(latents, Tensor) or not latents.is_floating_point():
            raise TypeError(f"latents: expected a float torch.Tensor of shape {shape} (the noise at t = 1), got "
                            f"{type(latents).__name__}{'' if not isinstance(latents, Tensor) else ' ' + str(latents.dtype)}.")
        x = latents[None] if latents.ndim == len(shape) - 1 else latents
        if tuple(x.shape) != shape:
            raise ValueError(f"latents: expected shape {shape} (batch, latent channels, latent height, width), got "
                             f"{tuple(latents.shape)}. Draw it with torch.randn{shape}.")
        check_values(x, _judge_latents, checks)
        return to_device(x.detach(), device, dtype)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"generator: got a list of {len(generator)} generators for a batch of {batch_size}. "
                             f"Pass one generator per sample, or a single generator for the whole batch.")
        bad = [i for i, g in enumerate(generator) if not isinstance(g, torch.Generator)]
        if bad:
            raise TypeError(f"generator[{bad[0]}]: expected a torch.Generator, got {type(generator[bad[0]]).__name__}.")
        x = torch.cat([_draw((1, *shape[1:]), g).cpu() for g in generator])
    elif generator is None or isinstance(generator, torch.Generator):
        x = _draw(shape, generator)
    else:
        raise TypeError(f"generator: expected a torch.Generator, a list of them (one per sample) or None, got "
                        f"{type(generator).__name__}. Make one with torch.Generator().manual_seed(0).")
    return to_device(x, device, dtype)


def _judge_latents(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("latents: contains NaN or Inf values. Pass finite noise, e.g. torch.randn(...).")


__all__ = ["initial_noise"]
