"""The pose-estimator interface every backend implements, the COCO-17 -> OpenPose-18 mapping and photo loading.

The backends (:mod:`rpfm.pose.blazepose`, :mod:`rpfm.pose.onnx_pose`) import from here; :mod:`rpfm.pose.estimate`
loads them, so no module imports its importer.
"""
from __future__ import annotations

import importlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .keypoints import JOINT_NAMES, MISSING, NUM_JOINTS, Keypoints

INSTALL_HINT = 'pip install "rpfm[pose]"'
BACKENDS = ("blazepose", "onnx")
POSE_FROM = ("auto", "image", "keypoints", "photo")

COCO17_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                "right_knee", "left_ankle", "right_ankle")
# The COCO-17 index of each OpenPose-18 joint (by name; None for the neck, which COCO does not have).
COCO17_TO_OPENPOSE18 = tuple(None if n == "neck" else COCO17_NAMES.index(n) for n in JOINT_NAMES)
NECK = JOINT_NAMES.index("neck")
_SHOULDERS = (COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder"))


@dataclass(frozen=True, eq=False)
class PoseDetection:
    """One detected person.

    Attributes:
        keypoints: OpenPose COCO-18 joints in the pixel frame of the image the estimator was given.
        scores: (18,) float64 confidences in the backend's own scale (BlazePose visibility in [0, 1]; the SimCC or
            heatmap maximum for ONNX models); 0 for a missing joint. The neck's is the smaller shoulder score.
    """

    keypoints: Keypoints
    scores: np.ndarray


def coco17_to_openpose18(xy: np.ndarray, scores: np.ndarray, image_size: tuple[int, int],
                         min_confidence: float) -> PoseDetection:
    """COCO-17 joints -> OpenPose COCO-18 (names matched; neck = shoulder midpoint).

    Args:
        xy: (17, 2) (x = column, y = row) in pixels of the frame ``image_size = (H, W)``; pixel (r, c) has its
            centre at (c, r).
        scores: (17,) confidences. A joint is kept when its score is >= ``min_confidence``, its coordinates are
            finite and it lies on the image (-0.5 <= x <= W - 0.5, -0.5 <= y <= H - 0.5: on some pixel).
        min_confidence: the threshold.
    """
    xy = np.asarray(xy, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if xy.shape != (17, 2) or scores.shape != (17,):
        raise ValueError(f"coco17_to_openpose18: expected xy (17, 2) and scores (17,), got {xy.shape} and "
                         f"{scores.shape}.")
    h, w = image_size
    finite = np.isfinite(xy).all(1) & np.isfinite(scores)
    safe = np.where(finite[:, None], xy, -1e9)
    on_image = ((safe[:, 0] >= -0.5) & (safe[:, 0] <= w - 0.5) & (safe[:, 1] >= -0.5) & (safe[:, 1] <= h - 0.5))
    keep = finite & on_image & (np.where(finite, scores, -np.inf) >= min_confidence)
    out = np.full((NUM_JOINTS, 2), MISSING)
    out_scores = np.zeros(NUM_JOINTS)
    for k, c in enumerate(COCO17_TO_OPENPOSE18):
        if c is not None and keep[c]:
            out[k], out_scores[k] = xy[c], scores[c]
    a, b = _SHOULDERS
    if keep[a] and keep[b]:
        out[NECK] = (xy[a] + xy[b]) / 2
        out_scores[NECK] = min(scores[a], scores[b])
    return PoseDetection(Keypoints(out, image_size), out_scores)


def load_rgb(image: Any, name: str = "image") -> np.ndarray:
    """A photo as an (H, W, 3) uint8 RGB array (C-contiguous).

    Accepts a path (str or os.PathLike; any format PIL reads), a PIL image (any mode; alpha dropped), or a numpy
    array: (H, W, 3) or (H, W, 4) or (H, W) of uint8, or of floats in [0, 1].
    """
    from PIL import Image

    from ..imagefile import read_rgb, to_rgb

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such file '{path}'" + (" (it is a folder)" if path.is_dir() else "")
                                    + ". Check the path.")
        return np.ascontiguousarray(np.asarray(read_rgb(path, name)))
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(np.asarray(to_rgb(image, name=name)))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"{name}: expected an (H, W, 3) RGB array (channels last), got shape {image.shape}. "
                             "Transpose a (3, H, W) array with arr.transpose(1, 2, 0).")
        arr = arr[..., :3]
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr)
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"{name}: a float array must hold values in [0, 1], got range "
                                 f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]. Pass uint8 0-255 or divide by 255.")
            return np.ascontiguousarray(np.round(arr * 255).astype(np.uint8))
        raise TypeError(f"{name}: expected a uint8 or float array, got dtype {arr.dtype}.")
    raise TypeError(f"{name}: expected a photo as a path, a PIL image or an (H, W, 3) uint8 numpy array, got "
                    f"{type(image).__name__}." + (" Convert a tensor with (t.permute(1, 2, 0) * 255).byte().numpy()."
                                                  if type(image).__module__.startswith("torch") else ""))


class PoseEstimator(ABC):
    """Single-person 2-D pose estimator: photo in, OpenPose COCO-18 keypoints in that photo's pixel frame out.

    Subclasses implement :meth:`detect`; ``__call__`` and :meth:`estimate_many` are built on it. An estimator may
    hold native resources (a MediaPipe graph, an onnxruntime session): :meth:`close` them, or use ``with``.
    """

    name: str = "estimator"
    min_confidence: float = 0.5

    @abstractmethod
    def detect(self, image: Any) -> PoseDetection | None:
        """The most prominent person in ``image`` (see :func:`load_rgb` for accepted types), or None if none."""

    def __call__(self, image: Any) -> Keypoints | None:
        """Keypoints of the person in ``image`` (its pixel frame, missing joints -1), or None when nobody is found."""
        det = self.detect(image)
        return None if det is None else det.keypoints

    def detect_many(self, frames: Iterable[Any]) -> list[PoseDetection | None]:
        """:meth:`detect` on each frame in order (backends with a video mode track the person across frames)."""
        return [self.detect(f) for f in frames]

    def estimate_many(self, frames: Iterable[Any]) -> list[Keypoints | None]:
        """``__call__`` on each frame in order; a video-mode backend treats ``frames`` as one sequence."""
        return [None if d is None else d.keypoints for d in self.detect_many(frames)]

    def close(self) -> None:
        """Release native resources (idempotent)."""

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_min_confidence(value: Any, name: str = "min_confidence") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number (a joint with a lower confidence is missing), got "
                         f"{value!r}.")
    return float(value)


def import_optional(module: str, backend: str, package: str) -> Any:
    """Import ``module`` for ``backend`` or raise ImportError naming the package and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"pose backend {backend!r} needs the package '{package}', which is not installed or "
                          f"cannot be imported ({e}). Install the pose extra: {INSTALL_HINT} (or run install.sh)."
                          ) from e
