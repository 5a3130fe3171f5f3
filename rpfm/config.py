"""Model configuration: one frozen dataclass, named presets, and config.json round trips.

Shapes use the project's letters: B batch, T tokens, D hidden, H heads, C latent channels, h x w latent grid.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

BRANCHES = ("global_pose", "global_source", "local_source", "local_pose")
"""The four conditional-aggregation branches of RPFM (spec §2.3), in the order they are summed."""


@dataclass(frozen=True)
class RPFMConfig:
    """Everything that fixes the shape of an RPFM network.

    Defaults are RPFM-B/2 ("medium") at 256x256 with the SD-VAE latent space and DINOv2 global features.
    """

    image_size: int = 256
    latent_channels: int = 4          # C: channels of the codec's latent (SD-VAE: 4)
    latent_downsample: int = 8        # image pixels per latent pixel (SD-VAE: 8)
    patch_size: int = 2               # p
    hidden_size: int = 768            # D
    depth: int = 12
    num_heads: int = 12               # H
    mlp_ratio: float = 4.0
    pose_feature_dim: int = 768       # DINOv2-B width (global pose branch)
    source_feature_dim: int = 1536    # DINOv2-G width (global source branch)
    num_global_tokens: int = 257      # CLS + 16x16 patch tokens of DINOv2 at 224x224
    input_concat: bool = True         # ablation 1 switches this off (x_embedder takes C channels)
    branches: tuple[str, ...] = BRANCHES  # () = ablation 2 (no aggregation); drop "local_pose" = three-branch

    # Derived, filled in __post_init__.
    latent_size: int = field(init=False)   # h = w
    num_tokens: int = field(init=False)    # T
    in_channels: int = field(init=False)   # channels into x_embedder (3C with concatenation)
    head_dim: int = field(init=False)

    def __post_init__(self) -> None:
        def fail(name: str, expected: str, got: Any, fix: str) -> None:
            raise ValueError(f"RPFMConfig.{name}: expected {expected}, got {got!r}. {fix}")

        for name in ("image_size", "latent_channels", "latent_downsample", "patch_size", "hidden_size",
                     "depth", "num_heads", "pose_feature_dim", "source_feature_dim", "num_global_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "a positive int", value, "Use a preset from rpfm.PRESETS as a starting point.")
        if self.mlp_ratio <= 0:
            fail("mlp_ratio", "a positive number", self.mlp_ratio, "DiT uses 4.0.")
        object.__setattr__(self, "branches", tuple(self.branches))
        unknown = [b for b in self.branches if b not in BRANCHES]
        if unknown or len(set(self.branches)) != len(self.branches):
            fail("branches", f"distinct names from {BRANCHES}", self.branches, "Remove unknown or repeated names.")
        if self.image_size % self.latent_downsample:
            fail("image_size", f"a multiple of latent_downsample={self.latent_downsample}", self.image_size,
                 "Pick an image size the codec can encode, e.g. 256 or 512 for the SD-VAE.")
        latent = self.image_size // self.latent_downsample
        if latent % self.patch_size:
            fail("image_size", f"a latent size ({latent}) divisible by patch_size={self.patch_size}",
                 self.image_size, "Change image_size or patch_size.")
        if self.hidden_size % self.num_heads:
            fail("hidden_size", f"a multiple of num_heads={self.num_heads}", self.hidden_size,
                 "Use e.g. 64 channels per head.")
        if self.hidden_size % 4:
            fail("hidden_size", "a multiple of 4 (2-D sin-cos positional embedding)", self.hidden_size,
                 "Round hidden_size to a multiple of 4.")
        object.__setattr__(self, "latent_size", latent)
        object.__setattr__(self, "num_tokens", (latent // self.patch_size) ** 2)
        object.__setattr__(self, "in_channels", self.latent_channels * (3 if self.input_concat else 1))
        object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)

    # ------------------------------------------------------------------ helpers
    @property
    def uses_global_features(self) -> bool:
        """True when the network consumes DINOv2-style token features (f_pose / f_src)."""
        return "global_pose" in self.branches or "global_source" in self.branches

    def replace(self, **changes: Any) -> "RPFMConfig":
        return from_dict({**to_dict(self), **changes})


def to_dict(config: RPFMConfig) -> dict[str, Any]:
    """The constructor arguments only (derived fields are recomputed on load)."""
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    out["branches"] = list(out["branches"])
    return out


def from_dict(data: dict[str, Any]) -> RPFMConfig:
    """Build a config from a dict, rejecting unknown keys with the list of valid ones."""
    if not isinstance(data, dict):
        raise TypeError(f"RPFM config: expected a dict of fields, got {type(data).__name__}.")
    valid = [f.name for f in dataclasses.fields(RPFMConfig) if f.init]
    derived = {f.name for f in dataclasses.fields(RPFMConfig) if not f.init}
    unknown = sorted(k for k in data if k not in valid and k not in derived)
    if unknown:
        raise ValueError(f"RPFM config: unknown keys {unknown}. Valid keys: {valid}.")
    kwargs = {k: v for k, v in data.items() if k in valid}
    if "branches" in kwargs:
        kwargs["branches"] = tuple(kwargs["branches"])
    return RPFMConfig(**kwargs)


def to_json(config: RPFMConfig) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def fingerprint(config: RPFMConfig) -> str:
    """sha256 of the config's canonical JSON (constructor fields, sorted keys): written into the weights' metadata
    at save, compared with the folder's config.json at load."""
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------- presets
# DiT sizes (spec §3): depth / D / heads; head dim 64 except XL (72). Medium = B/2, large = L/2 (spec §3.2).
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def _preset(size: str, image_size: int, **extra: Any) -> RPFMConfig:
    depth, hidden, heads = _SIZES[size]
    return RPFMConfig(image_size=image_size, patch_size=2, depth=depth, hidden_size=hidden, num_heads=heads, **extra)


PRESETS: dict[str, RPFMConfig] = {}
for _size in _SIZES:
    PRESETS[f"RPFM-{_size}/2"] = _preset(_size, 256)
    PRESETS[f"RPFM-{_size}/2-512"] = _preset(_size, 512)
# The paper's ablations (spec §2.5), on the medium model.
PRESETS["RPFM-B/2-no-concat"] = _preset("B", 256, input_concat=False)
PRESETS["RPFM-B/2-no-aggregation"] = _preset("B", 256, branches=())
PRESETS["RPFM-B/2-three-branch"] = _preset("B", 256, branches=BRANCHES[:3])
# Aliases used by the paper.
PRESETS["medium"] = PRESETS["RPFM-B/2"]
PRESETS["large"] = PRESETS["RPFM-L/2"]


def get_preset(name: str) -> RPFMConfig:
    if name not in PRESETS:
        raise ValueError(f"preset: unknown name {name!r}. Choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def tiny_config(**overrides: Any) -> RPFMConfig:
    """A few-thousand-parameter config for tests and CPU demos (64x64 images, 2 blocks, D=32)."""
    base = dict(image_size=64, latent_channels=4, latent_downsample=8, patch_size=2, hidden_size=32, depth=2,
                num_heads=2, pose_feature_dim=24, source_feature_dim=40, num_global_tokens=257)
    base.update(overrides)
    return RPFMConfig(**base)
