"""A native twin of diffusers' ``AutoencoderKL`` for inference: the same modules, state-dict keys and arithmetic,
without importing diffusers (its import pulls torch._dynamo, transformers and every model class: 7-9 s on a
2-core CPU, 30+ s on a busy one, before the first image of any codec-backed pipeline).

``NativeAutoencoderKL`` reads a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) and
exposes what ``SDVAECodec`` calls: ``encode(x).latent_dist`` (``mode()``, ``sample(generator)``),
``decode(z).sample``, ``dtype``, ``config`` and ``save_pretrained``. It covers the configs SD-VAE and
``rpfm codec train`` write (``DownEncoderBlock2D`` / ``UpDecoderBlock2D``, SiLU, group norm, optional mid-block
attention and quant convs); :func:`unsupported` names anything else, and the caller falls back to diffusers. The
diffusers class stays the reference: ``tests/test_vae_native.py`` checks parity on random configs.

Layout: images (B, 3, H, W); latents (B, C, H/f, W/f) with f = 2 ** (len(block_out_channels) - 1); the encoder's
moments (B, 2C, h, w) = mean and log-variance.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fileio import atomic_write_json, check_tensors, load_tensors, read_json, save_tensors

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_DEFAULTS = dict(in_channels=3, out_channels=3, block_out_channels=[64], layers_per_block=1, act_fn="silu",
                 latent_channels=4, norm_num_groups=32, use_quant_conv=True, use_post_quant_conv=True,
                 mid_block_add_attention=True)


def unsupported(config: dict[str, Any]) -> str | None:
    """Why ``config`` (a diffusers AutoencoderKL config.json) is outside what the native twin implements, or None."""
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        return f"_class_name is {config.get('_class_name')!r}, not 'AutoencoderKL'"
    if config.get("act_fn", "silu") != "silu":
        return f"act_fn {config.get('act_fn')!r} (only 'silu')"
    n = len(config.get("block_out_channels", _DEFAULTS["block_out_channels"]))
    for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = config.get(key, [kind] * n)
        if list(types) != [kind] * n:
            return f"{key} {list(types)} (only {n} x {kind!r})"
    for key in ("latents_mean", "latents_std"):
        if config.get(key) is not None:
            return f"{key} is set (not used by AutoencoderKL's encode/decode, but not modelled either)"
    return None


class ResnetBlock(nn.Module):
    """diffusers ResnetBlock2D without time embedding: GN-SiLU-conv, GN-SiLU-conv, 1x1 shortcut if channels change."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SpatialAttention(nn.Module):
    """diffusers' mid-block Attention: one head over the h*w positions, group norm in, residual out."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)                   # (B, HW, C)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return self.to_out[0](o).transpose(1, 2).reshape(B, C, H, W) + x


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])
        self.attentions = nn.ModuleList([SpatialAttention(channels, groups)]) if attention else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class _Conv(nn.Module):
    """Holds ``conv`` so the keys read ``downsamplers.0.conv`` / ``upsamplers.0.conv`` like diffusers."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=0 if stride == 2 else 1)


