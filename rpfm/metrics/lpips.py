"""LPIPS (Zhang et al. 2018): AlexNet trunk, v0.1 linear heads; written without torchvision or the lpips package.

Computation (``lpips.LPIPS(net="alex", version="0.1")``, which CFLD calls with ``normalize=True``):

1. inputs (B, 3, H, W) in [0, 1] -> 2x - 1, then the scaling layer (x - shift) / scale with
   shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
2. torchvision's AlexNet ``features`` trunk; the taps are the ReLU outputs after the five convolutions
   ``features.0``, ``.3``, ``.6``, ``.8``, ``.10`` (64, 192, 384, 256, 256 channels; max-pools at indices 2 and 5);
3. per tap: unit-normalise over channels, x / (sqrt(sum_c x^2) + 1e-10), squared difference of the two images,
   a 1x1 conv head ``lin{k}`` (no bias, non-negative weights; its dropout is inactive at eval), spatial mean;
4. sum over the five taps -> one distance per image.

Weights, from local files only (nothing is downloaded):

* AlexNet trunk -- torchvision's ImageNet AlexNet, ``alexnet-owt-7be5be79.pth`` from
  https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (the file ``lpips`` itself loads through torchvision).
  Any ``features.*`` state dict works (``classifier.*`` keys are ignored); ``.pth`` is read with
  ``torch.load(weights_only=True)``, ``.safetensors`` with safetensors.
* Linear heads -- ``alex.pth`` (v0.1) from the lpips package: ``site-packages/lpips/weights/v0.1/alex.pth`` after
  ``pip install lpips``, or https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth
  (keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, shapes (1, C, 1, 1)).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..images import to_image_tensor
from .inception import _load_strict, load_state_dict_file

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
ALEXNET_HOW = (f"Provide torchvision's ImageNet AlexNet state dict alexnet-owt-7be5be79.pth (download {ALEXNET_URL}), "
               "or a .safetensors conversion of it.")
HEADS_HOW = ("Provide the LPIPS v0.1 AlexNet linear heads alex.pth: site-packages/lpips/weights/v0.1/alex.pth after "
             f"'pip install lpips', or download {LPIPS_HEADS_URL}.")
CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)                     # indices in `features` of the ReLUs after features.0/.3/.6/.8/.10
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
MIN_SIZE = 32                               # smaller inputs vanish in AlexNet's stride-4 conv and two max-pools


class _LinearHead(nn.Module):
    """lpips' NetLinLayer: Dropout -> 1x1 conv (C -> 1, no bias); keys ``model.1.weight`` as in alex.pth."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` up to the last ReLU (index 11); the final max-pool is unused."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),        # 0, 1
        nn.MaxPool2d(kernel_size=3, stride=2),                                   # 2
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),                 # 3, 4
        nn.MaxPool2d(kernel_size=3, stride=2),                                   # 5
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),                # 6, 7
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),                # 8, 9
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),                # 10, 11
    )


