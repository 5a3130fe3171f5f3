"""Render OpenPose COCO-18 keypoints as the RGB skeleton image the model is conditioned on (spec §4.3).

``style="xmdpt"`` (the default, RPFM's choice) reproduces X-MDPT's ``get_label_tensor`` (= PIDM's RGB part):

1. uint8 zero canvas H x W x 3;
2. joints first: a filled radius-4 circle (``cv2.circle(.., (int(x), int(y)), 4, colour_k, -1)``) for every joint
   with x != -1 and y != -1;
3. then the first 17 of the 19 limbs (the shoulder-ear links are skipped, as is a limb with a missing end): the
   polygon ``cv2.ellipse2Poly((int(mean x), int(mean y)), (int(length/2), 4), int(deg(atan2(drow, dcol))), 0,
   360, 1)`` filled with ``cv2.fillConvexPoly`` on a copy, blended as canvas <- 0.4 canvas + 0.6 copy
   (``cv2.addWeighted``, rounded to uint8);
4. colours are drawn as if the canvas were BGR and the canvas is then converted BGR -> RGB, so the stored image has
   R and B swapped relative to the OpenPose colour list;
5. float32 /255, then divided by the image max (an all-missing skeleton returns zeros instead of 0/0).

OpenCV is not required: the three raster primitives (``ellipse2Poly``, ``fillConvexPoly`` with its 8-connected
outline, filled ``circle``) are re-implemented below from OpenCV 4.x ``imgproc/src/drawing.cpp`` with the same
integer arithmetic (16.16 fixed-point scanlines, Bresenham outline with clipping, the 1-degree float sine table
and round-half-to-even vertex rounding), and the 0.4/0.6 blend is done in integers as round((2a + 3b) / 5), which
is exact because (2a + 3b) / 5 is never halfway between integers. ``tests/test_render.py`` compares the result with
OpenCV pixel for pixel whenever ``cv2`` is importable.

``style="pidm"`` is the same canvas without the max-normalisation (/255 only; PIDM's 17 distance channels are not
produced). ``style="cfld"`` approximates CFLD's ``draw_pose_from_cords``: 17 bones as 2-px anti-aliased lines in
the darker 153-scale colours, then radius-3 anti-aliased joints in the joint colours, no BGR swap, /255. OpenCV's
LINE_AA rasteriser is not reproduced; the shapes are drawn with PIL at 4x supersampling and box-filtered down, so
edge pixels differ (mean absolute difference 0.3-0.8/255 per channel over a 256 x 256 skeleton, up to ~100/255 on
single edge pixels, against cv2 4.14); the geometry, colours, draw order and the int() truncation of the
coordinates are CFLD's.
"""
from __future__ import annotations

import math

import numpy as np

from .keypoints import MISSING, Keypoints