class Stage(nn.Module):
    """diffusers DownEncoderBlock2D / UpDecoderBlock2D: ``layers`` resnets, then (``resample``) a stride-2 conv after
    padding right/bottom ("down", keys ``downsamplers.0.conv``) or nearest x2 and a 3x3 conv ("up", ``upsamplers``)."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        self.resample = resample
        if resample is not None:
            setattr(self, f"{resample}samplers", nn.ModuleList([_Conv(cout, 2 if resample == "down" else 1)]))

    def forward(self, x: Tensor) -> Tensor:
        for r in self.resnets:
            x = r(x)
        if self.resample == "down":
            x = self.downsamplers[0].conv(F.pad(x, (0, 1, 0, 1)))
        elif self.resample == "up":
            x = self.upsamplers[0].conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class Encoder(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        ch, g = list(c.block_out_channels), c.norm_num_groups
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([Stage(ch[max(i - 1, 0)], ch[i], c.layers_per_block, g,
                                                "down" if i < len(ch) - 1 else None) for i in range(len(ch))])
        self.mid_block = MidBlock(ch[-1], g, c.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * c.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        ch, g = list(reversed(c.block_out_channels)), c.norm_num_groups
        self.conv_in = nn.Conv2d(c.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g, c.mid_block_add_attention)
        self.up_blocks = nn.ModuleList([Stage(ch[max(i - 1, 0)], ch[i], c.layers_per_block + 1, g,
                                              "up" if i < len(ch) - 1 else None) for i in range(len(ch))])
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], c.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class DiagonalGaussian:
    """The posterior N(mean, exp(logvar)) from the encoder's moments (B, 2C, h, w), log-variance clamped to
    [-30, 20] (diffusers' DiagonalGaussianDistribution)."""

    def __init__(self, moments: Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        # like diffusers' randn_tensor: drawn on the generator's device, then moved (a CPU generator on CUDA)
        device = self.mean.device if generator is None else generator.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)


class EncodeOutput(NamedTuple):
    latent_dist: DiagonalGaussian


class DecodeOutput(NamedTuple):
    sample: Tensor


class NativeAutoencoderKL(nn.Module):
    """Inference twin of diffusers ``AutoencoderKL`` (see the module docstring); ``config`` is its config.json."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        why = unsupported(config)
        if why is not None:
            raise ValueError(f"NativeAutoencoderKL: config not supported ({why}); load it with diffusers' "
                             "AutoencoderKL instead.")
        self._config = dict(config)
        c = SimpleNamespace(**{**_DEFAULTS, **config})
        self.config = c
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        C = c.latent_channels
        self.quant_conv = nn.Conv2d(2 * C, 2 * C, 1) if c.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(C, C, 1) if c.use_post_quant_conv else None
        self.requires_grad_(False).eval()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode(self, x: Tensor) -> EncodeOutput:
        """x (B, 3, H, W) in [-1, 1] -> the posterior over latents (B, C, H/f, W/f) (unscaled)."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return EncodeOutput(DiagonalGaussian(moments))

    def decode(self, z: Tensor) -> DecodeOutput:
        """z (B, C, h, w) (unscaled) -> images (B, 3, h*f, w*f), not clamped."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return DecodeOutput(self.decoder(z))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike,
                        torch_dtype: torch.dtype | None = None) -> "NativeAutoencoderKL":
        """Load a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors; never pickle)."""
        folder = Path(folder)
        config = read_json(folder / "config.json", f"latent codec '{folder}' config.json")
        if not isinstance(config, dict):
            raise ValueError(f"latent codec: '{folder / 'config.json'}' is not a JSON object.")
        vae = cls(config)
        state = load_tensors(folder / WEIGHTS_NAME)
        expected = vae.state_dict()
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        shapes = sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                        if k in state and state[k].shape != v.shape)
        if missing or extra or shapes:
            raise ValueError(f"latent codec: '{folder / WEIGHTS_NAME}' does not match its config.json (missing "
                             f"{missing[:4]}, unexpected {extra[:4]}, shapes {shapes[:4]}). Re-export the codec "
                             "(`rpfm codec export`) or copy the folder completely.")
        check_tensors(state, expected, f"latent codec: '{folder}'")
        vae.load_state_dict(state)
        return vae.to(torch_dtype) if torch_dtype is not None else vae

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True) -> None:
        """Write config.json and diffusion_pytorch_model.safetensors (atomically), loadable by diffusers too."""
        if not safe_serialization:
            raise ValueError("NativeAutoencoderKL.save_pretrained: only safetensors is written "
                             "(safe_serialization=True).")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.state_dict(), folder / WEIGHTS_NAME, metadata={"format": "pt"})
        atomic_write_json(folder / "config.json", self._config)
