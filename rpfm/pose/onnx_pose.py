"""Top-down ONNX pose models (RTMPose / DWPose SimCC, or plain heatmaps) as a
:class:`~rpfm.pose.estimate.PoseEstimator`. rpfm ships no weights: pass the ``.onnx`` file (e.g. an
rtmlib/mmdeploy export of RTMPose or DWPose) and a person box.

Pipeline (RTMPose's, as rtmlib implements it):

1. **Box** ``(x1, y1, x2, y2)`` in pixels: a user box, the whole image, or BlazePose's landmarks' extent
   (``box="auto"``: BlazePose when mediapipe is installed, else the whole image).
2. **Affine crop**: centre c = box centre, size s = box size x ``padding`` (1.25), widened or heightened to the
   model's aspect w/h; the crop maps x -> (x - c) * (w / s_w) + w / 2 (same for y), sampled bilinearly with zero
   outside the image (``cv2.warpAffine(.., INTER_LINEAR)`` with the ``get_warp_matrix`` of mmpose/rtmlib, pixel
   centres on integers), rounded to uint8.
3. **Normalise** RGB with mmpose's ImageNet mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375);
   NCHW float32, batch 1.
4. **Decode**. SimCC (two outputs (1, K, W*r) and (1, K, H*r)): x = argmax_x / r, y = argmax_y / r with split ratio
   r (2.0 for RTMPose/DWPose; inferred from the shapes); confidence = min of the two maxima (rtmlib; or their
   mean with ``score="mean"``). Heatmaps (one output (1, K, h, w)): the argmax cell moved a quarter cell toward
   the higher neighbour (mmpose's classic refinement), times the stride (W/w, H/h); confidence = the maximum.
5. **Back to the image**: x_img = (x - w / 2) * (s_w / w) + c_x (the inverse of step 2).
6. **COCO-17 -> OpenPose-18**: the first 17 of K joints are the COCO body joints for K = 17 (COCO), 26 (Halpe)
   and 133 (COCO-WholeBody, DWPose); see :func:`~rpfm.pose.estimate.coco17_to_openpose18`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .estimator import PoseDetection, PoseEstimator, check_min_confidence, coco17_to_openpose18, import_optional, \
    load_rgb

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
PADDING = 1.25
KNOWN_NUM_KEYPOINTS = {17: "COCO", 26: "Halpe", 133: "COCO-WholeBody (DWPose)"}
SCORES = ("min", "mean")
BOXES = ("auto", "image", "blazepose")
DEFAULT_MIN_CONFIDENCE = 0.3  # rtmlib/DWPose's keypoint threshold for the OpenPose drawing


# ---------------------------------------------------------------------------------------------- geometry
def box_to_center_scale(box: tuple[float, float, float, float], input_size: tuple[int, int],
                        padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """(x1, y1, x2, y2) -> centre (cx, cy) and size (s_w, s_h) of the crop: the box times ``padding``, enlarged to
    the aspect of ``input_size = (H, W)`` (rtmlib's ``bbox_xyxy2cs`` + ``_fix_aspect_ratio``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    sw, sh = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = input_size[1] / input_size[0]
    if sw > sh * aspect:
        sh = sw / aspect
    else:
        sw = sh * aspect
    return center, np.array([sw, sh])


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The 2 x 3 affine matrix image -> crop (pixel centres on integers), as mmpose's ``get_warp_matrix`` with no
    rotation: x' = k (x - c_x) + W/2, y' = k (y - c_y) + H/2, k = W / s_w."""
    h, w = input_size
    k = w / scale[0]
    return np.array([[k, 0.0, w / 2 - k * center[0]], [0.0, k, h / 2 - k * center[1]]])


def warp_affine(rgb: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine(rgb, matrix, (W, H), flags=INTER_LINEAR, borderValue=0)`` in numpy: (H, W, 3) uint8.

    Each output pixel (x', y') samples the source bilinearly at matrix^-1 (x', y'); neighbours outside the source
    count as 0. (OpenCV quantises the sample position to 1/32 px, so it can differ by a grey level or two.)
    """
    h, w = out_size
    a = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    src = rgb.astype(np.float64)
    sh, sw = rgb.shape[:2]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        ok = (xx >= 0) & (xx < sw) & (yy >= 0) & (yy < sh)
        v = src[np.clip(yy, 0, sh - 1), np.clip(xx, 0, sw - 1)]
        return v * ok[..., None]

    out = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
           + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- decoding
def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float,
                 score: str = "min") -> tuple[np.ndarray, np.ndarray]:
    """(K, Wx), (K, Hy) SimCC logits -> (K, 2) (x, y) in model-input pixels and (K,) confidences (rtmlib's
    ``get_simcc_maximum``: first argmax per axis / split ratio; confidence min (or mean) of the two maxima)."""
    ix, iy = simcc_x.argmax(1), simcc_y.argmax(1)
    mx, my = simcc_x.max(1), simcc_y.max(1)
    xy = np.stack([ix, iy], axis=1).astype(np.float64) / split_ratio
    conf = np.minimum(mx, my) if score == "min" else (mx + my) / 2
    return xy, conf.astype(np.float64)


