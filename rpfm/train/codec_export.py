"""A trained codec checkpoint -> an ``SDVAECodec`` folder, and the codec's reconstruction scores.

:func:`export_codec` loads the checkpoint's EMA weights into an ``AutoencoderKL``, computes the scaling factor
s = 1 / std(z) over the posterior means z of the training images (so s·z has unit variance, as SD's 0.18215 does
for SD-VAE), and writes ``codec_config.json`` + the diffusers ``config.json`` / ``diffusion_pytorch_model.safetensors``
+ ``codec_stats.json`` (latent mean/std, the data and the step) into a temporary folder renamed into place.

:func:`evaluate_codec` scores encode (posterior mode) -> decode on a split: PSNR (data range 1) and SSIM in both
of rpfm's variants (CFLD's 51-px uniform window and the Gaussian σ 1.5 window) on the uint8-rounded reconstruction,
as a saved-and-reloaded image would be.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..codec import SDVAECodec
from ..fileio import atomic_write_json, load_tensors
from . import checkpoint as ckpt_mod
from .codec_config import from_dict
from .codec_trainer import build_vae, image_files, load_images, to_unit

STATS_NAME = "codec_stats.json"


@torch.no_grad()
def latent_stats(vae, images_u8: Tensor, batch_size: int = 32) -> tuple[float, float]:
    """(mean, std) over every element of the posterior means of ``images_u8`` (N, 3, S, S) uint8."""
    total, total_sq, count = 0.0, 0.0, 0
    device = next(vae.parameters()).device
    for i in range(0, len(images_u8), batch_size):
        z = vae.encode(to_unit(images_u8[i:i + batch_size]).to(device)).latent_dist.mode().double()
        total += float(z.sum())
        total_sq += float((z * z).sum())
        count += z.numel()
    mean = total / count
    return mean, float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))


def export_codec(checkpoint: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the checkpoint's EMA codec as a ``load_codec`` folder; returns its path."""
    path = ckpt_mod.resolve_checkpoint(checkpoint)
    state = ckpt_mod.read_state(path)
    if state.get("model_config", {}).get("kind") != "codec":
        raise ValueError(f"--checkpoint: '{path}' is not a codec training checkpoint (it was written by `rpfm "
                         f"train`; export it with `rpfm export`).")
    ckpt_mod.verify_files(path, state)
    cfg = from_dict(state["train_config"])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: '{out}' is a file. Choose a folder path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out: '{out}' exists and is not empty. Choose a new folder or pass --overwrite.")
    vae = build_vae(cfg)
    vae.load_state_dict(load_tensors(path / "ema.safetensors"), strict=True)
    vae.eval()
    images = load_images(image_files(cfg.data["root"], cfg.data.get("split", "train")), cfg.data.get("image_size"))
    mean, std = latent_stats(vae, images)
    if not std > 0:
        raise ValueError(f"export: the training latents have zero variance (std {std}); the codec did not train.")
    scale = 1.0 / std
    vae.register_to_config(scaling_factor=scale)
    codec = SDVAECodec(vae, scaling_factor=scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        codec.save_pretrained(tmp)
        atomic_write_json(tmp / STATS_NAME, {
            "latent_mean": mean, "latent_std": std, "scaling_factor": scale, "step": int(state["step"]),
            "data": cfg.data, "num_images": len(images), "checkpoint": str(path)})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@torch.no_grad()
def evaluate_codec(codec: SDVAECodec, images_u8: Tensor, *, batch_size: int = 32) -> dict[str, Any]:
    """Reconstruction scores of ``codec`` on (N, 3, S, S) uint8 images: mean PSNR, SSIM (cfld; None for images
    under its 51-px window), SSIM (gaussian), plus the scaled latents' mean and std."""
    from ..metrics.ssim import CFLD_WIN_SIZE, psnr_per_image, ssim_per_image

    device = next(codec.parameters()).device
    psnr, ssim_c, ssim_g, zs = [], [], [], []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i:i + batch_size]
        z = codec.encode(to_unit(x).to(device))
        recon = ((codec.decode(z).float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        psnr.append(psnr_per_image(recon, x))
        if min(x.shape[-2:]) >= CFLD_WIN_SIZE:
            ssim_c.append(ssim_per_image(recon, x, variant="cfld"))
        ssim_g.append(ssim_per_image(recon, x, variant="gaussian"))
        zs.append(z.float().cpu().flatten())
    z = torch.cat(zs)
    return {"images": len(images_u8), "psnr": float(np.mean(np.concatenate(psnr))),
            "ssim": float(np.mean(np.concatenate(ssim_c))) if ssim_c else None, "ssim_gaussian": float(np.mean(np.concatenate(ssim_g))),
            "latent_mean": float(z.mean()), "latent_std": float(z.std())}
