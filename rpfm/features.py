"""Global token features from a frozen DINOv2 (spec §4.2): images (B, 3, H, W) -> tokens (B, N, C).

RPFM's global branches read DINOv2 tokens: dinov2-base (C = 768) for the rendered pose, dinov2-giant (C = 1536)
for the source. Output = ``Dinov2Model(x).last_hidden_state``, i.e. [CLS; patch tokens] after the final LayerNorm,
the same layout as X-MDPT's hub ``get_intermediate_layers(x, n=1, return_class_token=True)`` with norm=True:
N = 1 + (224 / 14)^2 = 257 at the default 224 x 224 input.

Preprocessing reproduces X-MDPT, not the HF image processor (which resizes to 256, centre-crops 224 and normalises):
  * resize the *tensor* to 224 x 224, bicubic (torchvision ``Resize(224, BICUBIC)`` on a square image);
  * no ImageNet mean/std: inputs go in as given (source in [-1, 1], pose in [0, 1]).
Weights load from a local folder only (safetensors); nothing is downloaded.
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

FEATURES_CONFIG_NAME = "features_config.json"
NORMALIZE_CHOICES = ("none", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GlobalFeatureExtractor(torch.nn.Module):
    """Frozen DINOv2 wrapper: ``forward(images (B, 3, H, W)) -> (B, N, C)`` token features.

    Args:
        model: a ``transformers.Dinov2Model`` (frozen here: eval mode, ``requires_grad=False``).
        antialias: antialias the bicubic resize to the model's ``image_size``. X-MDPT ran torchvision 0.13, whose
            tensor ``Resize`` had antialias OFF; torchvision >= 0.17 (and this default) has it ON. Set False to
            match X-MDPT checkpoints bit for bit; keep train and test consistent either way.
        normalize: "none" (X-MDPT: inputs go in as given) or "imagenet", which expects [0, 1] inputs and applies
            mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) after resizing (the "proper" DINOv2 input).

    Runs under ``torch.no_grad``; output dtype is the model's dtype (wrap the call in ``torch.autocast`` for bf16,
    as X-MDPT does). ``train()`` is a no-op: the extractor stays in eval mode inside a training model.
    """

    def __init__(self, model: Any, *, antialias: bool = True, normalize: str = "none") -> None:
        super().__init__()
        from transformers import Dinov2Model  # lazy: keep `import rpfm` light

        if not isinstance(model, Dinov2Model):
            raise TypeError(f"GlobalFeatureExtractor(model=...): expected a transformers.Dinov2Model, got "
                            f"{type(model).__name__}. Load one with GlobalFeatureExtractor.from_pretrained(path).")
        if not isinstance(antialias, bool):
            raise TypeError(f"GlobalFeatureExtractor(antialias=...): expected a bool, got {antialias!r}.")
        if normalize not in NORMALIZE_CHOICES:
            raise ValueError(f"GlobalFeatureExtractor(normalize=...): expected one of {NORMALIZE_CHOICES}, got "
                             f"{normalize!r}. Use 'none' to match X-MDPT, 'imagenet' for [0, 1] inputs.")
        self.model = model.requires_grad_(False).eval()
        self.antialias = antialias
        self.normalize = normalize
        self.image_size = int(model.config.image_size)
        self.patch_size = int(model.config.patch_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ properties
    @property
    def feature_dim(self) -> int:
        """C: token width (768 for dinov2-base, 1536 for dinov2-giant)."""
        return int(self.model.config.hidden_size)

    @property
    def num_tokens(self) -> int:
        """N: CLS + (image_size / patch_size)^2 patch tokens (257 at 224 / 14)."""
        return 1 + (self.image_size // self.patch_size) ** 2

    # ------------------------------------------------------------------ forward
    def preprocess(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) float -> (B, 3, S, S), S = image_size (224): bicubic resize, optional ImageNet norm."""
        if not isinstance(images, Tensor):
            raise TypeError(f"images: expected a torch.Tensor (B, 3, H, W), got {type(images).__name__}. "
                            "Convert user images with rpfm.images.to_image_tensor first.")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected shape (B, 3, H, W), got {tuple(images.shape)}. "
                             "Add a batch dimension with x[None] or check that the channel axis is dim 1.")
        if not images.is_floating_point():
            raise TypeError(f"images: expected a floating tensor, got dtype {images.dtype}. Convert with "
                            "x.float() and map to the value range used in training ([-1, 1] source, [0, 1] pose).")
        size = (self.image_size, self.image_size)
        x = images.float()  # resize in fp32: bicubic in bf16 loses visible precision
        if tuple(x.shape[-2:]) != size:  # torchvision's Resize also skips the no-op case
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=self.antialias)
        if self.normalize == "imagenet":
            x = (x - self.mean) / self.std
        return x

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) float -> features (B, N, C) = last_hidden_state ([CLS; patches], final LayerNorm)."""
        x = self.preprocess(images)
        with torch.no_grad():
            return self.model(pixel_values=x.to(self.model.dtype)).last_hidden_state

    def train(self, mode: bool = True) -> "GlobalFeatureExtractor":
        # Frozen by design (spec §4.2): a parent model's .train() must not switch DINOv2 out of eval mode.
        return super().train(False)

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable options; feature_dim / num_tokens are informational (they come from config.json)."""
        return {"type": "dinov2", "antialias": self.antialias, "normalize": self.normalize,
                "feature_dim": self.feature_dim, "num_tokens": self.num_tokens}

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write features_config.json + DINOv2's config.json and model.safetensors."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        (directory / FEATURES_CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, antialias: bool = True, normalize: str = "none",
                        torch_dtype: torch.dtype | None = None) -> "GlobalFeatureExtractor":
        """Load ``Dinov2Model`` from a local folder (config.json + model.safetensors)."""
        from transformers import Dinov2Model

        folder = Path(path)
        hint = ("Download facebook/dinov2-base (pose features) or facebook/dinov2-giant (source features) "
                f"(config.json + model.safetensors) on a machine with internet and copy the folder to '{folder}'.")
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise FileNotFoundError(f"global features: no DINOv2 weights at '{folder}'. {hint}")
        if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
            raise FileNotFoundError(f"global features: '{folder}' has a config.json but no model.safetensors "
                                    f"(pickled .bin files are not loaded). {hint}")
        try:
            model = Dinov2Model.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        except LOAD_ERRORS as e:
            raise ValueError(f"global features: '{folder}' could not be loaded as a transformers Dinov2Model ({e}). "
                             f"{hint}") from None
        check_module_weights(model, f"global features: '{folder}'")
        if torch_dtype is not None:  # cast after loading: the from_pretrained kwarg name differs across versions
            model = model.to(torch_dtype)
        return cls(model, antialias=antialias, normalize=normalize)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, num_tokens={self.num_tokens}, antialias={self.antialias}, " \
               f"normalize={self.normalize!r}"


