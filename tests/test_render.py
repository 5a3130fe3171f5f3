"""The skeleton renderer (spec §4.3): hand-checked pixels without OpenCV, and pixel-exact parity with an OpenCV
reference (X-MDPT's ``get_label_tensor`` drawing code) whenever ``cv2`` is importable."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rpfm.pose import JOINT_COLORS, Keypoints, draw_skeleton, render_pose
from rpfm.pose.render import (CFLD_BONE_COLORS, DRAWN_LIMBS, ellipse2poly, fill_circle, fill_convex_poly_mask,
                              line_points)


def _only(size, **joints) -> Keypoints:
    xy = np.full((18, 2), -1.0)
    for k, v in joints.items():
        xy[int(k[1:])] = v
    return Keypoints(xy, size)


# ---------------------------------------------------------------------------------------------- hand-checked
def test_joint_centre_has_swapped_colour_and_radius4_disc():
    img = render_pose(_only((64, 64), j0=(20, 30)))  # nose, colour (255, 0, 0) drawn as BGR -> stored (0, 0, 255)
    assert img.dtype == np.float32 and img.shape == (64, 64, 3)
    assert img[30, 20].tolist() == [0.0, 0.0, 1.0]
    disc = img.max(2) > 0
    # OpenCV's radius-4 midpoint circle: rows of half-width 0, 2, 3, 3, 4, 3, 3, 2, 0 around the centre
    assert [int(disc[30 + d].sum()) for d in range(-4, 5)] == [1, 5, 7, 7, 9, 7, 7, 5, 1]
    assert disc.sum() == 49 and (img[~disc] == 0).all()


def test_limb_midpoint_colour_and_background():
    # right shoulder (2) and right elbow (3): limb (3, 4) 1-based = DRAWN_LIMBS[2], colour (255, 170, 0)
    img = render_pose(_only((128, 96), j2=(40, 20), j3=(40, 100)))
    assert DRAWN_LIMBS[2] == (2, 3)
    # blended 0.6 * (255, 170, 0) = (153, 102, 0) in BGR -> RGB (0, 102, 153); the max is the joints' 255
    np.testing.assert_array_equal(img[60, 40], np.array([0, 102, 153], np.float32) / np.float32(255))
    np.testing.assert_array_equal(img[60, 40 + 4], img[60, 40])  # half-width 4 (stickwidth)
    assert img[60, 40 + 6].tolist() == [0, 0, 0] and img[60, 40 - 6].tolist() == [0, 0, 0]
    # the elbow disc (255, 255, 0) -> (0, 255, 255) under the limb tip: 0.4 * (0, 255, 255) + 0.6 * (0, 170, 255)
    np.testing.assert_array_equal(img[100, 40], np.array([0, 204, 255], np.float32) / np.float32(255))
    assert img.max() == 1.0
    assert (img[:, 60:] == 0).all() and (img[110:] == 0).all()  # far background is exactly 0


def test_shoulder_ear_links_are_not_drawn():
    # limbs 18 and 19 (shoulder-ear) are skipped: only the two joint discs appear
    img = draw_skeleton(_only((64, 64), j2=(10, 40), j16=(50, 10)))
    assert (img.max(2) > 0).sum() == 2 * 49


def test_all_missing_is_zero_not_nan():
    img = render_pose(Keypoints.all_missing((32, 32)))
    assert img.shape == (32, 32, 3) and not np.isnan(img).any() and (img == 0).all()


def test_styles_size_and_flip():
    kp = _only((64, 44), j1=(22, 10), j2=(12, 12), j8=(15, 40))
    canvas = draw_skeleton(kp)
    np.testing.assert_array_equal(render_pose(kp, style="pidm"), canvas.astype(np.float32) / np.float32(255))
    assert render_pose(kp, size=(64, 64)).shape == (64, 64, 3)
    np.testing.assert_array_equal(draw_skeleton(kp, (64, 64)), draw_skeleton(kp.resize((64, 64))))
    joints = _only((32, 32), j0=(3, 4), j5=(20, 28), j9=(31, 0))  # discs are mirror-symmetric
    np.testing.assert_array_equal(render_pose(joints.hflip()), render_pose(joints)[:, ::-1])
    with pytest.raises(ValueError, match="style"):
        render_pose(kp, style="openpose")
    with pytest.raises(TypeError, match="Keypoints"):
        render_pose(np.zeros((18, 2)))


def test_cfld_style_colours():
    # CFLD: neck -> right shoulder is bone 0 in the 153-scale colour (153, 0, 0), no BGR swap, /255, no max-norm
    img = render_pose(_only((64, 64), j1=(10, 32), j2=(50, 32)), style="cfld")
    assert img[32, 30].tolist() == pytest.approx([153 / 255, 0, 0], abs=1e-6)
    assert img[32, 10].tolist() == pytest.approx([1.0, 85 / 255, 0.0], abs=1e-6)  # neck joint colour, unswapped
    assert img.max() <= 1 and (img[:20] == 0).all()


def test_cv2_free_primitives_hand_checked():
    assert ellipse2poly((10, 10), (0, 0), 0, 0, 360, 1).tolist() == [[10, 10], [10, 10]]  # degenerate: 2 points
    assert line_points((0, 0), (3, 1), (8, 8)) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert line_points((-5, 2), (-1, 2), (8, 8)) == []  # fully outside
    m = fill_convex_poly_mask(np.array([[1, 1], [5, 1], [5, 4], [1, 4]]), (8, 8))
    assert m.sum() == 20 and m[1:5, 1:6].all()
    c = np.zeros((5, 5), np.uint8)
    fill_circle(c, (0, 0), 1, 7)  # clipped at the corner
    assert c.tolist()[:2] == [[7, 7, 0, 0, 0], [7, 0, 0, 0, 0]]


# ---------------------------------------------------------------------------------------------- OpenCV parity
_LIMB_SEQ = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13], [13, 14],
             [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]


def _xmdpt_reference(cv2, keypoint: np.ndarray, h: int, w: int) -> np.ndarray:
    """X-MDPT's get_label_tensor drawing code (masked_diffusion/my_dataset.py), then ToTensor and /max."""
    colors = [list(c) for c in JOINT_COLORS]
    canvas = np.zeros((h, w, 3), np.uint8)
    for i in range(18):
        x, y = keypoint[i, 0:2]
        if x == -1 or y == -1:
            continue
        cv2.circle(canvas, (int(x), int(y)), 4, colors[i], thickness=-1)
    for i in range(17):
        Y = keypoint[np.array(_LIMB_SEQ[i]) - 1, 0]
        X = keypoint[np.array(_LIMB_SEQ[i]) - 1, 1]
        cur_canvas = canvas.copy()
        if -1 in Y or -1 in X:
            continue
        mX, mY = np.mean(X), np.mean(Y)
        length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
        polygon = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), 4), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(cur_canvas, polygon, colors[i])
        canvas = cv2.addWeighted(canvas, 0.4, cur_canvas, 0.6, 0)
    pose = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255)
    return pose / pose.max() if pose.max() > 0 else pose


