"""CodecTrainConfig: one frozen dataclass for training a latent codec (a diffusers ``AutoencoderKL``, the class of
SD-VAE) on a dataset's images, read from JSON like :class:`rpfm.train.config.TrainConfig`.

Example (JSON)::

    {"data": {"root": "data/synth128", "split": "train"},
     "vae": {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 1, "latent_channels": 4},
     "out_dir": "runs/codec128", "batch_size": 16, "steps": 6000, "lr": 4e-4}

``vae`` holds ``AutoencoderKL`` constructor arguments; the encoder/decoder block types follow from
``block_out_channels`` (one 2x downsample per block but the last, so 4 blocks give f = 8, like SD-VAE).

Loss per batch: ``l1_weight * |x - x̂|₁ + ssim_weight * (1 - SSIM(x, x̂)) + kl_weight * KL(q(z|x) || N(0, I))``,
with x̂ decoded from a posterior sample (SSIM: Gaussian window, σ = 1.5, on [0, 1] images). With ``crop`` set, each
image is a random crop x crop window (4x cheaper at half the side; the network is convolutional, so the exported
codec runs on whole images).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import read_json
from .schedule import check_schedule

REQUIRED = ("data", "out_dir", "batch_size", "steps")
# AutoencoderKL arguments a codec config may set (the block types are derived from block_out_channels).
VAE_KEYS = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
            "mid_block_add_attention")
DEFAULT_VAE = {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 1, "latent_channels": 4,
               "norm_num_groups": 32, "mid_block_add_attention": True}


@dataclass(frozen=True)
class CodecTrainConfig:
    """Everything that defines a codec training run. Unknown keys and wrong types raise ``ValueError``."""

    data: dict                            # {"root": dataset folder, "split": "train", "image_size": optional}
    out_dir: str                          # checkpoints/, log.jsonl, samples/ go here
    batch_size: int
    steps: int                            # optimizer steps in total
    vae: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_VAE))
    lr: float = 4e-4
    lr_decay_start: float | None = None   # None: constant lr; f in [0, 1): cosine tail from f * steps
    lr_min_ratio: float = 0.0             # the tail ends at lr * lr_min_ratio (rpfm.train.schedule)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    l1_weight: float = 1.0
    ssim_weight: float = 0.2
    kl_weight: float = 1e-6
    grad_clip: float | None = 1.0
    flip: bool = True                     # random horizontal flips (drawn from the seeded data generator)
    crop: int | None = None               # train on random crop x crop windows (the codec is convolutional), or
                                          # None for whole images; a multiple of the downsample factor
    seed: int = 0
    device: str = "auto"                  # "auto", "cpu", "cuda"
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 0                 # steps between reconstruction grids (0 = never)
    progress: bool = True
    resume: bool | str = False            # True: the newest checkpoint in out_dir (if any); or a checkpoint path

    def __post_init__(self) -> None:
        _validate(self)

    def vae_kwargs(self) -> dict[str, Any]:
        """``AutoencoderKL(**kwargs)`` for this config (defaults filled in, block types derived)."""
        kw = {**DEFAULT_VAE, **self.vae}
        n = len(kw["block_out_channels"])
        kw["block_out_channels"] = tuple(kw["block_out_channels"])
        return {**kw, "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * n,
                "up_block_types": ("UpDecoderBlock2D",) * n, "sample_size": self.data.get("image_size", 128)}

    @property
    def downsample(self) -> int:
        return 2 ** (len({**DEFAULT_VAE, **self.vae}["block_out_channels"]) - 1)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["betas"] = list(self.betas)
        return json.loads(json.dumps(out))

    def replace(self, **changes: Any) -> "CodecTrainConfig":
        return from_dict({**self.to_dict(), **changes})


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(CodecTrainConfig)]


def from_dict(data: Any) -> CodecTrainConfig:
    if not isinstance(data, dict):
        raise ValueError(f"codec train config: expected a mapping of settings, got {type(data).__name__}.")
    valid = valid_keys()
    unknown = sorted(k for k in data if k not in valid)
    if unknown:
        raise ValueError(f"codec train config: unknown keys {unknown}. Valid keys: {valid}.")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"codec train config: missing required keys {missing}. Required: {list(REQUIRED)}.")
    data = dict(data)
    if isinstance(data.get("betas"), list):
        data["betas"] = tuple(data["betas"])
    return CodecTrainConfig(**data)


def load_config(path: str | os.PathLike) -> CodecTrainConfig:
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"--config: expected a .json file, got '{path}'.")
    try:
        return from_dict(read_json(path, "--config"))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--config: no file at '{path}'.") from e


# ---------------------------------------------------------------------------------------------------- checks
def _fail(name: str, expected: str, got: Any) -> None:
    raise ValueError(f"codec train config: '{name}' must be {expected}, got {got!r} ({type(got).__name__}).")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(cfg: CodecTrainConfig) -> None:
    if not isinstance(cfg.data, dict) or not isinstance(cfg.data.get("root"), str):
        _fail("data", 'a mapping with a "root" folder, e.g. {"root": "data/synth128", "split": "train"}', cfg.data)
    unknown = sorted(set(cfg.data) - {"root", "split", "image_size"})
    if unknown:
        raise ValueError(f"codec train config: unknown keys {unknown} in 'data'. Valid: ['image_size', 'root', "
                         f"'split'].")
    if not isinstance(cfg.out_dir, str) or not cfg.out_dir:
        _fail("out_dir", "a folder path", cfg.out_dir)
    for name, minimum in (("batch_size", 1), ("steps", 1), ("log_every", 1), ("ckpt_every", 1),
                          ("keep_checkpoints", 1), ("sample_every", 0), ("seed", 0)):
        value = getattr(cfg, name)
        if not _is_int(value) or value < minimum:
            _fail(name, f"an int >= {minimum}", value)
    for name in ("lr", "l1_weight", "ssim_weight", "kl_weight", "weight_decay"):
        value = getattr(cfg, name)
        if not _is_num(value) or value < 0:
            _fail(name, "a finite number >= 0", value)
    if cfg.lr <= 0:
        _fail("lr", "a number > 0", cfg.lr)
    check_schedule(cfg, _fail)
    if not _is_num(cfg.ema_decay) or not 0 <= cfg.ema_decay < 1:
        _fail("ema_decay", "a number in [0, 1)", cfg.ema_decay)
    if (not isinstance(cfg.betas, (tuple, list)) or len(cfg.betas) != 2
            or not all(_is_num(b) and 0 <= b < 1 for b in cfg.betas)):
        _fail("betas", "two numbers in [0, 1)", cfg.betas)
    if cfg.grad_clip is not None and (not _is_num(cfg.grad_clip) or cfg.grad_clip <= 0):
        _fail("grad_clip", "a number > 0 or null", cfg.grad_clip)
    for name in ("flip", "progress"):
        if not isinstance(getattr(cfg, name), bool):
            _fail(name, "true or false", getattr(cfg, name))
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        _fail("device", '"auto", "cpu" or "cuda[:N]"', cfg.device)
    if not isinstance(cfg.resume, (bool, str)):
        _fail("resume", "true, false or a checkpoint path", cfg.resume)
    if not isinstance(cfg.vae, dict):
        _fail("vae", f"a mapping of AutoencoderKL arguments ({list(VAE_KEYS)})", cfg.vae)
    unknown = sorted(set(cfg.vae) - set(VAE_KEYS))
    if unknown:
        raise ValueError(f"codec train config: unknown keys {unknown} in 'vae'. Valid: {list(VAE_KEYS)}.")
    kw = {**DEFAULT_VAE, **cfg.vae}
    blocks = kw["block_out_channels"]
    if (not isinstance(blocks, (list, tuple)) or not 1 <= len(blocks) <= 5
            or not all(_is_int(c) and c > 0 for c in blocks)):
        _fail("vae.block_out_channels", "a list of 1 to 5 positive ints (4 blocks give f = 8)", blocks)
    groups = kw["norm_num_groups"]
    if not _is_int(groups) or groups < 1 or any(c % groups for c in blocks):
        _fail("vae.norm_num_groups", f"a positive int dividing every block width {list(blocks)}", groups)
    for name in ("layers_per_block", "latent_channels"):
        if not _is_int(kw[name]) or kw[name] < 1:
            _fail(f"vae.{name}", "an int >= 1", kw[name])
    if cfg.crop is not None and (not _is_int(cfg.crop) or cfg.crop < 11 or cfg.crop % cfg.downsample):
        _fail("crop", f"null or a multiple of the codec's downsample factor {cfg.downsample} of at least 11 (the "
              f"SSIM window)", cfg.crop)
    size = cfg.data.get("image_size")
    if size is not None and (not _is_int(size) or size < 1 or size % cfg.downsample):
        _fail("data.image_size", f"a positive multiple of the codec's downsample factor {cfg.downsample}", size)
