"""What the web demo accepts: photos, keypoint files and videos, checked before any model work.

Every refusal is an :class:`UploadError` (a ValueError) whose message is shown in the page as it is, so each says
what was wrong with which input and what to upload instead. The limits are plain constants here; the upload size
limit itself is enforced by the web server (``MAX_UPLOAD_MB``) before a file reaches these functions.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..imagefile import to_rgb

MAX_UPLOAD_MB = 50          # any single upload (the web server refuses larger files)
MAX_IMAGE_PIXELS = 40e6     # decoded photo size: 40 megapixels (a 7,700 x 5,200 photo); checked from the header
MAX_VIDEO_SIDE = 4096       # driving video frames at most 4096 px on their longer side
MAX_VIDEO_FRAMES = 300      # at most this many driving frames are used (the rest are ignored, and the page says so)
KEYPOINT_EXTENSIONS = (".json", ".npy", ".txt")


class UploadError(ValueError):
    """An input the demo cannot use; the message is meant for the page."""


def _path(upload: Any, what: str) -> Path:
    if upload is None or upload == "":
        raise UploadError(f"{what}: nothing uploaded. Upload a file first.")
    path = Path(upload)
    if not path.is_file():
        raise UploadError(f"{what}: the uploaded file is gone ('{path.name}'). Upload it again.")
    return path


def open_photo(upload: Any, what: str = "photo", *, max_pixels: float = MAX_IMAGE_PIXELS) -> Image.Image:
    """An uploaded photo (a path, or a PIL image / (H, W, 3) uint8 array from the page) -> RGB PIL image.

    The pixel count is checked from the file header before anything is decoded, so a decompression bomb costs
    nothing; a file PIL cannot read, or one that is truncated, is refused with the reason.
    """
    if isinstance(upload, Image.Image):
        image = upload
    elif isinstance(upload, np.ndarray):
        if upload.ndim != 3 or upload.shape[2] not in (3, 4) or upload.dtype != np.uint8:
            raise UploadError(f"{what}: expected an RGB picture, got an array of shape {upload.shape}.")
        image = Image.fromarray(upload[..., :3])
    else:
        path = _path(upload, what)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our own limit applies below
                with Image.open(path) as opened:
                    w, h = opened.size
                    if w * h > max_pixels:
                        raise UploadError(f"{what}: the image is {w} x {h} pixels ({w * h / 1e6:.0f} megapixels); "
                                          f"the limit is {max_pixels / 1e6:.0f} megapixels. Upload a smaller "
                                          "photo.")
                    image = to_rgb(opened, name=what)   # 8-bit RGB (16-bit PNGs keep their brightness)
                    image.load()                        # decodes the pixels: truncated files fail here
        except UploadError:
            raise
        except Image.DecompressionBombError as e:   # PIL's own guard, far beyond our limit
            raise UploadError(f"{what}: '{path.name}' is far too large ({e}); the limit is "
                              f"{max_pixels / 1e6:.0f} megapixels. Upload a smaller photo.") from None
        except UnidentifiedImageError:
            raise UploadError(f"{what}: '{path.name}' is not an image (PNG, JPEG, WebP, ...). Upload a photo."
                              ) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise UploadError(f"{what}: '{path.name}' could not be read as an image ({e}). The file may be "
                              "damaged; upload another photo.") from None
    if image.width * image.height > max_pixels:
        raise UploadError(f"{what}: the image is {image.width} x {image.height} pixels; the limit is "
                          f"{max_pixels / 1e6:.0f} megapixels. Upload a smaller photo.")
    return image.convert("RGB")


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Pad a photo to a square (centred, with the mean colour of its border) and resize it to ``size`` x ``size``:
    the model's square frame without stretching the person."""
    w, h = image.size
    side = max(w, h)
    if (w, h) != (side, side):
        arr = np.asarray(image)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        canvas = Image.new("RGB", (side, side), tuple(int(c) for c in border.mean(0).round()))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    return image if side == size else image.resize((size, size), Image.LANCZOS)


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of a camera frame (H, W, 3): the live tab's view of the person."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(frame[top:top + side, left:left + side, :3])


def load_pose_file(upload: Any, size: int, what: str = "keypoint file"):
    """One keypoint file (OpenPose JSON, rpfm JSON, ``.npy``, PIDM ``.txt``) -> Keypoints in the model's frame.

    Formats that record no frame (OpenPose JSON, ``.npy``) are taken as pixels of the model's ``size`` x ``size``
    frame, as ``rpfm generate`` does.
    """
    from ..pose.formats import load_keypoints

    path = _path(upload, what)
    if path.suffix.lower() not in KEYPOINT_EXTENSIONS:
        raise UploadError(f"{what}: '{path.name}' is not a keypoint file. Upload OpenPose or rpfm JSON, .npy or "
                          "PIDM .txt (see `rpfm pose --help`).")
    try:
        kp = load_keypoints(path, None if path.suffix.lower() == ".txt" else (size, size))
    except (ValueError, TypeError, KeyError) as e:
        raise UploadError(f"{what}: '{path.name}' does not hold keypoints ({e}).") from None
    if not kp.visible_mask().any():
        raise UploadError(f"{what}: '{path.name}' has no visible joint.")
    return kp.resize((size, size)) if kp.image_size != (size, size) else kp


def check_video(upload: Any, what: str = "driving video") -> tuple[Path, float]:
    """A readable video with frames of a sane size -> (path, frames per second). Decodes the first frame."""
    from ..video import iter_frames, video_fps

    path = _path(upload, what)
    try:
        first = next(iter_frames(path, max_frames=1, name=what))
        fps = video_fps(path, name=what)
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UploadError(str(e).replace(str(path), path.name)) from None
    h, w = first.shape[:2]
    if max(h, w) > MAX_VIDEO_SIDE:
        raise UploadError(f"{what}: frames are {w} x {h} pixels; the limit is {MAX_VIDEO_SIDE} on the longer side. "
                          "Upload a smaller video.")
    return path, fps


def as_path_list(uploads: Any) -> list[Path]:
    """Gradio hands multiple-file uploads as a list of paths (or None): normalise to a list of Paths."""
    if uploads is None:
        return []
    items = uploads if isinstance(uploads, (list, tuple)) else [uploads]
    return [Path(getattr(u, "name", u)) for u in items if u]


__all__ = ["UploadError", "open_photo", "fit_square", "centre_square", "load_pose_file", "check_video",
           "as_path_list", "MAX_UPLOAD_MB", "MAX_IMAGE_PIXELS", "MAX_VIDEO_SIDE", "MAX_VIDEO_FRAMES"]
