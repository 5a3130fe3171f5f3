"""SSIM / PSNR / metric frame: exact agreement with scikit-image called as CFLD calls it, closed forms, bad input."""
import math
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("skimage", reason="SSIM/PSNR need scikit-image (pip install 'rpfm[eval]')")
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from rpfm.metrics import psnr, psnr_per_image, ssim, ssim_per_image, to_metric_frame  # noqa: E402

H, W = 96, 72   # >= 51 for the CFLD window, small enough to be fast


def rgb(b: int, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)


def chw(a: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 / 255: the array CFLD hands to scikit-image."""
    return np.ascontiguousarray(np.moveaxis(a, -1, 0)).astype(np.float32) / np.float32(255)


def noisy_pair(b: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated target/pred uint8 batches (realistic SSIM values, not ~0)."""
    target = rgb(b, seed=seed)
    noise = np.random.default_rng(seed + 1).integers(-40, 41, size=target.shape)
    pred = np.clip(target.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return pred, target


# ---------------------------------------------------------------------------------------------------- exactness
def test_ssim_cfld_equals_skimage_exactly():
    pred, target = noisy_pair()
    got = ssim_per_image(pred, target, variant="cfld")
    ref = [structural_similarity(chw(t), chw(p), data_range=1, win_size=51, channel_axis=0)
           for p, t in zip(pred, target)]
    assert got.dtype == np.float64 and got.shape == (3,)
    assert got.tolist() == [float(r) for r in ref]
    assert ssim(pred, target) == float(np.mean(got))
    assert 0.1 < got.min() < got.max() < 0.99


def test_ssim_gaussian_equals_skimage_exactly():
    pred, target = noisy_pair(seed=3)
    got = ssim_per_image(pred, target, variant="gaussian")
    ref = []
    for p, t in zip(pred, target):
        p255, t255 = chw(p) * 255.0, chw(t) * 255.0
        ref.append(structural_similarity(t255, p255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         channel_axis=0, data_range=p255.max() - p255.min()))
    assert got.tolist() == [float(r) for r in ref]
    assert ssim(pred, target, variant="gaussian") == float(np.mean(got))


def test_psnr_equals_skimage_exactly():
    pred, target = noisy_pair(seed=5)
    got = psnr_per_image(pred, target)
    ref = [peak_signal_noise_ratio(chw(t), chw(p), data_range=1) for p, t in zip(pred, target)]
    assert got.tolist() == [float(r) for r in ref]
    assert psnr(pred, target) == float(np.mean(got))


def test_input_kinds_agree():
    """uint8 HxWx3 arrays, a list of them, float [0, 1] arrays and (B, 3, H, W) tensors give identical scores."""
    pred, target = noisy_pair(b=2, seed=7)
    ref = ssim_per_image(pred, target)
    as_list = ssim_per_image(list(pred), list(target))
    as_float = ssim_per_image(pred.astype(np.float32) / 255, target.astype(np.float32) / 255)
    as_tensor = ssim_per_image(torch.from_numpy(pred).permute(0, 3, 1, 2).float() / 255,
                               torch.from_numpy(target).permute(0, 3, 1, 2).float() / 255)
    single = ssim_per_image(pred[0], target[0])
    assert ref.tolist() == as_list.tolist() == as_float.tolist() == as_tensor.tolist()
    assert single.tolist() == ref[:1].tolist()


# ---------------------------------------------------------------------------------------------------- closed forms
def test_identical_images():
    _, target = noisy_pair(b=2, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # inf PSNR must come without a divide warning
        p = psnr_per_image(target, target)
        s = ssim_per_image(target, target)
        g = ssim_per_image(target, target, variant="gaussian")
    assert np.isinf(p).all() and (p > 0).all() and psnr(target, target) == math.inf
    np.testing.assert_allclose(s, 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("e", [1 / 16, 1 / 64])
def test_psnr_closed_form_uniform_error(e):
    """|pred - target| = e everywhere -> MSE e^2 -> PSNR = 10 log10(1 / e^2) (values exact in float32)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 33, (2, 3, 64, 64), generator=g).float() / 64          # in [0, 0.5]
    sign = torch.where(torch.rand(target.shape, generator=g) < 0.5, -1.0, 1.0)
    pred = target + e                                                               # + e everywhere
    mixed = (target + 0.25) + sign * e                                              # +- e around a shifted copy
    expected = 10 * math.log10(1 / e ** 2)
    np.testing.assert_allclose(psnr_per_image(pred, target), expected, rtol=1e-12)
    np.testing.assert_allclose(psnr_per_image(mixed, target + 0.25), expected, rtol=1e-12)


def test_gaussian_constant_prediction_without_warning():
    """CFLD's data range is pred.max() - pred.min(): 0 for a constant prediction, so C1 = C2 = 0. Against a textured
    target that scores 0; against a constant target 0/0 = NaN (as in CFLD). Neither warns nor raises."""
    _, target = noisy_pair(b=1, seed=11)
    const = np.full_like(target, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        textured = ssim_per_image(const, target, variant="gaussian")
        flat = ssim_per_image(const, const, variant="gaussian")
    assert textured.tolist() == [0.0]
    assert np.isnan(flat).all()
    assert ssim_per_image(const, const).tolist() == [1.0]                     # the CFLD variant has C1, C2 > 0


# ---------------------------------------------------------------------------------------------------- metric frame
def test_to_metric_frame_matches_cfld_pipeline():
    g = torch.Generator().manual_seed(0)
    out = torch.rand(2, 3, 256, 256, generator=g)
    frame = to_metric_frame(out)
    ref = F.interpolate(out, (256, 176), mode="bicubic", antialias=True)
    ref = (ref.float() * 255.0).clamp(0, 255).to(dtype=torch.uint8).to(torch.float32) / 255.
    assert frame.shape == (2, 3, 256, 176) and frame.dtype == torch.float32
    assert torch.equal(frame, ref)
    assert torch.equal(to_metric_frame(frame), frame)                     # idempotent on a frame
    rounded = to_metric_frame(out, quantize="round")
    assert not torch.equal(rounded, frame) and (rounded - frame).abs().max() <= 1 / 255 + 1e-7
    assert to_metric_frame(out, size=(512, 352), quantize="none").shape[-2:] == (512, 352)


def test_to_metric_frame_uint8_at_size_is_exact():
    a = rgb(2, 256, 176, seed=13)
    frame = to_metric_frame(a)
    assert torch.equal(frame, torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(to_metric_frame(list(a)), frame)


@pytest.mark.parametrize("kwargs, match", [(dict(quantize="ceil"), "quantize"), (dict(size=(256,)), "size"),
                                           (dict(size=(256, 0)), "size")])
def test_to_metric_frame_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_metric_frame(rgb(1, 64, 64), **kwargs)


# ---------------------------------------------------------------------------------------------------- bad input
def test_mismatched_counts_raise():
    pred, target = noisy_pair(b=3)
    with pytest.raises(ValueError, match=r"pred and target: .*3 predictions and 2 targets"):
        ssim(pred, target[:2])
    with pytest.raises(ValueError, match=r"pred and target: .*same number"):
        psnr(pred[:1], target)


def test_mismatched_sizes_raise():
    pred = rgb(1, 96, 72)
    with pytest.raises(ValueError, match=r"pred and target: .*same image size.*to_metric_frame"):
        ssim(pred, rgb(1, 96, 80))
    with pytest.raises(ValueError, match=r"pred: expected \(256, 176\).*to_metric_frame"):
        ssim(pred, pred, size=(256, 176))
    with pytest.raises(ValueError, match=r"pred: .*51x51 window"):
        ssim(rgb(1, 40, 64), rgb(1, 40, 64))
    ssim(rgb(1, 40, 64), rgb(1, 40, 64), variant="gaussian")               # 11x11 window fits


@pytest.mark.parametrize("bad, name", [(np.zeros((64, 64), np.uint8), "pred"), ("nonsense", "pred")])
def test_bad_pred_named(bad, name):
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=name):
        ssim(bad, rgb(1, 64, 64))


def test_bad_target_named():
    with pytest.raises(ValueError, match=r"target: expected values in \[0,1\]"):
        psnr(rgb(1, 64, 64), np.full((64, 64, 3), 2.0))


def test_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        ssim(rgb(1), rgb(1), variant="ms-ssim")


def test_missing_scikit_image_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match=r"rpfm\[eval\]"):
        ssim(rgb(1), rgb(1))