def test_xmdpt_renderer_matches_opencv_exactly():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    sizes = [(256, 256), (64, 64), (128, 128), (512, 512), (256, 176)]
    for t in range(150):
        h, w = sizes[t % len(sizes)]
        xy = np.stack([rng.uniform(-20, w + 20, 18), rng.uniform(-20, h + 20, 18)], 1)  # some off-frame
        if t % 3 == 0:
            xy = np.round(xy)
        xy[rng.random(18) < 0.2] = -1
        kp = Keypoints(xy, (h, w))
        np.testing.assert_array_equal(render_pose(kp), _xmdpt_reference(cv2, kp.xy.copy(), h, w), err_msg=f"{t}")


def test_raster_primitives_match_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for _ in range(500):
        c = (int(rng.integers(-40, 300)), int(rng.integers(-40, 300)))
        axes, angle = (int(rng.integers(0, 200)), int(rng.integers(0, 10))), int(rng.integers(-180, 181))
        poly = cv2.ellipse2Poly(c, axes, angle, 0, 360, 1)
        np.testing.assert_array_equal(ellipse2poly(c, axes, angle, 0, 360, 1), poly)
        h, w = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        ref = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(ref, poly, 1)
        np.testing.assert_array_equal(fill_convex_poly_mask(poly, (h, w)), ref > 0)
        p1, p2 = tuple(int(v) for v in rng.integers(-30, 60, 2)), tuple(int(v) for v in rng.integers(-30, 60, 2))
        ref = np.zeros((32, 40), np.uint8)
        cv2.line(ref, p1, p2, 1, 1, cv2.LINE_8)
        mine = np.zeros((32, 40), np.uint8)
        for x, y in line_points(p1, p2, (32, 40)):
            mine[y, x] = 1
        np.testing.assert_array_equal(mine, ref)
        center, r = (int(rng.integers(-8, 48)), int(rng.integers(-8, 48))), int(rng.integers(0, 12))
        ref, mine = np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8)
        cv2.circle(ref, center, r, 1, -1)
        fill_circle(mine, center, r, 1)
        np.testing.assert_array_equal(mine, ref)


def test_cfld_style_close_to_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(2)
    diffs = []
    for _ in range(6):
        y, x = rng.integers(10, 246, 18), rng.integers(10, 166, 18)
        kp = Keypoints.from_yx(y, x, (256, 176))
        ref = np.zeros((256, 256, 3), np.uint8)  # CFLD pose_utils.draw_pose_from_cords, img (256, 256) from (256, 176)
        sx = 256 / 176
        for i, (f, t) in enumerate(DRAWN_LIMBS):
            cv2.line(ref, (int(x[f] * sx), int(y[f])), (int(x[t] * sx), int(y[t])), CFLD_BONE_COLORS[i], 2,
                     cv2.LINE_AA)
        for k in range(18):
            cv2.circle(ref, (int(x[k] * sx), int(y[k])), 3, JOINT_COLORS[k], -1, cv2.LINE_AA)
        mine = draw_skeleton(kp, (256, 256), style="cfld")
        diffs.append(np.abs(mine.astype(int) - ref.astype(int)).mean())
    assert max(diffs) < 1.0, diffs  # measured 0.6-0.8 (of 255) per channel: an approximation, see render.py
