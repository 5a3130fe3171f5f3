"""SSIM and PSNR exactly as CFLD computes them (the numbers in the field's DeepFashion tables), plus the metric frame.

Protocol (CFLD ``pose_transfer_test.py`` + ``models/metrics.py``, spec §4.5):

1. **Metric frame.** A generated 256x256 image (B, 3, 256, 256) in [0, 1] is resized back to the dataset's
   256x176 with ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)``, then
   ``(x * 255).clamp(0, 255).to(torch.uint8)`` -- a *truncation* to uint8, not a rounding -- and divided by 255.
   Ground truth is the original 256x176 image /255, never resized. :func:`to_metric_frame` does this
   (``quantize="floor"``; ``"round"`` is what saving a PNG through :func:`rpfm.images.to_output` does).
2. **SSIM, variant "cfld"** (CFLD's ``SSIM``, the headline number): per image
   ``structural_similarity(gt, pred, data_range=1, win_size=51, channel_axis=0)`` on float32 (3, H, W) arrays in
   [0, 1] -- a 51x51 *uniform* window, sample covariance, K1=0.01, K2=0.03, computed per RGB channel (channels first,
   ``channel_axis=0``) and averaged over the three channels; scikit-image computes in float32 for float32 input.
3. **SSIM, variant "gaussian"** (CFLD's ``SSIM_256``, the Wang et al. setting also reported in tables): per image
   the images are scaled by 255 (float32) and ``structural_similarity(gt255, pred255, gaussian_weights=True,
   sigma=1.5, use_sample_covariance=False, channel_axis=0, data_range=pred255.max() - pred255.min())`` -- an
   11x11 Gaussian window (truncate 3.5) and, as in CFLD, a data range taken from the *prediction's* value span,
   not the nominal 1. A constant prediction has data range 0 there (C1 = C2 = 0): it scores 0 against a textured
   target and NaN (0/0) against a constant one, as in CFLD; no warning is raised.
4. **PSNR**: ``peak_signal_noise_ratio(gt, pred, data_range=1)`` on the same float32 (3, H, W) arrays
   (MSE over all channels and pixels). Identical images give ``inf`` (no warning), so a batch mean that includes
   one is ``inf`` too -- CFLD would report the same.

Scores are per image (float64 arrays of shape (B,)); the dataset score is their plain mean. The argument order is
(pred, target) everywhere in rpfm; scikit-image is called with (target, pred) like CFLD (only the Gaussian variant's
data range is asymmetric). scikit-image (>= 0.19, for ``channel_axis``) is imported lazily:
``pip install 'rpfm[eval]'``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..images import to_image_tensor

METRIC_SIZE = (256, 176)        # DeepFashion's native (H, W); CFLD/X-MDPT tables are computed at this size
SSIM_VARIANTS = ("cfld", "gaussian")
QUANTIZE_MODES = ("floor", "round", "none")
CFLD_WIN_SIZE = 51               # CFLD's SSIM window (uniform)
GAUSSIAN_SIGMA = 1.5             # Wang et al. 2004; with scikit-image's truncate=3.5 the window is 11x11
_GAUSSIAN_WIN_SIZE = 2 * int(3.5 * GAUSSIAN_SIGMA + 0.5) + 1   # scikit-image's rule -> 11
_INSTALL = "pip install 'rpfm[eval]' (or: pip install scikit-image>=0.19)"


def _skimage_metrics():
    """scikit-image's metrics module, imported on first use (it is an optional dependency)."""
    try:
        from skimage import metrics
    except ImportError as err:
        raise ImportError(f"SSIM/PSNR need scikit-image, which is not installed. Install it with {_INSTALL}.") \
            from err
    return metrics