def load_feature_extractor(directory: str | os.PathLike) -> GlobalFeatureExtractor:
    """Load a ``save_pretrained`` folder, or a plain DINOv2 download (no features_config.json: default options)."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"load_feature_extractor: expected a folder path, got {type(directory).__name__}.")
    folder = Path(directory)
    options: dict[str, Any] = {}
    config_file = folder / FEATURES_CONFIG_NAME
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if config.get("type") != "dinov2":
            raise ValueError(f"load_feature_extractor: {config_file} has type {config.get('type')!r}; only "
                             "'dinov2' is supported. Re-save the extractor with save_pretrained.")
        unknown = sorted(set(config) - {"type", "antialias", "normalize", "feature_dim", "num_tokens"})
        if unknown:
            raise ValueError(f"load_feature_extractor: unknown keys {unknown} in {config_file}. "
                             "Valid keys: ['antialias', 'feature_dim', 'normalize', 'num_tokens', 'type'].")
        options = {k: config[k] for k in ("antialias", "normalize") if k in config}
    extractor = GlobalFeatureExtractor.from_pretrained(folder, **options)
    if config_file.is_file():
        for key in ("feature_dim", "num_tokens"):
            if key in config and config[key] != getattr(extractor, key):
                raise ValueError(f"load_feature_extractor: {config_file} says {key}={config[key]!r} but the model "
                                 f"has {key}={getattr(extractor, key)!r}. Fix or delete the key.")
    return extractor
