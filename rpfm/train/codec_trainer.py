"""Train a latent codec (diffusers ``AutoencoderKL``) on a dataset's images: ``CodecTrainer(cfg).fit()``, then
:func:`export_codec` writes an ``SDVAECodec`` folder (``rpfm.codec.load_codec`` / ``SDVAECodec.from_pretrained``)
whose scaling factor makes the training latents unit-variance.

One optimizer step: a batch of images x (B, 3, H, W) in [-1, 1] (random horizontal flips), posterior
q(z|x) = N(μ, σ²) with z (B, C, H/f, W/f), a sample z ~ q drawn with the checkpointed ``posterior`` generator,
x̂ = decode(z); the loss of :mod:`rpfm.train.codec_config`; AdamW, gradient clipping, EMA of the weights.

The guarantees are the flow trainer's (and share its code: :mod:`rpfm.train.checkpoint`, :mod:`rpfm.train.logs`):
checkpoints are atomic safetensors folders verified on load; a resumed run repeats the uninterrupted one exactly
(bitwise on CPU: the data order and flips come from a generator seeded with (seed, epoch), the posterior samples
from a generator whose state is checkpointed, and the data position is saved); a non-finite loss stops the run
before the update.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..fileio import atomic_write_json
from ..imagefile import read_rgb
from . import checkpoint as ckpt_mod
from .codec_config import CodecTrainConfig, from_dict, load_config
from .ema import EMA
from .logs import LOG_NAME, TrainLog, run_steps, save_png, truncate_log

logger = logging.getLogger("rpfm.train.codec")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# CodecTrainConfig fields that may change on resume without changing the trajectory.
_RESUME_SAFE = {"out_dir", "steps", "log_every", "ckpt_every", "keep_checkpoints", "sample_every", "progress",
                "resume", "device"}


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; training stopped before the update."""


@dataclass
class CodecTrainResult:
    step: int
    loss: float | None
    checkpoint: Path | None
    out_dir: Path