# ---------------------------------------------------------------------------------------------------- frame
def to_metric_frame(images: Any, size: tuple[int, int] = METRIC_SIZE, *, quantize: str = "floor",
                    name: str = "images") -> Tensor:
    """Bring images to the metric frame: (B, 3, H, W) float32 in [0, 1] at ``size``, quantised to k/255.

    Args:
        images: anything :func:`rpfm.images.to_image_tensor` accepts -- uint8 (H, W, 3) / (B, H, W, 3) arrays,
            float arrays in [0, 1], (3, H, W) / (B, 3, H, W) tensors in [0, 1] (float) or uint8, PIL images,
            paths, or a list of those.
        size: target (H, W); (256, 176) for DeepFashion at 256, (512, 352) at 512.
        quantize: "floor" (default, CFLD: ``(x * 255).clamp(0, 255).to(torch.uint8)`` truncates), "round"
            (round half to even, like saving a PNG via ``rpfm.images.to_output``), or "none" (keep floats).
        name: the argument name used in error messages.

    Images already at ``size`` are not resampled (CFLD never resizes the ground truth); uint8 input at ``size``
    therefore comes back exactly as k/255. Resizing is bicubic with antialias (``align_corners=False``), computed
    in float32, clamped to [0, 1] by the quantisation.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize: expected one of {list(QUANTIZE_MODES)}, got {quantize!r}.")
    if not (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size: expected an (H, W) pair of positive ints such as (256, 176), got {size!r}.")
    x = to_image_tensor(images, name=name, value_range="[0,1]")                # (B, 3, h, w) float32
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    if quantize == "none":
        return x.clamp(0, 1)
    x = (x * 255.0).clamp(0, 255)
    x = x.to(torch.uint8) if quantize == "floor" else x.round().to(torch.uint8)   # .to(uint8) truncates (CFLD)
    return x.to(torch.float32) / 255.0


# ---------------------------------------------------------------------------------------------------- inputs
def _pairs(pred: Any, target: Any, size: tuple[int, int] | None, min_side: int,
           why: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert both inputs to float32 numpy (B, 3, H, W) in [0, 1] (uint8 -> /255)."""
    p = to_image_tensor(pred, name="pred", value_range="[0,1]")
    t = to_image_tensor(target, name="target", value_range="[0,1]")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"pred and target: expected the same number of images, got {p.shape[0]} predictions and "
                         f"{t.shape[0]} targets. Pass one target per prediction, in the same order.")
    if p.shape[-2:] != t.shape[-2:]:
        raise ValueError(f"pred and target: expected the same image size, got pred {tuple(p.shape[-2:])} and "
                         f"target {tuple(t.shape[-2:])} (H, W). Bring both to the metric frame with "
                         "rpfm.metrics.to_metric_frame(images, size=(256, 176)).")
    if size is not None and tuple(p.shape[-2:]) != tuple(size):
        raise ValueError(f"pred: expected {tuple(size)} (H, W) images for this protocol, got "
                         f"{tuple(p.shape[-2:])}. Convert with rpfm.metrics.to_metric_frame(images, size={size}).")
    if min(p.shape[-2:]) < min_side:
        raise ValueError(f"pred: images of {tuple(p.shape[-2:])} (H, W) are smaller than the {min_side}x{min_side} "
                         f"window {why}. Compute metrics on 256x176 metric frames (to_metric_frame).")
    return p.numpy(), t.numpy()


# ---------------------------------------------------------------------------------------------------- SSIM
def ssim_per_image(pred: Any, target: Any, *, variant: str = "cfld",
                   size: tuple[int, int] | None = None) -> np.ndarray:
    """Per-image SSIM as CFLD computes it (see the module docstring for both variants).

    Args:
        pred, target: B generated and B ground-truth images (uint8 (H, W, 3) / (B, H, W, 3) arrays, float arrays
            in [0, 1], (B, 3, H, W) tensors in [0, 1], or lists of those); same size, same count.
        variant: "cfld" (uniform 51x51 window, data range 1) or "gaussian" (sigma 1.5, data range of pred*255).
        size: if given, the (H, W) every image must have (e.g. (256, 176)); None accepts any common size.

    Returns:
        float64 array of shape (B,).
    """
    if variant not in SSIM_VARIANTS:
        raise ValueError(f"variant: expected one of {list(SSIM_VARIANTS)}, got {variant!r}.")
    win = CFLD_WIN_SIZE if variant == "cfld" else _GAUSSIAN_WIN_SIZE
    p, t = _pairs(pred, target, size, win, f"of the {variant!r} SSIM")
    structural_similarity = _skimage_metrics().structural_similarity
    out = np.empty(p.shape[0], dtype=np.float64)
    for i in range(p.shape[0]):                                    # (3, H, W) float32 each, channels first
        if variant == "cfld":
            out[i] = structural_similarity(t[i], p[i], data_range=1, win_size=CFLD_WIN_SIZE, channel_axis=0)
        else:
            t255, p255 = t[i] * 255.0, p[i] * 255.0
            with np.errstate(divide="ignore", invalid="ignore"):   # constant pred: range 0, may be 0/0 (CFLD)
                out[i] = structural_similarity(t255, p255, gaussian_weights=True, sigma=GAUSSIAN_SIGMA,
                                               use_sample_covariance=False, channel_axis=0,
                                               data_range=p255.max() - p255.min())
    return out


def ssim(pred: Any, target: Any, *, variant: str = "cfld", size: tuple[int, int] | None = None) -> float:
    """Mean of :func:`ssim_per_image` over the batch (a Python float)."""
    return float(np.mean(ssim_per_image(pred, target, variant=variant, size=size)))


# ---------------------------------------------------------------------------------------------------- PSNR
def psnr_per_image(pred: Any, target: Any, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Per-image PSNR in dB with data range 1 (CFLD); identical images give ``inf``. Returns float64 (B,)."""
    p, t = _pairs(pred, target, size, 1, "")
    peak_signal_noise_ratio = _skimage_metrics().peak_signal_noise_ratio
    out = np.empty(p.shape[0], dtype=np.float64)
    for i in range(p.shape[0]):
        with np.errstate(divide="ignore"):                         # MSE 0 -> 10 log10(1 / 0) = inf, by design
            out[i] = peak_signal_noise_ratio(t[i], p[i], data_range=1)
    return out


def psnr(pred: Any, target: Any, *, size: tuple[int, int] | None = None) -> float:
    """Mean of :func:`psnr_per_image` over the batch (``inf`` if any pair is identical)."""
    return float(np.mean(psnr_per_image(pred, target, size=size)))
