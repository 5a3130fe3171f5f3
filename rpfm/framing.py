"""Framing a photo (or a pose) into the model's square: ``resize="stretch" | "crop" | "fit"``.

The models see square images (256 x 256 for the paper's). A photo of another shape must be brought to that square,
and the pose must get the same treatment as the photo it came from, or the skeleton no longer lines up with what the
model learned. Three modes:

* ``"stretch"`` (also ``resize=True``): scale each side independently. DeepFashion's 256 x 176 images were stretched
  this way for training (spec §4.5), so it suits photos of that aspect; other aspects distort the person.
* ``"crop"``: a square window around the person, aspect kept: centred on the person's box (from keypoints, or a
  ``box`` you give; the middle of the photo without one), side = the box's longer side plus a ``margin`` on each
  side, at least the photo's shorter side when the person fits in it; moved to stay inside the photo where it can,
  padded where it cannot.
* ``"fit"``: the whole photo, aspect kept, padded to a square (centred).

Padding replicates the photo's edge pixels for photos and is black for rendered poses (their background).
Windows are in pixels of the input, (top, left, side); they may reach outside the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE_MODES = ("stretch", "crop", "fit")
DEFAULT_MARGIN = 0.1   # of the box's longer side, on each side, so hair, hands and feet are not cut


def check_resize(resize: Any, name: str = "resize") -> str | None:
    """False / None -> None (no resizing); True -> "stretch"; a mode name -> itself."""
    if resize is None or resize is False:
        return None
    if resize is True:
        return "stretch"
    if isinstance(resize, str) and resize in RESIZE_MODES:
        return resize
    raise ValueError(f"{name}: expected False, True or one of {list(RESIZE_MODES)}, got {resize!r}. 'crop' keeps the "
                     "aspect around the person, 'fit' pads the whole photo to a square, 'stretch' (= True) squashes.")


@dataclass(frozen=True)
class Window:
    """A square window (top, left, side) in pixels of an image; it may extend past the image (padded there)."""

    top: int
    left: int
    side: int


def square_window(height: int, width: int, mode: str, box: tuple[float, float, float, float] | None = None, *,
                  margin: float = DEFAULT_MARGIN) -> Window:
    """The window ``mode`` ("crop" or "fit") takes from an image of ``height`` x ``width``.

    box: the person's (x1, y1, x2, y2) in pixels, used by "crop" (None: centre of the image).
    """
    if mode == "fit":
        side = max(height, width)
        return Window((height - side) // 2, (width - side) // 2, side)
    if mode != "crop":
        raise ValueError(f"square_window: mode must be 'crop' or 'fit', got {mode!r}.")
    if box is None:
        side = min(height, width)
        return Window((height - side) // 2, (width - side) // 2, side)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box: expected (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box!r}.")
    longest = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    side = int(round(max(longest, min(height, width)))) if longest <= min(height, width) else int(round(longest))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    # Slide inside the image along each axis where the window fits; centre the padding where it does not.
    top = min(max(top, 0), height - side) if side <= height else (height - side) // 2
    left = min(max(left, 0), width - side) if side <= width else (width - side) // 2
    return Window(top, left, side)


def apply_window(images: Tensor, window: Window, *, pad: str = "replicate") -> Tensor:
    """images (B, 3, H, W) -> (B, 3, side, side): the window's pixels, padded outside the image.

    pad: "replicate" (photos) or "zeros" (rendered poses).
    """
    H, W = images.shape[-2:]
    t, l, s = window.top, window.left, window.side
    pads = (max(0, -l), max(0, l + s - W), max(0, -t), max(0, t + s - H))       # left, right, top, bottom
    inner = images[..., max(t, 0):min(t + s, H), max(l, 0):min(l + s, W)]
    if any(pads):
        if pad == "replicate":
            inner = F.pad(inner, pads, mode="replicate")
        else:
            inner = F.pad(inner, pads, mode="constant", value=0.0)
    return inner


def resize_square(images: Tensor, size: tuple[int, int], mode: str, *, box: Any = None, pad: str = "replicate",
                  value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """images (B, 3, H, W) -> (B, 3, *size) with ``mode`` (see the module docstring); bicubic with antialias,
    clamped to ``value_range`` (bicubic overshoots at edges)."""
    if mode in ("crop", "fit"):
        images = apply_window(images, square_window(*images.shape[-2:], mode, box), pad=pad)
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return images.clamp(*value_range)


def keypoints_box(kp: Any) -> tuple[float, float, float, float] | None:
    """The (x1, y1, x2, y2) box of a :class:`~rpfm.pose.Keypoints`' visible joints, or None when there are none."""
    import numpy as np

    xy = np.asarray(kp.xy)[kp.visible_mask()]
    if len(xy) == 0:
        return None
    (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
    return float(x1), float(y1), float(max(x2, x1 + 1)), float(max(y2, y1 + 1))


def frame_keypoints(kp: Any, size: int, mode: str | None, box: Any = None) -> Any:
    """Keypoints in their photo's frame -> the same joints in the model's ``size`` x ``size`` frame, framed like
    the photo would be with ``mode`` ("crop" uses the joints' own box unless ``box`` is given)."""
    if mode in ("crop", "fit"):
        h, w = kp.image_size
        window = square_window(h, w, mode, box if box is not None else keypoints_box(kp))
        kp = kp.crop(window.top, window.left, (window.side, window.side))
    return kp.resize((size, size))


__all__ = ["RESIZE_MODES", "DEFAULT_MARGIN", "Window", "check_resize", "square_window", "apply_window",
           "resize_square", "keypoints_box", "frame_keypoints", "model_pose_image", "estimate_person_box"]


def model_pose_image(kp: Any, size: int, mode: str | None = None) -> Tensor:
    """What the model sees for keypoints ``kp`` (in their photo's frame): the skeleton rendered in the model's
    ``size`` x ``size`` frame after framing the photo with ``mode``; (3, S, S) float32 in [0, 1]."""
    from .pose.render import render_pose_tensor

    return render_pose_tensor(frame_keypoints(kp, size, mode), size)


def estimate_person_box(image: Any, owner: Any = None) -> tuple[float, float, float, float] | None:
    """The person's box in a photo (path, PIL image or (H, W, 3) uint8 array) from the default pose estimator
    (BlazePose, cached on ``owner``), or None when no estimator is installed, the input is not a photo, or nobody
    is found. "crop" then falls back to the middle of the photo."""
    import importlib.util
    import os

    import numpy as np
    from PIL import Image

    if not isinstance(image, (str, os.PathLike, Image.Image, np.ndarray)):
        return None
    if isinstance(image, np.ndarray) and (image.ndim != 3 or image.dtype != np.uint8):
        return None
    if importlib.util.find_spec("mediapipe") is None:
        return None
    from .pose.estimate import default_estimator, load_rgb

    kp = default_estimator(owner)(load_rgb(image, name="source_image"))
    return None if kp is None else keypoints_box(kp)
