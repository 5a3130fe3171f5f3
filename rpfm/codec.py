"""Latent codecs: images (B, 3, H, W) in [-1, 1] <-> latents (B, C, h, w), with h = H/f and w = W/f.

Two implementations sit behind one small interface, ``LatentCodec``:

* ``SDVAECodec`` wraps a diffusers ``AutoencoderKL`` (spec §4.1: stabilityai/sd-vae-ft-mse, f = 8, C = 4,
  latents scaled by 0.18215). It is frozen and runs in its own dtype (fp32 in X-MDPT and LFM).
* ``PixelCodec`` is a weight-free space-to-depth codec (pixel_unshuffle, C = 3·f·f), an exact inverse, so tiny
  demo and test models can train without downloaded weights.

A codec folder holds ``codec_config.json`` ({"type": ..., ...}) plus the codec's own weights, if any;
``load_codec`` dispatches on "type". Weights are stored as safetensors only; nothing is pickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .fileio import LOAD_ERRORS, check_module_weights

CODEC_CONFIG_NAME = "codec_config.json"
SD_VAE_SCALING_FACTOR = 0.18215  # Rombach et al. (LDM) / SD-1.x: rescales the VAE latent to roughly unit variance.


def _check_float_4d(x: Any, name: str, channels: int, what: str, multiple_of: int = 1) -> None:
    """Boundary validation shared by encode/decode: a 4-D floating tensor with ``channels`` channels."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of {what}, got {type(x).__name__}. "
                        "Convert user images with rpfm.images.to_image_tensor first.")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected shape (B, {channels}, H, W) ({what}), got {tuple(x.shape)}. "
                         "Add a batch dimension with x[None] or check that the channel axis is dim 1.")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor ({what}), got dtype {x.dtype}. "
                        "Convert with x.float() (and map uint8 images to [-1, 1] via x / 127.5 - 1).")
    height, width = x.shape[-2:]
    if height % multiple_of or width % multiple_of:
        raise ValueError(f"{name}: expected H and W divisible by the codec's downsample factor {multiple_of}, "
                         f"got {height}x{width}. Resize or crop the images to a multiple of {multiple_of} "
                         "(e.g. 256x256).")


