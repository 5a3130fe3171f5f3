"""Region metrics for person images on a plain backdrop: noise on the background, PSNR on the person.

Whole-image SSIM/PSNR on small frames are dominated by the backdrop (most pixels), so a model that paints a clean
background but a vague person, or a sharp person on a speckled background, looks alike. These two numbers separate
them. Both take the ground truth to define the regions:

* **background** (``background_mask``): ground-truth pixels whose ``window`` x ``window`` neighbourhood is flat,
  every channel within ``tol`` (default 1/255) of the pixel's own value, so edges, shadows and textures are out.
  ``background_noise`` is the standard deviation of (generated - ground truth) over those pixels and channels, per
  image, in 0..255 units: 0 for a clean backdrop, about the noise's sigma for speckle (a constant colour offset
  does not count; it shows in PSNR). With ``margin`` only pixels that far from the person count (see
  ``background_noise``).
* **person** (``person_mask``): ground-truth pixels that differ from the backdrop colour (the median of the
  image's one-pixel border) by more than ``tol`` (default 8/255) in some channel. ``person_psnr`` is the PSNR
  (data range 1) over those pixels, per image.

Images are (B, H, W, 3) float arrays in [0, 1] (the layout ``rpfm eval`` scores); results are float64 (B,).
"""
from __future__ import annotations

import numpy as np

BACKGROUND_TOL = 1 / 255
PERSON_TOL = 8 / 255
WINDOW = 5


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if t.ndim != 4 or t.shape[-1] != 3 or p.shape != t.shape:
        raise ValueError(f"pred, target: expected two (B, H, W, 3) arrays of the same shape in [0, 1], got "
                         f"{p.shape} and {t.shape}.")
    return p, t


def background_mask(target: np.ndarray, *, tol: float = BACKGROUND_TOL, window: int = WINDOW) -> np.ndarray:
    """(B, H, W) bool: pixels whose ``window`` x ``window`` neighbourhood in ``target`` is flat (see module)."""
    from scipy.ndimage import maximum_filter, minimum_filter

    t = np.asarray(target, dtype=np.float64)
    size = (1, window, window, 1)                                   # the neighbourhood, per image and channel
    spread = np.maximum(maximum_filter(t, size=size, mode="nearest") - t,
                        t - minimum_filter(t, size=size, mode="nearest"))           # (B, H, W, 3)
    return (spread <= tol).all(axis=-1)


def person_mask(target: np.ndarray, *, tol: float = PERSON_TOL) -> np.ndarray:
    """(B, H, W) bool: pixels that differ from the backdrop colour (median of the one-pixel border) (see module)."""
    t = np.asarray(target, dtype=np.float64)
    border = np.concatenate([t[:, 0], t[:, -1], t[:, :, 0], t[:, :, -1]], axis=1)   # (B, 2W + 2H, 3)
    backdrop = np.median(border, axis=1)                                           # (B, 3)
    return (np.abs(t - backdrop[:, None, None, :]) > tol).any(axis=-1)


def far_margin(height: int) -> int:
    """The distance (pixels) ``region_metrics`` keeps from the person for the far-background noise: H / 16."""
    return max(1, round(height / 16))


def background_noise(pred: np.ndarray, target: np.ndarray, *, margin: int = 0, **mask_kw) -> np.ndarray:
    """Per image: std of (pred - target) over the flat background, x 255 (NaN when an image has none).

    ``margin`` > 0 keeps only background pixels at least ``margin`` pixels (Chebyshev) from the ground truth's
    person (``person_mask``): speckle on the backdrop itself, without the edge errors of a slightly misplaced
    silhouette, which dominate the plain number once the backdrop is clean."""
    from scipy.ndimage import maximum_filter

    p, t = _check(pred, target)
    out = np.full(p.shape[0], np.nan)
    for i in range(p.shape[0]):                                     # one image at a time: bounded memory
        mask = background_mask(t[i:i + 1], **mask_kw)[0]
        if margin > 0:
            near = maximum_filter(person_mask(t[i:i + 1])[0], size=2 * margin - 1, mode="constant")  # < margin
            mask &= ~near
        if mask.any():
            out[i] = 255 * (p[i].astype(np.float64) - t[i])[mask].std()
    return out


def person_psnr(pred: np.ndarray, target: np.ndarray, **mask_kw) -> np.ndarray:
    """Per image: PSNR in dB (data range 1) over the person's pixels (NaN when an image has none; inf if equal)."""
    p, t = _check(pred, target)
    out = np.full(p.shape[0], np.nan)
    for i in range(p.shape[0]):
        mask = person_mask(t[i:i + 1], **mask_kw)[0]
        if mask.any():
            mse = ((p[i].astype(np.float64) - t[i])[mask] ** 2).mean()
            with np.errstate(divide="ignore"):
                out[i] = 10 * np.log10(1 / mse)
    return out