# ---------------------------------------------------------------------------------------------------- data
def image_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The images of one split: ``{root}/{split}_highres/**`` (the CFLD / synthetic-benchmark layout), sorted."""
    folder = Path(root) / f"{split}_highres"
    if not folder.is_dir():
        raise FileNotFoundError(f"data.root: no '{split}_highres' folder in '{root}'. Point it at a dataset in the "
                                f"CFLD layout, e.g. one made by `rpfm data synth --out {root} --size 128`.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"data.root: '{folder}' holds no .png/.jpg images.")
    return files


def load_images(files: list[Path], image_size: int | None) -> Tensor:
    """All images as one uint8 tensor (N, 3, S, S); every image must already be S x S (S = image_size or the first
    image's size); nothing is resized silently."""
    arrays = []
    for path in files:
        try:
            arr = np.asarray(read_rgb(path, "data"))      # 16-bit, palette, CMYK... decoded as rpfm.imagefile does
        except OSError as e:
            raise ValueError(f"data: cannot read '{path}' ({e}). Replace or delete the file.") from e
        size = image_size if image_size is not None else arr.shape[0]
        if arr.shape[:2] != (size, size):
            raise ValueError(f"data: '{path}' is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size} (data."
                             f"image_size). Use a dataset drawn at that size (rpfm data synth --size {size}).")
        arrays.append(arr)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_unit(images_u8: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1]."""
    return images_u8.float() / 127.5 - 1


# ---------------------------------------------------------------------------------------------------- loss
def _gaussian_window(sigma: float = 1.5, size: int = 11) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map_mean(x: Tensor, y: Tensor) -> Tensor:
    """Differentiable SSIM (Gaussian window σ 1.5, 11 taps, data range 1) of (B, C, H, W) images in [0, 1], averaged
    over pixels, channels and batch. Separable filtering with 'valid' borders, K1 = 0.01, K2 = 0.03."""
    c = x.shape[1]
    g = _gaussian_window().to(x)
    gh, gv = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


def codec_loss(cfg: CodecTrainConfig, x: Tensor, recon: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """The configured loss on images in [-1, 1] and the posterior's mean / log-variance (B, C, h, w)."""
    loss = cfg.l1_weight * (recon - x).abs().mean()
    if cfg.ssim_weight:
        loss = loss + cfg.ssim_weight * (1 - ssim_map_mean((recon.clamp(-1, 1) + 1) / 2, (x + 1) / 2))
    if cfg.kl_weight:
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = loss + cfg.kl_weight * kl
    return loss


# ---------------------------------------------------------------------------------------------------- trainer
def _as_config(cfg: CodecTrainConfig | dict | str | os.PathLike) -> CodecTrainConfig:
    if isinstance(cfg, CodecTrainConfig):
        return cfg
    if isinstance(cfg, dict):
        return from_dict(cfg)
    if isinstance(cfg, (str, os.PathLike)):
        return load_config(cfg)
    raise TypeError(f"codec train config: expected a CodecTrainConfig, a dict or a .json path, got "
                    f"{type(cfg).__name__}.")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} was requested but CUDA is not available here. Use \"cpu\" or \"auto\".")
    return torch.device(name)


def build_vae(cfg: CodecTrainConfig):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**cfg.vae_kwargs())


class CodecTrainer:
    """Train the configured ``AutoencoderKL``. ``images`` (N, 3, S, S) uint8 overrides ``cfg.data`` (tests)."""

    def __init__(self, cfg: CodecTrainConfig | dict | str | os.PathLike, *, images: Tensor | None = None):
        self.cfg = cfg = _as_config(cfg)
        self.out_dir = Path(cfg.out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"out_dir: '{self.out_dir}' is a file. Choose a folder path.")
        if images is None:
            images = load_images(image_files(cfg.data["root"], cfg.data.get("split", "train")),
                                 cfg.data.get("image_size"))
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}.")
        if images.shape[-1] % cfg.downsample or images.shape[-2] % cfg.downsample:
            raise ValueError(f"data: {images.shape[-2]}x{images.shape[-1]} images are not a multiple of the codec's "
                             f"downsample factor {cfg.downsample}.")
        if cfg.crop is not None and cfg.crop > min(images.shape[-2:]):
            raise ValueError(f"crop: {cfg.crop} is larger than the {images.shape[-2]}x{images.shape[-1]} images.")
        if len(images) < cfg.batch_size:
            raise ValueError(f"batch_size: {cfg.batch_size} is larger than the {len(images)} training images.")
        self.images = images
        self.device = _device(cfg.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.vae = build_vae(cfg)
        self.vae.to(self.device).train()
        self.ema = EMA(self.vae, cfg.ema_decay)
        self.params = [p for p in self.vae.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.posterior_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.consumed = 0
        self.batches_per_epoch = len(images) // cfg.batch_size       # the incomplete last batch is dropped
        self.last_checkpoint: Path | None = None
        self._start_or_resume()

    # ------------------------------------------------------------------ resume
    def _start_or_resume(self) -> None:
        cfg, root = self.cfg, ckpt_mod.checkpoint_root(self.out_dir)
        path = None
        if cfg.resume is False:
            existing = ckpt_mod.find_latest(root)
            if existing is not None:
                raise ValueError(f"out_dir: '{self.out_dir}' already holds checkpoints (newest: {existing.name}). "
                                 f"Pass --resume to continue that run, or choose another out_dir.")
        elif cfg.resume is True:
            path = ckpt_mod.find_latest(root)
        else:
            path = ckpt_mod.resolve_checkpoint(cfg.resume)
        if path is not None:
            ckpt = ckpt_mod.load_checkpoint(path, model_config=self._arch())
            self.vae.load_state_dict(ckpt.model, strict=True)
            self.ema.load_state_dict(ckpt.ema)
            self.optimizer.load_state_dict(ckpt.optimizer)
            for group in self.optimizer.param_groups:
                group.update(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
            self.posterior_gen.set_state(ckpt.rng["posterior"])
            self.step, self.consumed, self.last_checkpoint = ckpt.step, int(ckpt.state["consumed_batches"]), ckpt.path
            saved = {k: v for k, v in ckpt.state.get("train_config", {}).items() if k not in _RESUME_SAFE}
            current = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_SAFE}
            diff = ckpt_mod.config_diff(saved, current)
            if diff:
                logger.warning("resume: the codec config differs from the checkpoint's (%s); continuing with the "
                               "new values.", "; ".join(diff))
            logger.info("resumed from '%s' at step %d.", ckpt.path, self.step)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        truncate_log(self.out_dir / LOG_NAME, self.step)
        atomic_write_json(self.out_dir / "codec_train_config.json", cfg.to_dict())

    def _arch(self) -> dict[str, Any]:
        """What must not change between a checkpoint and the run resuming it."""
        return {"kind": "codec", **{k: list(v) if isinstance(v, tuple) else v
                                    for k, v in self.cfg.vae_kwargs().items()}}

    # ------------------------------------------------------------------ data
    def batches(self) -> Iterator[Tensor]:
        """Batches of images (B, 3, S, S) in [-1, 1], forever, from the current data position."""
        cfg = self.cfg
        while True:
            epoch, start = divmod(self.consumed, self.batches_per_epoch)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.images), generator=gen)
            flips = torch.rand(len(self.images), generator=gen) < 0.5
            height, width = self.images.shape[-2:]
            crop = cfg.crop or min(height, width)
            tops = torch.randint(0, height - crop + 1, (len(self.images),), generator=gen)
            lefts = torch.randint(0, width - crop + 1, (len(self.images),), generator=gen)
            for b in range(start, self.batches_per_epoch):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                if cfg.crop is None:
                    x = to_unit(self.images[idx])
                else:
                    x = to_unit(torch.stack([self.images[i, :, tops[i]:tops[i] + crop, lefts[i]:lefts[i] + crop]
                                             for i in idx.tolist()]))
                if cfg.flip:
                    f = flips[idx]
                    x[f] = x[f].flip(-1)
                self.consumed += 1
                yield x

    # ------------------------------------------------------------------ step
    def train_step(self, batches: Iterator[Tensor]) -> tuple[float, float]:
        """One optimizer step on the next batch. Returns (loss, gradient norm before clipping)."""
        cfg = self.cfg
        x = next(batches).to(self.device)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=self.posterior_gen,
                                                         device=self.device)
        recon = self.vae.decode(z).sample
        loss = codec_loss(cfg, x, recon, posterior.mean, posterior.logvar)
        loss.backward()
        if cfg.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params
                                                                    if p.grad is not None])))
        value = float(loss.detach())
        if not (math.isfinite(value) and math.isfinite(grad_norm)):
            last = f"'{self.last_checkpoint}'" if self.last_checkpoint else "none"
            raise NonFiniteLossError(f"codec training stopped at step {self.step + 1}: loss {value}, gradient norm "
                                     f"{grad_norm}. The update was not applied; the last good checkpoint is {last}. "
                                     f"Lower lr or kl_weight, then resume from it.")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.vae)
        return value, grad_norm

    def fit(self) -> CodecTrainResult:
        cfg = self.cfg
        log = TrainLog(self.out_dir, total=cfg.steps, initial=self.step, log_every=cfg.log_every,
                       progress=cfg.progress, tensorboard=False, enabled=True)
        loss = run_steps(self, log, self.batches(), steps=cfg.steps, sample_every=cfg.sample_every,
                         ckpt_every=cfg.ckpt_every)
        return CodecTrainResult(self.step, loss, self.last_checkpoint, self.out_dir)

    # ------------------------------------------------------------------ checkpoints and samples
    def save_checkpoint(self) -> Path:
        self.last_checkpoint = ckpt_mod.save_checkpoint(
            self.out_dir, self.step, model=self.vae.state_dict(), ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(), rng={"posterior": self.posterior_gen.get_state()},
            train_config=self.cfg.to_dict(), model_config=self._arch(), keep=self.cfg.keep_checkpoints,
            extra={"consumed_batches": self.consumed, "batches_per_epoch": self.batches_per_epoch})
        return self.last_checkpoint

    @torch.no_grad()
    def save_samples(self, n: int = 8) -> Path:
        """Originals (top row) over EMA reconstructions (posterior mode) of the first ``n`` training images."""
        x = to_unit(self.images[:n]).to(self.device)
        vae = self.ema.module
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        grid = torch.cat([torch.cat(list(x), dim=2), torch.cat(list(recon), dim=2)], dim=1)     # (3, 2S, nS)
        array = ((grid.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype("uint8")
        return save_png(Image.fromarray(array), self.out_dir / "samples" / f"{ckpt_mod.step_name(self.step)}.png")


def train_codec(cfg: CodecTrainConfig | dict | str | os.PathLike, *, images: Tensor | None = None) -> CodecTrainResult:
    return CodecTrainer(cfg, images=images).fit()
