"""Region metrics (rpfm.metrics.regions): background speckle and person PSNR on images whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from rpfm.metrics.regions import background_mask, background_noise, far_margin, person_mask, person_psnr

BACKDROP = np.array([240, 240, 238]) / 255


def _scene(n: int = 3, size: int = 32) -> np.ndarray:
    """(n, size, size, 3): the synthetic set's backdrop with a two-colour 'person' box (a flat shirt, a stripe)."""
    t = np.broadcast_to(BACKDROP, (n, size, size, 3)).copy()
    t[:, 8:26, 12:20] = [0.2, 0.3, 0.7]
    t[:, 14, 12:20] = [0.9, 0.1, 0.1]
    return t


def test_masks_find_the_backdrop_and_the_person():
    t = _scene()
    person = person_mask(t)
    assert person[:, 8:26, 12:20].all() and person.sum() == 3 * 18 * 8          # exactly the box
    flat = background_mask(t)
    assert not flat[:, 6:10, 10:22].any()                    # within 2 px of the box's top edge: not flat
    assert not flat[:, 12:17, 12:20].any()                   # within 2 px of the stripe: not flat
    assert flat[:, :5].all() and flat[:, :, :9].all()        # far from it: flat
    assert flat[:, 10:12, 14:18].all()                       # the shirt's flat inside counts as flat too


def test_background_noise_measures_speckle_not_offsets():
    t = _scene(n=2, size=64)
    rng = np.random.default_rng(0)
    noisy = t + rng.normal(0, 6 / 255, t.shape)              # sigma 6/255 everywhere
    got = background_noise(noisy, t)
    assert got == pytest.approx([6, 6], rel=0.05)
    assert background_noise(t + 0.1, t) == pytest.approx([0, 0], abs=1e-9)          # a colour offset: not noise
    assert background_noise(t, t) == pytest.approx([0, 0], abs=1e-12)


def test_far_background_noise_ignores_a_misplaced_silhouette_but_not_speckle():
    t = _scene(n=1, size=64)
    shifted = np.broadcast_to(BACKDROP, t.shape).copy()
    shifted[:, 8:26, 15:23] = t[:, 8:26, 12:20]             # the person drawn 3 px to the right: a shape error
    assert background_noise(shifted, t)[0] > 5               # the plain number counts the edge error
    assert background_noise(shifted, t, margin=4) == pytest.approx([0], abs=1e-12)
    rng = np.random.default_rng(1)
    speckled = shifted + rng.normal(0, 5 / 255, t.shape)     # speckle everywhere is still seen far away
    assert background_noise(speckled, t, margin=4) == pytest.approx([5], rel=0.1)
    # the margin grows the person mask: pixels 4 px away still count, 3 px away do not
    probe = t.copy()
    probe[:, 20, 12 - 4] += 0.5                              # level with the box (rows 8-25)
    assert background_noise(probe, t, margin=4)[0] > 0
    probe = t.copy()
    probe[:, 20, 12 - 3] += 0.5
    assert background_noise(probe, t, margin=4) == pytest.approx([0], abs=1e-12)
    assert (far_margin(64), far_margin(128), far_margin(256), far_margin(8)) == (4, 8, 16, 1)


def test_person_psnr_is_the_psnr_over_the_box_only():
    t = _scene(n=1)
    pred = t.copy()
    pred[:, 8:26, 12:20] += 0.1                              # error 0.1 on the person: PSNR 20 dB
    pred[:, :4] += 0.3                                       # large background error: ignored here
    assert person_psnr(pred, t) == pytest.approx([20.0], abs=1e-9)
    assert np.isinf(person_psnr(t, t)).all()


def test_empty_regions_give_nan_and_bad_shapes_are_named():
    blank = np.broadcast_to(BACKDROP, (1, 16, 16, 3)).copy()
    assert np.isnan(person_psnr(blank, blank)).all()
    with pytest.raises(ValueError, match=r"pred, target: expected two \(B, H, W, 3\)"):
        background_noise(np.zeros((2, 3, 16, 16)), np.zeros((2, 3, 16, 16)))