# OpenPose colours, listed order (spec §4.3 step 4); joint k and X-MDPT limb k use colour k.
JOINT_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
                (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
                (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
# The 19 OpenPose limbs, 1-based as in X-MDPT/PIDM; only the first 17 are drawn (spec §4.3 step 3).
LIMBS_1BASED = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
                (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
DRAWN_LIMBS = tuple((a - 1, b - 1) for a, b in LIMBS_1BASED[:17])
JOINT_RADIUS = 4
STICK_WIDTH = 4
# CFLD pose_utils: 0-based bones (the same 17 limbs) and their 153-scale colours.
CFLD_BONE_COLORS = ((153, 0, 0), (153, 51, 0), (153, 102, 0), (153, 153, 0), (102, 153, 0), (51, 153, 0),
                    (0, 153, 0), (0, 153, 51), (0, 153, 102), (0, 153, 153), (0, 102, 153), (0, 51, 153),
                    (0, 0, 153), (51, 0, 153), (102, 0, 153), (153, 0, 153), (153, 0, 102))
CFLD_BONE_THICKNESS = 2  # cv2.line(.., thickness=2, LINE_AA)
CFLD_JOINT_RADIUS = 3  # cv2.circle(.., radius=3, -1, LINE_AA)
# OpenCV's anti-aliasing adds about half a pixel of coverage around each shape, so the supersampled stand-ins are
# drawn larger (widths fitted against cv2 4.14 on random skeletons: minimal mean absolute difference).
_CFLD_LINE_WIDTH = CFLD_BONE_THICKNESS + 1.25
_CFLD_DOT_RADIUS = CFLD_JOINT_RADIUS + 0.5
STYLES = ("xmdpt", "pidm", "cfld")
_SUPERSAMPLE = 4


# ================================================================================================= public API
def render_pose(kp: Keypoints, size: tuple[int, int] | None = None, style: str = "xmdpt") -> np.ndarray:
    """Keypoints -> the skeleton image, float32 (H, W, 3) in [0, 1] (RGB, channels last).

    Args:
        kp: the keypoints; their frame must be the output frame, or pass ``size``.
        size: output (H, W); when it differs from ``kp.image_size`` the keypoints are first scaled with
            ``kp.resize(size)`` (CFLD renders its 256 x 176 annotations at 256 x 256 this way). None: kp's frame.
        style: "xmdpt" (max-normalised, RPFM's input), "pidm" (same, /255 only) or "cfld" (see module docstring).
    """
    canvas = draw_skeleton(kp, size, style)
    img = canvas.astype(np.float32) / np.float32(255.0)
    if style == "xmdpt":
        peak = img.max()
        if peak > 0:  # an all-missing skeleton is all zeros: X-MDPT would divide 0 by 0 here
            img /= peak
    return img


def draw_skeleton(kp: Keypoints, size: tuple[int, int] | None = None, style: str = "xmdpt") -> np.ndarray:
    """Keypoints -> uint8 (H, W, 3) RGB skeleton before any normalisation (save it as a PNG to look at it)."""
    if not isinstance(kp, Keypoints):
        raise TypeError(f"kp: expected rpfm.pose.Keypoints, got {type(kp).__name__}. Build one with "
                        "Keypoints(xy, image_size) or a reader from rpfm.pose.formats.")
    if style not in STYLES:
        raise ValueError(f"style: expected one of {STYLES}, got {style!r}.")
    if size is not None and tuple(size) != kp.image_size:
        kp = kp.resize(tuple(size))
    h, w = kp.image_size
    if style == "cfld":
        return _draw_cfld(kp.xy, h, w)
    return _draw_xmdpt(kp.xy, h, w)


# ================================================================================================= styles
def _draw_xmdpt(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    canvas = np.zeros((h, w, 3), np.uint8)
    for k in range(len(xy)):
        x, y = xy[k]
        if x == MISSING or y == MISSING:
            continue
        fill_circle(canvas, (int(x), int(y)), JOINT_RADIUS, JOINT_COLORS[k][::-1])  # [::-1]: the BGR->RGB swap
    for i, (a, b) in enumerate(DRAWN_LIMBS):
        cols, rows = xy[[a, b], 0], xy[[a, b], 1]
        if MISSING in cols or MISSING in rows:
            continue
        m_row, m_col = np.mean(rows), np.mean(cols)
        length = ((rows[0] - rows[1]) ** 2 + (cols[0] - cols[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(rows[0] - rows[1], cols[0] - cols[1]))
        poly = ellipse2poly((int(m_col), int(m_row)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        mask = fill_convex_poly_mask(poly, (h, w))
        r0, r1 = max(int(poly[:, 1].min()), 0), min(int(poly[:, 1].max()) + 1, h)  # rows the limb can touch
        band, mask = canvas[r0:r1], mask[r0:r1]
        color = np.array(JOINT_COLORS[i][::-1], np.int32)
        # cv2.addWeighted(canvas, 0.4, canvas_with_limb, 0.6, 0): unchanged outside the limb, round((2a+3c)/5) in it
        band[mask] = (2 * band[mask].astype(np.int32) + 3 * color + 2) // 5
    return canvas


def _draw_cfld(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    s = _SUPERSAMPLE
    img = Image.new("RGB", (w * s, h * s))
    draw = ImageDraw.Draw(img)
    present = [not (x == MISSING or y == MISSING) for x, y in xy]
    # CFLD truncates the scaled coordinates with int(); pixel (c, r) has its centre at ((c + .5) s, (r + .5) s).
    pts = [((int(x) + 0.5) * s, (int(y) + 0.5) * s) for x, y in xy]
    half = _CFLD_LINE_WIDTH * s / 2
    for i, (a, b) in enumerate(DRAWN_LIMBS):
        if not (present[a] and present[b]):
            continue
        color = CFLD_BONE_COLORS[i]
        draw.line([pts[a], pts[b]], fill=color, width=round(_CFLD_LINE_WIDTH * s))
        for cx, cy in (pts[a], pts[b]):  # cv2 thick lines have round caps
            draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=color)
    r = _CFLD_DOT_RADIUS * s
    for k, (cx, cy) in enumerate(pts):
        if present[k]:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=JOINT_COLORS[k])
    return np.asarray(img.resize((w, h), Image.Resampling.BOX))


# ================================================================================================= OpenCV raster
# OpenCV's 1-degree sine table: float32 constants printed with 7 decimals (drawing.cpp SinTable, 451 entries).
_SIN_TABLE = np.round(np.sin(np.deg2rad(np.arange(451))), 7).astype(np.float32).astype(np.float64)
_XY_SHIFT = 16
_XY_HALF = 1 << (_XY_SHIFT - 1)


def ellipse2poly(center: tuple[int, int], axes: tuple[int, int], angle: int, arc_start: int, arc_end: int,
                 delta: int) -> np.ndarray:
    """``cv2.ellipse2Poly``: the integer polygon (N, 2) int32 of (x, y) approximating an elliptic arc.

    ``center`` = (x, y) and ``axes`` = (half-width, half-height) in pixels, ``angle`` in degrees; vertices every
    ``delta`` degrees, rounded half-to-even (cvRound) with consecutive duplicates removed.
    """
    if not 0 < delta <= 180:
        raise ValueError(f"ellipse2poly: delta must be in (0, 180], got {delta}.")
    while angle < 0:
        angle += 360
    while angle > 360:
        angle -= 360
    if arc_start > arc_end:
        arc_start, arc_end = arc_end, arc_start
    while arc_start < 0:
        arc_start, arc_end = arc_start + 360, arc_end + 360
    while arc_end > 360:
        arc_start, arc_end = arc_start - 360, arc_end - 360
    if arc_end - arc_start > 360:
        arc_start, arc_end = 0, 360
    alpha, beta = _SIN_TABLE[450 - angle], _SIN_TABLE[angle]  # cos, sin (float32 table values, used as doubles)
    a = np.arange(arc_start, arc_end + delta, delta)
    a = np.minimum(a, arc_end)
    a = np.where(a < 0, a + 360, a)
    x = axes[0] * _SIN_TABLE[450 - a]
    y = axes[1] * _SIN_TABLE[a]
    px = np.rint(center[0] + x * alpha - y * beta)  # np.rint rounds half to even, like cvRound
    py = np.rint(center[1] + x * beta + y * alpha)
    pts = np.stack([px, py], 1).astype(np.int64)
    keep = np.ones(len(pts), bool)
    keep[1:] = (pts[1:] != pts[:-1]).any(1)
    pts = pts[keep]
    if len(pts) == 1:
        pts = np.array([center, center], np.int64)
    return pts.astype(np.int32)


def fill_convex_poly_mask(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.fillConvexPoly(img, pts, 1)`` (LINE_8, shift 0) as a bool (H, W) mask; pts: (N, 2) int (x, y)."""
    h, w = size
    mask = np.zeros((h, w), bool)
    v = [tuple(p) for p in np.asarray(pts, np.int64).reshape(-1, 2).tolist()]
    n = len(v)
    if n == 0:
        return mask
    _draw_outline(mask, v)
    xs = [p[0] for p in v]
    ys = [p[1] for p in v]
    ymin, ymax = min(ys), max(ys)
    imin = ys.index(ymin)
    if n < 3 or max(xs) < 0 or ymax < 0 or min(xs) >= w or ymin >= h:
        return mask
    ymax = min(ymax, h - 1)
    # Two edge walkers from the top vertex, one each way round the polygon; x in 16.16 fixed point.
    idx_, di_, x_, dx_, ye_ = [imin, imin], [1, n - 1], [-(1 << _XY_SHIFT)] * 2, [0, 0], [ymin, ymin]
    edges = n
    y = ymin
    while True:
        for i in (0, 1):
            if y >= ye_[i]:
                idx0, di = idx_[i], di_[i]
                idx = idx0 + di
                if idx >= n:
                    idx -= n
                while True:  # for (; edges-- > 0; )
                    go = edges > 0
                    edges -= 1
                    if not go:
                        break
                    ty = v[idx][1]
                    if ty > y:
                        xs_, xe_ = v[idx0][0] << _XY_SHIFT, v[idx][0] << _XY_SHIFT
                        num, den = (xe_ - xs_) * 2 + (ty - y), 2 * (ty - y)
                        ye_[i] = ty
                        dx_[i] = num // den if num >= 0 else -((-num) // den)  # C division truncates toward 0
                        x_[i] = xs_
                        idx_[i] = idx
                        break
                    idx0 = idx
                    idx += di
                    if idx >= n:
                        idx -= n
        if edges < 0:
            break
        if y >= 0:
            left, right = (1, 0) if x_[0] > x_[1] else (0, 1)
            xx1 = (x_[left] + _XY_HALF) >> _XY_SHIFT
            xx2 = (x_[right] + _XY_HALF) >> _XY_SHIFT
            if xx2 >= 0 and xx1 < w:
                mask[y, max(xx1, 0):min(xx2, w - 1) + 1] = True
        x_[0] += dx_[0]
        x_[1] += dx_[1]
        y += 1
        if y > ymax:
            break
    return mask


def _draw_outline(mask: np.ndarray, v: list[tuple[int, int]]) -> None:
    """The 8-connected outline FillConvexPoly draws first: Line(v[i-1], v[i]) for every edge, closing edge first."""
    h, w = mask.shape
    arr = np.asarray(v, np.int64)
    inside = (arr[:, 0] >= 0) & (arr[:, 0] < w) & (arr[:, 1] >= 0) & (arr[:, 1] < h)
    mask[arr[inside, 1], arr[inside, 0]] = True  # every in-image vertex is an unclipped endpoint of a Line
    prev = np.roll(arr, 1, axis=0)
    prev_inside = np.roll(inside, 1)
    long_or_clipped = (np.abs(arr - prev).max(1) > 1) | ~inside | ~prev_inside
    for k in np.flatnonzero(long_or_clipped):
        for x, y in line_points(tuple(prev[k]), tuple(arr[k]), (h, w)):
            mask[y, x] = True


def line_points(p1: tuple[int, int], p2: tuple[int, int], size: tuple[int, int]) -> list[tuple[int, int]]:
    """Pixels (x, y) of ``cv2.line(.., p1, p2, .., thickness=1, LINE_8)``: OpenCV's LineIterator, clipped."""
    h, w = size
    x1, y1 = int(p1[0]), int(p1[1])
    x2, y2 = int(p2[0]), int(p2[1])
    if not (0 <= x1 < w and 0 <= x2 < w and 0 <= y1 < h and 0 <= y2 < h):
        ok, x1, y1, x2, y2 = _clip_line(w, h, x1, y1, x2, y2)
        if not ok:
            return []
    dx, dy = x2 - x1, y2 - y1
    if dx < 0:  # leftToRight: always walk from the left end
        dx, dy, x1, y1 = -dx, -dy, x2, y2
    sy = 1
    if dy < 0:
        dy, sy = -dy, -1
    vert = dy > dx
    if vert:
        dx, dy = dy, dx
    err = dx - 2 * dy
    x, y, out = x1, y1, []
    for _ in range(dx + 1):
        out.append((x, y))
        minor = err < 0
        err += -2 * dy + (2 * dx if minor else 0)
        if vert:
            y += sy
            x += 1 if minor else 0
        else:
            x += 1
            y += sy if minor else 0
    return out


def _clip_line(w: int, h: int, x1: int, y1: int, x2: int, y2: int) -> tuple[bool, int, int, int, int]:
    """OpenCV's integer ``clipLine`` to [0, w-1] x [0, h-1] (double arithmetic truncated toward zero)."""
    right, bottom = w - 1, h - 1
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2, c2 = a, 0
    return (c1 | c2) == 0, x1, y1, x2, y2


def fill_circle(canvas: np.ndarray, center: tuple[int, int], radius: int, color: tuple[int, ...]) -> None:
    """``cv2.circle(canvas, center, radius, color, thickness=-1)`` (LINE_8): OpenCV's midpoint-circle spans, in place.

    canvas: (H, W, C) or (H, W); center (x, y) ints; pixels outside the canvas are clipped.
    """
    h, w = canvas.shape[:2]
    cx, cy = center
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        # rows cy -+ dy span x +- dx; rows cy -+ dx span x +- dy
        for row, half in ((cy - dy, dx), (cy + dy, dx), (cy - dx, dy), (cy + dx, dy)):
            if 0 <= row < h:
                lo, hi = max(cx - half, 0), min(cx + half, w - 1)
                if lo <= hi:
                    canvas[row, lo:hi + 1] = color
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2


MODEL_RENDER_SIZE = 256
"""The frame the X-MDPT skeleton is drawn in (its radius-4 joints and width-4 limbs were designed for 256 x 256)."""


def render_pose_tensor(kp: Keypoints, image_size: int) -> "torch.Tensor":
    """The model's pose input for ``kp``: (3, S, S) float32 in [0, 1].

    Drawn with :func:`render_pose` in a 256 x 256 frame, then area-reduced (or bilinearly enlarged) to S and
    max-normalised again, so a small model sees the same drawing, only smaller.
    """
    import torch
    import torch.nn.functional as F

    pose = render_pose(kp.resize((MODEL_RENDER_SIZE, MODEL_RENDER_SIZE)))
    p = torch.from_numpy(np.ascontiguousarray(pose)).permute(2, 0, 1)[None]        # (1, 3, 256, 256)
    if image_size != MODEL_RENDER_SIZE:
        p = F.interpolate(p, size=(image_size, image_size),
                          mode="area" if image_size < MODEL_RENDER_SIZE else "bilinear")
        peak = p.amax()
        p = p / peak if peak > 0 else p
    return p[0].clamp(0, 1)