def decode_heatmaps(heatmaps: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, h, w) heatmaps -> (K, 2) (x, y) in model-input pixels and (K,) maxima: argmax, a quarter cell toward
    the larger neighbour (when both neighbours exist), times the stride (W / w, H / h)."""
    k, h, w = heatmaps.shape
    flat = heatmaps.reshape(k, -1)
    idx = flat.argmax(1)
    conf = flat.max(1).astype(np.float64)
    ys, xs = np.divmod(idx, w)
    xy = np.stack([xs, ys], axis=1).astype(np.float64)
    for j in range(k):
        x, y, hm = xs[j], ys[j], heatmaps[j]
        if 0 < x < w - 1:
            xy[j, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
        if 0 < y < h - 1:
            xy[j, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
    xy *= np.array([input_size[1] / w, input_size[0] / h])
    return xy, conf


# ---------------------------------------------------------------------------------------------- the estimator
@dataclass(frozen=True)
class OnnxPoseConfig:
    """box: "auto" | "image" | "blazepose" | (x1, y1, x2, y2) in pixels. min_confidence: joints scoring lower are
    missing. padding: box enlargement (1.25). score: "min" or "mean" of the SimCC maxima. split_ratio: SimCC bins
    per pixel (None: inferred). input_size: (H, W) for a model with a dynamic input shape. mean/std: per RGB
    channel, 0-255 scale."""

    box: Any = "auto"
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    padding: float = PADDING
    score: str = "min"
    split_ratio: float | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    def __post_init__(self) -> None:
        check_min_confidence(self.min_confidence)
        _check_box(self.box, "box")
        if isinstance(self.padding, bool) or not isinstance(self.padding, (int, float)) or not self.padding > 0:
            raise ValueError(f"padding: expected a positive number (RTMPose uses 1.25), got {self.padding!r}.")
        if self.score not in SCORES:
            raise ValueError(f"score: expected one of {list(SCORES)}, got {self.score!r}.")
        if self.split_ratio is not None and not (isinstance(self.split_ratio, (int, float))
                                                 and not isinstance(self.split_ratio, bool) and self.split_ratio > 0):
            raise ValueError(f"split_ratio: expected a positive number (2.0 for RTMPose) or None, got "
                             f"{self.split_ratio!r}.")
        if self.input_size is not None and not (isinstance(self.input_size, (tuple, list)) and len(self.input_size) == 2
                                                and all(isinstance(v, int) and v > 0 for v in self.input_size)):
            raise ValueError(f"input_size: expected (H, W) positive ints, e.g. (256, 192), got {self.input_size!r}.")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or (name == "std" and min(v) <= 0):
                raise ValueError(f"{name}: expected three numbers (R, G, B){' > 0' if name == 'std' else ''}, "
                                 f"got {v!r}.")


def _check_box(box: Any, name: str) -> None:
    if isinstance(box, str):
        if box not in BOXES:
            raise ValueError(f"{name}: expected one of {list(BOXES)} or (x1, y1, x2, y2) pixels, got {box!r}.")
        return
    try:
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals) or vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise ValueError(f"{name}: expected {list(BOXES)} or a box (x1, y1, x2, y2) in pixels with x2 > x1 and "
                         f"y2 > y1, got {box!r}.")


def _static_dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


class OnnxPoseEstimator(PoseEstimator):
    """A top-down ONNX pose model (SimCC or heatmap output) run with onnxruntime; see the module docstring.

    Args:
        model: path to the ``.onnx`` file.
        providers: onnxruntime execution providers (default: CPU).
        **kwargs: :class:`OnnxPoseConfig` fields (``box``, ``min_confidence``, ``score``, ...).

    Raises ImportError naming ``pip install "rpfm[pose]"`` without onnxruntime; FileNotFoundError for a missing
    model; ValueError for a model whose input or outputs do not have a supported layout.
    """

    name = "onnx"

    def __init__(self, model: str | os.PathLike, *, providers: list[str] | None = None, **kwargs: Any):
        self.config = OnnxPoseConfig(**kwargs)
        self.min_confidence = self.config.min_confidence
        ort = import_optional("onnxruntime", "onnx", "onnxruntime")
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model: no ONNX file at '{path}'. Pass the path of an RTMPose/DWPose (SimCC) or "
                                    "heatmap top-down pose model exported to ONNX.")
        self.model_path = path
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts,
                                                 providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ValueError(f"model: onnxruntime cannot load '{path}' ({type(e).__name__}: {e}).") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(float)":
            desc = [(i.name, i.shape, i.type) for i in inputs]
            raise ValueError(f"model: expected one float32 image input (N, 3, H, W), got {desc}. rpfm runs top-down "
                             "RTMPose/DWPose-style models.")
        self._input_name = inputs[0].name
        n, c, h, w = (_static_dim(d) for d in inputs[0].shape)
        if c not in (None, 3):
            raise ValueError(f"model: input '{inputs[0].name}' has {c} channels, expected 3 (RGB).")
        if self.config.input_size is not None:
            size = tuple(self.config.input_size)
            if (h and h != size[0]) or (w and w != size[1]):
                raise ValueError(f"input_size: {size} contradicts the model's input (H, W) = ({h}, {w}).")
        elif h and w:
            size = (h, w)
        else:
            raise ValueError(f"model: input '{inputs[0].name}' has a dynamic shape {inputs[0].shape}; pass "
                             "input_size=(H, W) (e.g. (256, 192) for RTMPose body models).")
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._blazepose = None

    # -------------------------------------------------------------------------------------------- box
    def _resolve_box(self, rgb: np.ndarray, box: Any) -> tuple[float, float, float, float] | None:
        h, w = rgb.shape[:2]
        if box == "auto":
            box = "blazepose" if _has_mediapipe() else "image"
        if box == "image":
            return (0.0, 0.0, float(w - 1), float(h - 1))
        if box == "blazepose":
            if self._blazepose is None:
                from .blazepose import BlazePoseEstimator

                self._blazepose = BlazePoseEstimator()
            return self._blazepose.person_box(rgb)
        return tuple(float(v) for v in box)

    # -------------------------------------------------------------------------------------------- inference
    def preprocess(self, rgb: np.ndarray, box: tuple[float, float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> the (1, 3, H, W) float32 model input, the crop centre and the crop size (s_w, s_h)."""
        center, scale = box_to_center_scale(box, self.input_size, self.config.padding)
        crop = warp_affine(rgb, crop_matrix(center, scale, self.input_size), self.input_size)
        x = (crop.astype(np.float32) - np.float32(self.config.mean)) / np.float32(self.config.std)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), center, scale

    def _decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.input_size
        shapes = {n: tuple(o.shape) for n, o in zip(self._output_names, outputs)}
        expected = (f"expected SimCC outputs (1, K, W*r) and (1, K, H*r) (RTMPose/DWPose, r = 2) or one heatmap "
                    f"output (1, K, h, w), with K in {sorted(KNOWN_NUM_KEYPOINTS)} (COCO, Halpe, COCO-WholeBody) and "
                    f"input (H, W) = {self.input_size}")
        if len(outputs) == 2 and all(o.ndim == 3 and o.shape[0] == 1 for o in outputs):
            ox, oy = outputs
            names = [n.lower() for n in self._output_names]
            if "y" in names[0] and "x" in names[1] and "x" not in names[0]:
                ox, oy = oy, ox                                     # outputs named (simcc_y, simcc_x)
            rx, ry = ox.shape[2] / w, oy.shape[2] / h
            ratio = self.config.split_ratio or rx
            if ox.shape[1] != oy.shape[1] or not (math.isclose(rx, ratio) and math.isclose(ry, ratio)):
                raise ValueError(f"model: outputs {shapes} do not match {expected}"
                                 + (f" (split_ratio={ratio})" if self.config.split_ratio else "") + ".")
            self._check_k(ox.shape[1], shapes, expected)
            return decode_simcc(ox[0], oy[0], ratio, self.config.score)
        if len(outputs) >= 1 and outputs[0].ndim == 4 and outputs[0].shape[0] == 1:
            self._check_k(outputs[0].shape[1], shapes, expected)
            return decode_heatmaps(outputs[0][0], self.input_size)
        raise ValueError(f"model: outputs {shapes} do not match {expected}.")

    @staticmethod
    def _check_k(k: int, shapes: dict, expected: str) -> None:
        if k not in KNOWN_NUM_KEYPOINTS:
            raise ValueError(f"model: outputs {shapes} have {k} keypoints; {expected}.")

    def detect(self, image: Any, box: Any = None) -> PoseDetection | None:
        """``box`` overrides the configured box for this call. None when no box is found (BlazePose finds nobody)
        or no body joint reaches ``min_confidence``."""
        rgb = load_rgb(image)
        if box is not None:
            _check_box(box, "box")
        b = self._resolve_box(rgb, self.config.box if box is None else box)
        if b is None:
            return None
        x, center, scale = self.preprocess(rgb, b)
        outputs = self._session.run(None, {self._input_name: x})
        xy, conf = self._decode([np.asarray(o) for o in outputs])
        h, w = self.input_size
        xy = (xy - np.array([w / 2, h / 2])) * (scale / np.array([w, h])) + center   # crop -> image pixels
        det = coco17_to_openpose18(xy[:17], conf[:17], rgb.shape[:2], self.min_confidence)
        return det if det.keypoints.visible_mask().any() else None

    def close(self) -> None:
        if self._blazepose is not None:
            self._blazepose.close()
            self._blazepose = None


def _has_mediapipe() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("mediapipe") is not None
    except (ImportError, ValueError):
        return False
