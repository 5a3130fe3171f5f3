"""Video files: read frames (and the frame rate) with PyAV, write H.264 MP4 (PyAV) or GIF (PIL), atomically.

Install with ``pip install 'rpfm[video]'`` (PyAV bundles FFmpeg with libx264; nothing system-wide is needed).

* :func:`read_video` / :func:`iter_frames` decode the first video stream to RGB uint8 ``(H, W, 3)`` arrays;
  :func:`video_fps` gives its average frame rate. A missing file raises FileNotFoundError; a file FFmpeg cannot
  read, or one without video frames, raises ValueError naming the file.
* :func:`write_video` picks the format from the extension: ``.mp4`` (libx264, yuv420p, so every player opens it;
  odd widths/heights are padded to even by repeating the last row/column) or ``.gif`` (PIL, palette per frame,
  looping forever; GIF delays are whole hundredths of a second, so e.g. 30 fps plays at 1/0.03 s = 33.3 fps).
  The file is written under a temporary name in the same folder and renamed into place, so a crash never leaves
  a half-written video at ``path``. The folder must exist.

Frames may be PIL images, uint8 arrays ``(H, W, 3)``, or float arrays/tensors in [0, 1] (``(H, W, 3)``, or a
``(3, H, W)`` tensor); all frames of one video must have the same size.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif")
WRITE_EXTENSIONS = (".mp4", ".gif")
DEFAULT_CRF = 18  # x264 constant-rate factor: 18 is visually near-lossless


def require_av():
    """Import PyAV, or raise with the install hint."""
    try:
        import av
    except ImportError:
        raise ImportError("video: reading and writing MP4 needs PyAV. Install it with `pip install av` (or "
                          "`pip install 'rpfm[video]'`).") from None
    return av


@dataclass
class Video:
    """Decoded frames: ``frames`` is a list of RGB uint8 (H, W, 3) arrays, ``fps`` the average frame rate."""

    frames: list[np.ndarray]
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return self.frames[0].shape[:2]


def _need_video_file(path: str | os.PathLike, name: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such file '{path}'. Check the path.")
    if path.is_dir():
        raise ValueError(f"{name}: '{path}' is a folder, expected a video file ({', '.join(VIDEO_EXTENSIONS)}).")
    return path


def _open_input(path: Path, name: str):
    av = require_av()
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"{name}: '{path}' is not a readable video ({e}). Pass an MP4/MOV/AVI/MKV/WebM/GIF "
                         "file.") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{name}: '{path}' has no video stream.")
    return container


def video_fps(path: str | os.PathLike, *, name: str = "video") -> float:
    """Average frame rate of the first video stream (30.0 when the file does not record one)."""
    path = _need_video_file(path, name)
    container = _open_input(path, name)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else 30.0
    finally:
        container.close()


def iter_frames(path: str | os.PathLike, *, max_frames: int | None = None,
                name: str = "video") -> Iterator[np.ndarray]:
    """Decode the first video stream frame by frame -> RGB uint8 (H, W, 3) arrays (at most ``max_frames``).

    Raises ValueError when the file cannot be decoded or holds no frame at all.
    """
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                   or max_frames < 1):
        raise ValueError(f"max_frames: expected an int >= 1 or None, got {max_frames!r}.")
    path = _need_video_file(path, name)
    container = _open_input(path, name)   # errors for a missing/unreadable file surface here, not at next()
    return _decode(container, path, max_frames, name)


def _decode(container, path: Path, max_frames: int | None, name: str) -> Iterator[np.ndarray]:
    av = require_av()
    count = 0
    try:
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
        except av.error.FFmpegError as e:
            raise ValueError(f"{name}: '{path}' could not be decoded after {count} frames ({e}).") from None
    finally:
        container.close()
    if count == 0:
        raise ValueError(f"{name}: '{path}' contains no video frames (empty or truncated file).")


def read_video(path: str | os.PathLike, *, max_frames: int | None = None, name: str = "video") -> Video:
    """All frames (up to ``max_frames``) and the frame rate of a video file. Holds every frame in memory: for long
    or large videos use :func:`iter_frames`."""
    frames = list(iter_frames(path, max_frames=max_frames, name=name))
    return Video(frames=frames, fps=video_fps(path, name=name))


# ---------------------------------------------------------------------------------------------------- writing
def to_uint8_frame(frame: Any, name: str = "frame") -> np.ndarray:
    """A PIL image, uint8 (H, W, 3) array, float (H, W, 3) array in [0, 1] or (3, H, W) tensor -> uint8 RGB."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    try:
        import torch

        if isinstance(frame, torch.Tensor):
            frame = frame.detach().cpu()
            if frame.ndim == 3 and frame.shape[0] == 3:
                frame = frame.permute(1, 2, 0)
            frame = frame.float().numpy()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{name}: expected a PIL image, an (H, W, 3) array or a (3, H, W) tensor, got "
                        f"{type(frame).__name__}.")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {frame.shape}.")
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating):
        return (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)
    raise TypeError(f"{name}: expected uint8 or float values in [0, 1], got dtype {frame.dtype}.")


def _check_out(path: str | os.PathLike, fps: Any) -> tuple[Path, str, float]:
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_EXTENSIONS:
        raise ValueError(f"out: unknown video extension {ext or '(none)'!r} in '{path}'. Use .mp4 (H.264) or .gif.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"out: the folder '{path.parent}' does not exist. Create it first.")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps: expected a positive number of frames per second, got {fps!r}.")
    return path, ext, float(fps)


def _frames_uint8(frames: Iterable[Any]) -> list[np.ndarray]:
    out = [to_uint8_frame(f, name=f"frames[{i}]") for i, f in enumerate(frames)]
    if not out:
        raise ValueError("frames: no frames to write. Pass at least one frame.")
    shape = out[0].shape
    for i, f in enumerate(out):
        if f.shape != shape:
            raise ValueError(f"frames[{i}]: size {f.shape[:2]} differs from frames[0] {shape[:2]}; all frames of a "
                             "video must have the same size.")
    return out


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H + H%2, W + W%2, 3), repeating the last row/column (yuv420p needs even sizes)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _encode_mp4(frames: list[np.ndarray], fps: float, crf: int) -> bytes:
    av = require_av()
    buf = io.BytesIO()
    h, w = pad_to_even(frames[0]).shape[:2]
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(int(crf))}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pad_to_even(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _encode_gif(frames: list[np.ndarray], fps: float) -> bytes:
    buf = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, int(round(100.0 / fps)) * 10)  # ms, GIF stores 1/100 s; browsers clamp < 20 ms delays
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                   optimize=False, disposal=1)
    return buf.getvalue()


def write_video(path: str | os.PathLike, frames: Iterable[Any], fps: float = 10.0, *, crf: int = DEFAULT_CRF) -> Path:
    """Write ``frames`` as an H.264 MP4 or a GIF (by the extension of ``path``), atomically; returns ``path``.

    ``crf`` is x264's quality (0 lossless luma .. 51 worst; MP4 only). Raises ValueError for an unknown extension,
    no frames or frames of different sizes, FileNotFoundError when the folder does not exist.
    """
    from .fileio import atomic_write_bytes

    path, ext, fps = _check_out(path, fps)
    data = _frames_uint8(frames)
    payload = _encode_mp4(data, fps, crf) if ext == ".mp4" else _encode_gif(data, fps)
    return atomic_write_bytes(path, payload)


__all__ = ["Video", "read_video", "iter_frames", "video_fps", "write_video", "to_uint8_frame", "pad_to_even",
           "VIDEO_EXTENSIONS", "WRITE_EXTENSIONS"]