class LPIPS(nn.Module):
    """AlexNet LPIPS v0.1. ``forward(pred, target)``: two (B, 3, H, W) float tensors in [0, 1] -> (B,) distances.

    A fresh instance has random weights (for tests); use :meth:`from_files` for the real metric.
    State dict keys: ``features.{0,3,6,8,10}.{weight,bias}`` (torchvision AlexNet) and ``lin{0..4}.model.1.weight``
    (lpips heads); the scaling constants are non-persistent buffers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (_LinearHead(c) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @classmethod
    def from_files(cls, alexnet: str | os.PathLike, heads: str | os.PathLike, *,
                   device: torch.device | str = "cpu") -> "LPIPS":
        """The real metric: AlexNet trunk and v0.1 heads from local files (module docstring); eval, no grad."""
        model = cls()
        model.load_alexnet(alexnet)
        model.load_heads(heads)
        return model.to(device).eval().requires_grad_(False)

    def load_alexnet(self, path: str | os.PathLike) -> None:
        state = load_state_dict_file(path, "LPIPS AlexNet weights", ALEXNET_HOW)
        trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        self._load(self.features, trunk, "LPIPS AlexNet weights", "Expected torchvision alexnet keys "
                   "'features.0.weight' ... 'features.10.bias'. " + ALEXNET_HOW)

    def load_heads(self, path: str | os.PathLike) -> None:
        state = load_state_dict_file(path, "LPIPS linear heads", HEADS_HOW)
        heads = {k: v for k, v in state.items() if k.startswith("lin")}
        self._load(nn.ModuleDict({f"lin{k}": getattr(self, f"lin{k}") for k in range(5)}), heads,
                   "LPIPS linear heads", "Expected keys 'lin0.model.1.weight' ... 'lin4.model.1.weight' (v0.1 "
                   "alex.pth; the vgg/squeeze files have other shapes). " + HEADS_HOW)

    @staticmethod
    def _load(module: nn.Module, state: dict[str, Tensor], what: str, hint: str) -> None:
        _load_strict(module, state, what, hint)

    def taps(self, x: Tensor) -> list[Tensor]:
        """Scaled input (B, 3, H, W) -> the five ReLU outputs (B, C_k, h_k, w_k)."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """(B, 3, H, W) and (B, 3, H, W) in [0, 1] -> (B,) LPIPS distances (differentiable)."""
        for name, x in (("pred", pred), ("target", target)):
            if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{name}: expected a float tensor (B, 3, H, W) in [0, 1], got {got}. Use "
                                 "rpfm.metrics.lpips_per_image for arrays, PIL images or lists.")
        if pred.shape != target.shape:
            raise ValueError(f"pred and target: expected the same shape, got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}. Pass one target per prediction at the same size.")
        if min(pred.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"pred: LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE}, got "
                             f"{tuple(pred.shape[-2:])}.")
        b = pred.shape[0]
        x = torch.cat([pred, target]) * 2 - 1                      # both images in one trunk pass: (2B, 3, H, W)
        x = (x - self.shift) / self.scale
        total = pred.new_zeros(b)
        for k, f in enumerate(self.taps(x)):
            f = f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + NORM_EPS)   # unit norm over channels
            d = (f[:b] - f[b:]) ** 2                                                  # (B, C_k, h_k, w_k)
            head = getattr(self, f"lin{k}").model[1]                                  # dropout skipped (eval)
            total = total + head(d).mean(dim=(1, 2, 3))                               # 1x1 conv, spatial mean
        return total


@torch.inference_mode()
def lpips_per_image(pred: Any, target: Any, *, model: LPIPS, batch_size: int = 32) -> np.ndarray:
    """LPIPS per pair for any accepted image input (uint8 arrays, float [0, 1] arrays/tensors, lists, paths).

    Returns a float64 array (B,). Runs on ``model``'s device in chunks of ``batch_size``.
    """
    if not isinstance(model, LPIPS):
        raise TypeError(f"model: expected an rpfm.metrics.LPIPS, got {type(model).__name__}. Build one with "
                        "LPIPS.from_files(alexnet_path, heads_path).")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}.")
    p = to_image_tensor(pred, name="pred", value_range="[0,1]")
    t = to_image_tensor(target, name="target", value_range="[0,1]")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"pred and target: expected the same number of images, got {p.shape[0]} predictions and "
                         f"{t.shape[0]} targets.")
    device = model.shift.device
    out = [model(p[i:i + batch_size].to(device), t[i:i + batch_size].to(device)).double().cpu()
           for i in range(0, p.shape[0], batch_size)]
    return torch.cat(out).numpy()


def lpips(pred: Any, target: Any, *, model: LPIPS, batch_size: int = 32) -> float:
    """Mean of :func:`lpips_per_image` over the batch."""
    return float(np.mean(lpips_per_image(pred, target, model=model, batch_size=batch_size)))