class LatentCodec(torch.nn.Module):
    """Interface: ``encode`` (B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f); ``decode`` the inverse.

    Attributes:
        latent_channels: C, channels of the latent.
        downsample: f, image pixels per latent pixel along each side.
        scaling_factor: multiplier applied after encoding (and divided out before decoding).

    Codecs are frozen: parameters never require grad and the module stays in eval mode (``train()`` is a no-op).
    """

    codec_type: str = ""
    latent_channels: int
    downsample: int
    scaling_factor: float = 1.0

    def encode(self, images: Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """images (B, 3, H, W) float in [-1, 1] -> latents (B, C, H/f, W/f), already scaled."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode().")

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, C, h, w) -> images (B, 3, h·f, w·f) roughly in [-1, 1]; NOT clamped."""
        raise NotImplementedError(f"{type(self).__name__} must implement decode().")

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable description, {"type": ..., ...}; ``load_codec`` rebuilds the codec from it."""
        raise NotImplementedError(f"{type(self).__name__} must implement config_dict().")

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``codec_config.json`` (subclasses add their weights)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CODEC_CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")

    def train(self, mode: bool = True) -> "LatentCodec":
        # Frozen by design (spec §4.1): a parent model's .train() must not switch the codec out of eval mode.
        return super().train(False)

    def extra_repr(self) -> str:
        return f"latent_channels={self.latent_channels}, downsample={self.downsample}, " \
               f"scaling_factor={self.scaling_factor}"


# ---------------------------------------------------------------------------------------------------- SD-VAE
class SDVAECodec(LatentCodec):
    """Stable-Diffusion VAE (diffusers ``AutoencoderKL``), frozen.

    encode: z = posterior.mode() · s (``sample=False``, deterministic, for inference) or posterior.sample(generator) · s
    (``sample=True``, as X-MDPT and LFM do in training); decode: x = vae.decode(z / s). s = 0.18215 for SD-1.x VAEs.
    Inputs are cast to the VAE's dtype; outputs come back in the VAE's dtype.
    """

    codec_type = "sd-vae"

    def __init__(self, vae: Any, scaling_factor: float = SD_VAE_SCALING_FACTOR) -> None:
        super().__init__()
        from .vae import NativeAutoencoderKL

        if not isinstance(vae, NativeAutoencoderKL):
            from diffusers import AutoencoderKL  # lazy: keep `import rpfm` light

            if not isinstance(vae, AutoencoderKL):
                raise TypeError(f"SDVAECodec(vae=...): expected a diffusers.AutoencoderKL (or rpfm's "
                                f"NativeAutoencoderKL), got {type(vae).__name__}. Load one with "
                                "SDVAECodec.from_pretrained(path).")
        if not isinstance(scaling_factor, (int, float)) or isinstance(scaling_factor, bool) or scaling_factor <= 0:
            raise ValueError(f"SDVAECodec(scaling_factor=...): expected a positive number, got {scaling_factor!r}. "
                             f"SD-1.x VAEs use {SD_VAE_SCALING_FACTOR}.")
        self.vae = vae.requires_grad_(False).eval()
        self.scaling_factor = float(scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)  # one 2x downsample per block but the last

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, scaling_factor: float = SD_VAE_SCALING_FACTOR,
                        torch_dtype: torch.dtype | None = None, backend: str | None = None) -> "SDVAECodec":
        """Load ``AutoencoderKL`` from a local folder (config.json + diffusion_pytorch_model.safetensors).

        ``backend``: "native" (:class:`rpfm.vae.NativeAutoencoderKL`, the same modules and weights without importing
        diffusers), "diffusers" (diffusers' class, the reference), or "auto" (default; the ``RPFM_VAE_BACKEND``
        environment variable overrides it): native when the config is one it implements, else diffusers."""
        from .vae import NativeAutoencoderKL, unsupported

        backend = os.environ.get("RPFM_VAE_BACKEND", "auto") if backend is None else backend
        if backend not in ("auto", "native", "diffusers"):
            raise ValueError(f"SDVAECodec.from_pretrained(backend=...): expected 'auto', 'native' or 'diffusers' "
                             f"(or the same in RPFM_VAE_BACKEND), got {backend!r}.")
        folder = Path(path)
        hint = (f"Download stabilityai/sd-vae-ft-mse (config.json + diffusion_pytorch_model.safetensors) on a "
                f"machine with internet and copy the folder to '{folder}'.")
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise FileNotFoundError(f"latent codec: no SD-VAE weights at '{folder}'. {hint}")
        weights = "diffusion_pytorch_model.safetensors"
        if not ((folder / weights).is_file() or (folder / f"{weights}.index.json").is_file()):
            raise FileNotFoundError(f"latent codec: '{folder}' has a config.json but no {weights} (pickled .bin "
                                    f"files are not loaded). {hint}")
        if backend != "diffusers" and (folder / weights).is_file():
            try:
                config = json.loads((folder / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"latent codec: '{folder / 'config.json'}' is not valid JSON ({e}). {hint}") from None
            why = unsupported(config) if isinstance(config, dict) else "config.json is not a JSON object"
            if why is None:
                return cls(NativeAutoencoderKL.from_pretrained(folder, torch_dtype=torch_dtype),
                           scaling_factor=scaling_factor)
            if backend == "native":
                raise ValueError(f"latent codec: '{folder}' needs diffusers' AutoencoderKL ({why}); use "
                                 "backend='auto' or 'diffusers'.")
        elif backend == "native":
            raise ValueError(f"latent codec: '{folder}' has sharded weights; the native codec reads one {weights}. "
                             "Use backend='auto' or 'diffusers'.")
        from diffusers import AutoencoderKL

        kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        try:
            vae = AutoencoderKL.from_pretrained(folder, **kwargs)
        except LOAD_ERRORS as e:
            raise ValueError(f"latent codec: '{folder}' could not be loaded as a diffusers AutoencoderKL ({e}). "
                             f"{hint}") from None
        check_module_weights(vae, f"latent codec: '{folder}'")
        return cls(vae, scaling_factor=scaling_factor)

    def encode(self, images: Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """images (B, 3, H, W) float in [-1, 1], H and W multiples of f -> latents (B, C, H/f, W/f) · s."""
        _check_float_4d(images, "images", 3, "RGB images in [-1, 1]", self.downsample)
        with torch.no_grad():
            posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
            latents = posterior.sample(generator) if sample else posterior.mode()
        return latents * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, C, h, w), scaled -> images (B, 3, h·f, w·f), roughly [-1, 1], not clamped."""
        _check_float_4d(latents, "latents", self.latent_channels, "codec latents")
        with torch.no_grad():
            return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample

    def config_dict(self) -> dict[str, Any]:
        # latent_channels / downsample are informational (derived from the VAE's own config.json on load).
        return {"type": self.codec_type, "scaling_factor": self.scaling_factor,
                "latent_channels": self.latent_channels, "downsample": self.downsample}

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write codec_config.json + the VAE's config.json and diffusion_pytorch_model.safetensors."""
        super().save_pretrained(save_directory)
        self.vae.save_pretrained(save_directory, safe_serialization=True)


# ---------------------------------------------------------------------------------------------------- pixels
class PixelCodec(LatentCodec):
    """Weight-free space-to-depth codec: (B, c, H, W) -> (B, c·f·f, H/f, W/f) via pixel_unshuffle.

    Latent channel k·f·f + i·f + j holds image channel k at offset (i, j) inside each f x f block (the
    ``F.pixel_unshuffle`` layout). ``decode`` is ``F.pixel_shuffle``, an exact (bitwise) inverse. Scale is 1.0 and
    ``sample`` / ``generator`` are accepted and ignored (the code is deterministic).
    """

    codec_type = "pixel"

    def __init__(self, downsample: int = 4, channels: int = 3) -> None:
        super().__init__()
        for name, value in (("downsample", downsample), ("channels", channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PixelCodec({name}=...): expected a positive int, got {value!r}. "
                                 "Defaults are downsample=4, channels=3.")
        self.downsample = downsample
        self.channels = channels
        self.latent_channels = channels * downsample * downsample
        self.scaling_factor = 1.0

    def encode(self, images: Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """images (B, c, H, W) float -> latents (B, c·f·f, H/f, W/f)."""
        _check_float_4d(images, "images", self.channels, "images in [-1, 1]", self.downsample)
        return F.pixel_unshuffle(images, self.downsample)

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, c·f·f, h, w) -> images (B, c, h·f, w·f)."""
        _check_float_4d(latents, "latents", self.latent_channels, "codec latents")
        return F.pixel_shuffle(latents, self.downsample)

    def config_dict(self) -> dict[str, Any]:
        return {"type": self.codec_type, "downsample": self.downsample, "channels": self.channels}


# ---------------------------------------------------------------------------------------------------- loading
_CODEC_KEYS = {"sd-vae": {"scaling_factor", "latent_channels", "downsample", "path"},
               "pixel": {"downsample", "channels", "latent_channels"}}


def _from_config(config: dict[str, Any], folder: Path | None) -> LatentCodec:
    codec_type = config.get("type")
    if codec_type not in _CODEC_KEYS:
        raise ValueError(f"load_codec: config 'type' must be one of {sorted(_CODEC_KEYS)}, got {codec_type!r}. "
                         "Write e.g. {\"type\": \"pixel\", \"downsample\": 4}.")
    unknown = sorted(set(config) - _CODEC_KEYS[codec_type] - {"type"})
    if unknown:
        raise ValueError(f"load_codec: unknown keys {unknown} for type {codec_type!r}. "
                         f"Valid keys: {sorted(_CODEC_KEYS[codec_type])}.")
    if codec_type == "pixel":
        codec: LatentCodec = PixelCodec(downsample=config.get("downsample", 4), channels=config.get("channels", 3))
    else:
        path = folder if folder is not None else config.get("path")
        if path is None:
            raise ValueError("load_codec: an 'sd-vae' config needs weights. Pass the codec folder instead of a dict, "
                             "or add \"path\": \"<folder with config.json + diffusion_pytorch_model.safetensors>\".")
        codec = SDVAECodec.from_pretrained(path, scaling_factor=config.get("scaling_factor", SD_VAE_SCALING_FACTOR))
    # Informational keys must agree with what was built: a mismatch means a wrong folder or an edited config.
    for key in ("latent_channels", "downsample"):
        if key in config and config[key] != getattr(codec, key):
            raise ValueError(f"load_codec: config says {key}={config[key]!r} but the loaded codec has "
                             f"{key}={getattr(codec, key)!r}. Fix or delete the key in {CODEC_CONFIG_NAME}.")
    return codec


def load_codec(dir_or_config: str | os.PathLike | dict[str, Any]) -> LatentCodec:
    """Build a codec from a saved folder (``save_pretrained`` output) or a config dict (``config_dict()`` output).

    A folder without ``codec_config.json`` but with a diffusers VAE config.json (e.g. a plain download of
    stabilityai/sd-vae-ft-mse) loads as ``SDVAECodec`` with the SD scaling factor 0.18215.
    """
    if isinstance(dir_or_config, dict):
        return _from_config(dir_or_config, None)
    if not isinstance(dir_or_config, (str, os.PathLike)):
        raise TypeError(f"load_codec: expected a folder path or a config dict, got {type(dir_or_config).__name__}.")
    folder = Path(dir_or_config)
    config_file = folder / CODEC_CONFIG_NAME
    if config_file.is_file():
        return _from_config(json.loads(config_file.read_text()), folder)
    if (folder / "config.json").is_file():
        return _from_config({"type": "sd-vae"}, folder)
    raise FileNotFoundError(f"load_codec: no {CODEC_CONFIG_NAME} (or diffusers VAE config.json) in '{folder}'. "
                            "Save a codec there with codec.save_pretrained(folder), or download "
                            "stabilityai/sd-vae-ft-mse (config.json + diffusion_pytorch_model.safetensors) on a "
                            f"machine with internet and copy the folder to '{folder}'.")
