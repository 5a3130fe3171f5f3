"""OpenPose COCO-18 keypoints in one image frame, and the coordinate transforms between frames (spec §4.3-4.5).

Conventions, pinned once here:

* 18 joints in OpenPose COCO-18 order (:data:`JOINT_NAMES`). ``xy[k] = (x, y)`` with x = column and y = row, in
  pixels of the frame ``image_size = (H, W)``; the pixel with index (row r, column c) has its centre at (c, r), so a
  joint at integer (x, y) sits on a pixel centre. This is what OpenPose, PIDM, X-MDPT and CFLD write.
* A missing joint is ``(-1, -1)``. If either coordinate of a joint is -1 the joint is missing, and the constructor
  sets both to -1 (X-MDPT and CFLD test ``x == -1 or y == -1``).
* Every transform keeps missing joints at -1 (X-MDPT re-sets them after transforming, spec §4.4). Transforms never
  drop a visible joint that lands outside the frame (X-MDPT does not either): the renderer clips it.
* Coordinates are float64. The upstream pipelines compute in float64 and truncate with ``int()`` when drawing; a
  float32 copy would move a joint by a pixel whenever a coordinate sits within float32 rounding of an integer.
* No left/right relabelling on a flip (X-MDPT flips the rendered image, spec §4.3 step 7): ``hflip`` mirrors
  coordinates only, so ``render(kp.hflip())`` matches the mirrored ``render(kp)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

NUM_JOINTS = 18
JOINT_NAMES = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
               "right_eye", "left_eye", "right_ear", "left_ear")
MISSING = -1.0
MAX_COORDINATE = 1e5  # pixels; anything farther from the frame is a unit or parsing error, not a pose

# The PIDM/X-MDPT pose/*.txt frame (spec §4.4): 256 x 256, the 176-px-wide person image pasted 40 px from the left.
PIDM_FRAME = (256, 256)
PIDM_OFFSET = 40
PIDM_WIDTH = 176
DEEPFASHION_SIZE = (256, 176)  # the CFLD/GFLA annotation frame (H, W)


def _parse_size(size: Any, name: str) -> tuple[int, int]:
    if (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"{name}: expected an (H, W) pair of positive ints, got {size!r}. Pass e.g. (256, 176).")


@dataclass(frozen=True, eq=False)
class Keypoints:
    """18 OpenPose COCO-18 joints of one person in one frame.

    Attributes:
        xy: (18, 2) float64, read-only; (x = column, y = row) in pixels; (-1, -1) for a missing joint.
        image_size: (H, W) of the frame the coordinates live in.
    """

    xy: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        size = _parse_size(self.image_size, "Keypoints.image_size")
        if isinstance(self.xy, (str, bytes)) or not hasattr(self.xy, "__len__"):
            raise TypeError(f"Keypoints.xy: expected an (18, 2) array of (x, y), got {type(self.xy).__name__}.")
        try:
            xy = np.array(self.xy, dtype=np.float64)
        except ValueError as e:
            lens = sorted({len(r) for r in self.xy if hasattr(r, "__len__")})
            raise ValueError(f"Keypoints.xy: expected 18 rows of two numbers (x, y), could not convert ({e}; row "
                             f"lengths {lens}). Give every joint exactly two numbers; write (-1, -1) for a missing "
                             "one.") from None
        except TypeError as e:
            raise TypeError(f"Keypoints.xy: expected an (18, 2) array of numbers, could not convert it ({e}).") \
                from None
        if xy.shape != (NUM_JOINTS, 2):
            hint = ""
            if xy.ndim == 2 and xy.shape[1] == 2 and xy.shape[0] == 25:
                hint = " This looks like OpenPose BODY_25: read it with rpfm.pose.formats.read_openpose_json."
            elif xy.ndim == 2 and xy.shape[1] == 2 and xy.shape[0] in (17, 33):
                hint = (f" {xy.shape[0]} joints looks like COCO-17/BlazePose: map it to OpenPose COCO-18 (the neck "
                        "is the shoulder midpoint) first.")
            raise ValueError(f"Keypoints.xy: expected shape (18, 2) (OpenPose COCO-18 joints, (x, y) each), got "
                             f"{xy.shape}, i.e. {xy.shape[0] if xy.ndim else 0} joints.{hint}")
        if not np.isfinite(xy).all():
            bad = [JOINT_NAMES[k] for k in np.flatnonzero(~np.isfinite(xy).all(1))]
            raise ValueError(f"Keypoints.xy: joints {bad} have NaN/inf coordinates. Mark a missing joint with "
                             "(-1, -1) instead.")
        xy[(xy == MISSING).any(1)] = MISSING
        far = np.abs(xy).max(1) > MAX_COORDINATE
        if far.any():
            bad = [JOINT_NAMES[k] for k in np.flatnonzero(far)]
            raise ValueError(f"Keypoints.xy: joints {bad} have coordinates beyond +-{MAX_COORDINATE:g} pixels (e.g. "
                             f"{xy[far][0].tolist()}) for a {size[0]}x{size[1]} frame. Keypoints are pixel positions "
                             "(x = column, y = row); mark a missing joint with (-1, -1).")
        xy.flags.writeable = False
        object.__setattr__(self, "xy", xy)
        object.__setattr__(self, "image_size", size)

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_yx(cls, y: Any, x: Any, image_size: tuple[int, int]) -> Keypoints:
        """From separate row and column lists of 18 (the CFLD annotation order: y first)."""
        y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
        if y.shape != (NUM_JOINTS,) or x.shape != (NUM_JOINTS,):
            raise ValueError(f"Keypoints.from_yx: expected 18 y and 18 x values, got {y.size} and {x.size}.")
        return cls(np.stack([x, y], axis=1), image_size)

    @classmethod
    def all_missing(cls, image_size: tuple[int, int]) -> Keypoints:
        return cls(np.full((NUM_JOINTS, 2), MISSING), image_size)

    # ------------------------------------------------------------------------------------------ queries
    @property
    def height(self) -> int:
        return self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size[1]

    def missing_mask(self) -> np.ndarray:
        """(18,) bool: True where the joint is missing."""
        return (self.xy == MISSING).any(1)

    def visible_mask(self) -> np.ndarray:
        """(18,) bool: True where the joint is present."""
        return ~self.missing_mask()

    def inside_mask(self) -> np.ndarray:
        """(18,) bool: present and on a pixel of the frame (0 <= x <= W-1, 0 <= y <= H-1)."""
        x, y = self.xy[:, 0], self.xy[:, 1]
        return self.visible_mask() & (x >= 0) & (x <= self.width - 1) & (y >= 0) & (y <= self.height - 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keypoints):
            return NotImplemented
        return self.image_size == other.image_size and np.array_equal(self.xy, other.xy)

    __hash__ = None  # mutable-array payload: equal objects need not hash alike, so do not hash at all

    def __repr__(self) -> str:
        return f"Keypoints(image_size={self.image_size}, visible={int(self.visible_mask().sum())}/18)"

    # ------------------------------------------------------------------------------------------ transforms
    def _with(self, xy: np.ndarray, image_size: tuple[int, int]) -> Keypoints:
        xy = np.array(xy, dtype=np.float64)
        xy[self.missing_mask()] = MISSING  # re-set missing joints after the arithmetic (spec §4.4)
        return Keypoints(xy, image_size)

    def resize(self, new_size: tuple[int, int]) -> Keypoints:
        """Scale to the frame ``new_size = (H', W')``: x' = x * (W'/W), y' = y * (H'/H).

        Corner-aligned scaling without a half-pixel shift, computed in this order, as CFLD's
        ``draw_pose_from_cords`` and X-MDPT do (so int() truncation downstream matches theirs).
        """
        new_size = _parse_size(new_size, "resize(new_size)")
        xy = self.xy * np.array([new_size[1] / self.width, new_size[0] / self.height])
        return self._with(xy, new_size)

    def crop(self, top: int, left: int, size: tuple[int, int]) -> Keypoints:
        """Crop the window with top-left pixel (top, left) and size (h, w): x' = x - left, y' = y - top.

        Joints outside the window stay (with coordinates outside the new frame), as in X-MDPT's crop augmentation.
        """
        size = _parse_size(size, "crop(size)")
        return self._with(self.xy - np.array([left, top], dtype=np.float64), size)

    def hflip(self) -> Keypoints:
        """Mirror horizontally: x' = W - 1 - x (pixel c maps to pixel W-1-c, like ``image[:, ::-1]``).

        No left/right relabelling (X-MDPT flips the rendered skeleton image, spec §4.3 step 7).
        """
        xy = self.xy.copy()
        xy[:, 0] = self.width - 1 - xy[:, 0]
        return self._with(xy, self.image_size)

    def stretch_176_to_256(self) -> Keypoints:
        """The DeepFashion 256 x 176 -> 256 x 256 anisotropic stretch (spec §4.5): x' = x * 256/176, y' = y.

        Works for any frame with aspect 176:256 (e.g. 512 x 352 -> 512 x 512).
        """
        h, w = self.image_size
        if w * DEEPFASHION_SIZE[0] != h * DEEPFASHION_SIZE[1]:
            raise ValueError(f"stretch_176_to_256: expects a frame with aspect W:H = 176:256 (e.g. (256, 176)), got "
                             f"image_size={self.image_size}. Use resize((H, W)) for other frames.")
        return self.resize((h, h))

    def pidm_to_image(self, image_size: tuple[int, int] = (256, 256), *,
                      scale_size: tuple[int, int] | None = None, crop: tuple[int, int] = (0, 0)) -> Keypoints:
        """PIDM/X-MDPT ``pose/*.txt`` frame -> the stretched image frame (spec §4.4), X-MDPT arithmetic verbatim.

        x' = (x - 40) * (W / 176) - left, y' = y * (H / 256) - top, with the scale computed as X-MDPT's
        ``trans_keypoins`` does (``1.0/176.0 * W``, then ``/ W * new_w`` when an up-scale ``scale_size`` is given)
        so that int() truncation in the renderer agrees with X-MDPT pixel for pixel.

        Args:
            image_size: (H, W) of the image the skeleton is rendered for (256 x 256 or 512 x 512 in X-MDPT).
            scale_size: (H', W') of the up-scaled image before the crop (training augmentation), or None.
            crop: (top, left) of the crop window in the up-scaled image; the result's frame is ``image_size``.
        """
        if self.image_size != PIDM_FRAME:
            raise ValueError(f"pidm_to_image: expects keypoints in the PIDM pose/*.txt frame {PIDM_FRAME} (as read by "
                             f"read_pidm_txt), got image_size={self.image_size}.")
        img_h, img_w = _parse_size(image_size, "pidm_to_image(image_size)")
        scale_w = 1.0 / float(PIDM_WIDTH) * img_w
        scale_h = 1.0 / float(PIDM_FRAME[0]) * img_h
        if scale_size is not None:
            new_h, new_w = _parse_size(scale_size, "pidm_to_image(scale_size)")
            scale_w = scale_w / img_w * new_w
            scale_h = scale_h / img_h * new_h
        top, left = crop
        xy = self.xy.copy()
        xy[:, 0] = (xy[:, 0] - PIDM_OFFSET) * scale_w - left
        xy[:, 1] = xy[:, 1] * scale_h - top
        return self._with(xy, (img_h, img_w))

    def image_to_pidm(self) -> Keypoints:
        """Inverse of ``pidm_to_image()`` without augmentation: stretched image frame -> PIDM 256 x 256 frame."""
        h, w = self.image_size
        xy = self.xy.copy()
        xy[:, 0] = xy[:, 0] * (PIDM_WIDTH / w) + PIDM_OFFSET
        xy[:, 1] = xy[:, 1] * (PIDM_FRAME[0] / h)
        return self._with(xy, PIDM_FRAME)

    # ------------------------------------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        """``{"image_size": [H, W], "keypoints": [[x, y], ...]}`` (the plain-JSON format)."""
        return {"image_size": list(self.image_size), "keypoints": self.xy.tolist()}

    @classmethod
    def from_dict(cls, d: Any, *, name: str = "keypoints") -> Keypoints:
        if not isinstance(d, dict) or "keypoints" not in d or "image_size" not in d:
            raise ValueError(f"{name}: expected a dict {{'image_size': [H, W], 'keypoints': [[x, y], ... 18 ...]}}, "
                             f"got {type(d).__name__}"
                             + (f" with keys {sorted(d)}" if isinstance(d, dict) else "") + ".")
        return cls(d["keypoints"], tuple(d["image_size"]))
