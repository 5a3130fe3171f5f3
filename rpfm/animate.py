"""Animate one person from a pose sequence: driving video / keypoint files -> retargeted poses -> video frames.

The parts, each usable on its own:

* **Driving sequences** (:func:`load_driving`): a driving video (one pose per frame from a pose estimator; a frame
  with nobody in it keeps the last good pose, frames before the first detection take the first one, a video with
  nobody at all is an error), a folder of keypoint files (sorted by name with numbers compared as numbers; any
  format :func:`rpfm.pose.load_keypoints` reads, e.g. one OpenPose JSON per frame), or one JSON file holding a list
  of keypoint dicts (rpfm's ``{"image_size", "keypoints"}`` or OpenPose ``{"people": ...}``, one per frame).
* **Retargeting** (:func:`fit_retarget`, :func:`retarget`): one similarity transform ``p' = s p + t`` for the
  whole sequence that maps the driver's body size and position onto the source person's, then (``fit=True``)
  shrinks and shifts it just enough that every joint of every frame stays ``margin`` inside the source frame, so
  a tall driver never produces a cropped person. Pure functions of :class:`~rpfm.pose.Keypoints`.
* **Generation** (:func:`animate`): the source's latent and condition share are computed once
  (``pipe.stream`` -> ``pipe.encode_source``); per frame only the pose branch, the sampler and the decoder run,
  ``batch_size`` frames at a time. Every frame starts from the same noise by default (``shared_noise=True``), so a
  static pose gives a static image; ``shared_noise=False`` draws fresh noise per frame.
* **Temporal consistency** (:func:`flicker`): mean absolute frame-to-frame difference of the outputs.
* **Layout** (:func:`side_by_side`): driving frame | rendered pose | output, per frame.

The command line is ``rpfm animate`` (:func:`add_cli`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .pose.keypoints import MISSING, Keypoints

NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP = 1, 2, 5, 8, 11
KEYPOINT_EXTENSIONS = (".json", ".npy", ".txt")
REFERENCES = ("median", "first")
DEFAULT_MARGIN = 0.05
DISPLAY_HEIGHT = 256  # driving frames are kept at most this tall for the side-by-side layout

Estimator = Callable[[Any], "Keypoints | None"]


# ============================================================================================ driving sequences
@dataclass
class Driving:
    """A driving pose sequence.

    Attributes:
        poses: one :class:`Keypoints` per frame (all in the frame of ``poses[0]``).
        fps: the driving video's frame rate, or None for keypoint files.
        frames: RGB uint8 (h, w, 3) copies of the driving video frames (at most ``DISPLAY_HEIGHT`` tall) for the
            side-by-side layout, or None.
        found: per frame, whether the pose was detected/read (False: carried over from a neighbouring frame).
        source: where the sequence came from (for messages).
    """

    poses: list[Keypoints]
    fps: float | None = None
    frames: list[np.ndarray] | None = None
    found: list[bool] | None = None
    source: str = "poses"

    def __post_init__(self) -> None:
        if not self.poses:
            raise ValueError(f"{self.source}: the driving sequence has no frames.")
        for i, kp in enumerate(self.poses):
            if not isinstance(kp, Keypoints):
                raise TypeError(f"{self.source}: frame {i} is a {type(kp).__name__}, expected rpfm.pose.Keypoints.")
        frame = self.poses[0].image_size
        self.poses = [kp if kp.image_size == frame else kp.resize(frame) for kp in self.poses]
        if self.found is None:
            self.found = [True] * len(self.poses)

    def __len__(self) -> int:
        return len(self.poses)


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _with_name(e: Exception, where: str) -> Exception:
    """Re-raise a keypoint error with the file/frame in front when the message does not name it yet."""
    msg = str(e)
    return type(e)(msg if msg.startswith(where) else f"{where}: {msg}")


def poses_from_folder(folder: str | os.PathLike, image_size: tuple[int, int] | None = None) -> Driving:
    """One keypoint file per frame (``.json`` OpenPose or plain, ``.npy``, PIDM ``.txt``), sorted naturally by name.

    ``image_size`` (H, W) is the frame of formats that do not record one (OpenPose JSON, ``.npy``); plain JSON
    keeps its own frame.
    """
    from .pose.formats import load_keypoints

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"driving: no folder '{folder}'.")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in KEYPOINT_EXTENSIONS),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise ValueError(f"driving: the folder '{folder}' holds no keypoint files ({', '.join(KEYPOINT_EXTENSIONS)}).")
    poses = []
    for i, f in enumerate(files):
        try:
            poses.append(load_keypoints(f, image_size if f.suffix.lower() != ".txt" else None))
        except (ValueError, TypeError) as e:
            raise _with_name(e, f"driving: {f} (frame {i})") from None
    return Driving(poses, source=str(folder))


def poses_from_json(path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> Driving:
    """One JSON file holding a list of keypoint dicts, one per frame (plain ``{"image_size", "keypoints"}`` or
    OpenPose ``{"people": [...]}``, which needs ``image_size``)."""
    from .pose.formats import parse_openpose

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"driving: no such file '{path}'.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"driving: '{path}' is not valid JSON ({e}).") from None
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        data = data["frames"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"driving: '{path}' must hold a non-empty JSON list of keypoint dicts (one per frame, "
                         f"{{'image_size': [H, W], 'keypoints': [[x, y], ... 18 ...]}}), got "
                         f"{type(data).__name__ if not isinstance(data, list) else 'an empty list'}.")
    poses = []
    for i, d in enumerate(data):
        where = f"driving: {path} [frame {i}]"
        try:
            if isinstance(d, dict) and "people" in d:
                poses.append(parse_openpose(d, image_size, source=where))
            else:
                kp = Keypoints.from_dict(d, name=where)
                poses.append(kp.resize(image_size) if image_size is not None and kp.image_size != tuple(image_size)
                             else kp)
        except (ValueError, TypeError) as e:
            raise _with_name(e, where) from None
    return Driving(poses, source=str(path))


def get_estimator(estimator: str | Estimator | None = None, **kwargs: Any) -> Estimator:
    """A pose estimator ``estimator(image) -> Keypoints | None``: a callable passes through; a name or path is
    loaded with ``rpfm.pose.estimate.load_estimator`` (default "blazepose")."""
    if callable(estimator):
        return estimator
    try:
        from .pose.estimate import load_estimator
    except ImportError as e:
        raise RuntimeError(f"pose estimation from photos is unavailable ({e}). Drive the animation with keypoint "
                           "files instead (a folder of OpenPose JSON, or a JSON list), and pass the source "
                           "person's keypoints with source_pose= / --source-pose.") from None
    return load_estimator(estimator or "blazepose", **kwargs)


def _thumbnail(frame: np.ndarray, height: int = DISPLAY_HEIGHT) -> np.ndarray:
    h, w = frame.shape[:2]
    if h <= height:
        return frame
    return np.asarray(Image.fromarray(frame).resize((max(1, round(w * height / h)), height), Image.BILINEAR))


def poses_from_frames(frames: Iterable[Any], estimator: Estimator, *, keep_frames: bool = False,
                      source: str = "driving video") -> Driving:
    """Estimate one pose per frame; a frame with nobody keeps the last good pose (frames before the first
    detection take the first one). Raises ValueError when no frame shows a person."""
    poses: list[Keypoints | None] = []
    kept: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        kp = estimator(frame)
        if kp is not None and not isinstance(kp, Keypoints):
            raise TypeError(f"estimator: returned a {type(kp).__name__} for frame {i} of {source}; expected "
                            "rpfm.pose.Keypoints or None.")
        poses.append(kp)
        if keep_frames:
            kept.append(_thumbnail(np.asarray(frame)))
    if not poses:
        raise ValueError(f"{source}: no frames.")
    found = [kp is not None for kp in poses]
    if not any(found):
        raise ValueError(f"{source}: the pose estimator found no person in any of its {len(poses)} frames. Use a "
                         "video with one clearly visible person, or pass keypoint files.")
    last = poses[found.index(True)]
    filled = []
    for kp in poses:
        last = kp if kp is not None else last
        filled.append(last)
    return Driving(filled, frames=kept if keep_frames else None, found=found, source=source)


def poses_from_video(path: str | os.PathLike, estimator: str | Estimator | None = None, *,
                     max_frames: int | None = None, keep_frames: bool = False) -> Driving:
    """Decode a video and estimate one pose per frame (see :func:`poses_from_frames`); keeps the frame rate."""
    from .video import iter_frames, video_fps

    frames = iter_frames(path, max_frames=max_frames, name="driving")
    fps = video_fps(path, name="driving")
    # BlazePose in video mode tracks the person from frame to frame (steadier joints than one detection per frame)
    video_mode = {"mode": "video"} if estimator in (None, "blazepose") else {}
    d = poses_from_frames(frames, get_estimator(estimator, **video_mode), keep_frames=keep_frames,
                          source=f"driving: {path}")
    d.fps = fps
    return d


def load_driving(path: str | os.PathLike, *, estimator: str | Estimator | None = None,
                 image_size: tuple[int, int] | None = None, max_frames: int | None = None,
                 keep_frames: bool = False) -> Driving:
    """A driving sequence from a video file, a folder of keypoint files or a JSON list (chosen by the path)."""
    from .video import VIDEO_EXTENSIONS

    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames: expected an int >= 1 or None, got {max_frames!r}.")
    path = Path(path)
    if path.is_dir():
        d = poses_from_folder(path, image_size)
    elif not path.exists():
        raise FileNotFoundError(f"driving: no such file or folder '{path}'.")
    elif path.suffix.lower() == ".json":
        d = poses_from_json(path, image_size)
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        return poses_from_video(path, estimator, max_frames=max_frames, keep_frames=keep_frames)
    else:
        raise ValueError(f"driving: unknown input '{path}'. Pass a video ({', '.join(VIDEO_EXTENSIONS)}), a folder "
                         "of keypoint files, or a .json list of keypoint dicts.")
    if max_frames is not None:
        d.poses, d.found = d.poses[:max_frames], d.found[:max_frames]
    return d


# ============================================================================================ retargeting
def _pt(kp: Keypoints, k: int) -> np.ndarray | None:
    return None if kp.missing_mask()[k] else kp.xy[k].copy()


def hip_centre(kp: Keypoints) -> np.ndarray | None:
    """Midpoint of the two hips (one hip when the other is missing), or None."""
    hips = [p for p in (_pt(kp, R_HIP), _pt(kp, L_HIP)) if p is not None]
    return np.mean(hips, axis=0) if hips else None


def neck_point(kp: Keypoints) -> np.ndarray | None:
    """The neck, else the midpoint of the shoulders, or None."""
    neck = _pt(kp, NECK)
    if neck is not None:
        return neck
    r, l = _pt(kp, R_SHOULDER), _pt(kp, L_SHOULDER)
    return (r + l) / 2 if r is not None and l is not None else None


def torso_length(kp: Keypoints) -> float | None:
    """Distance neck -> hip centre in pixels (None when either is unavailable)."""
    a, b = neck_point(kp), hip_centre(kp)
    return float(np.linalg.norm(a - b)) if a is not None and b is not None else None


def shoulder_width(kp: Keypoints) -> float | None:
    r, l = _pt(kp, R_SHOULDER), _pt(kp, L_SHOULDER)
    return float(np.linalg.norm(r - l)) if r is not None and l is not None else None


def joint_extent(kp: Keypoints) -> float | None:
    """Height of the visible joints' bounding box (needs 2 visible joints)."""
    v = kp.xy[kp.visible_mask()]
    return float(v[:, 1].max() - v[:, 1].min()) if len(v) >= 2 else None


def joint_centroid(kp: Keypoints) -> np.ndarray | None:
    v = kp.xy[kp.visible_mask()]
    return v.mean(axis=0) if len(v) else None


# Body-size measures and anchors, in order of preference; the first one available in BOTH the source pose and the
# driving reference is used, so the two sides are always measured the same way.
SIZE_MEASURES: tuple[tuple[str, Callable], ...] = (("torso", torso_length), ("shoulders", shoulder_width),
                                                    ("extent", joint_extent))
ANCHORS: tuple[tuple[str, Callable], ...] = (("hip_centre", hip_centre), ("neck", neck_point),
                                             ("centroid", joint_centroid))


def _reference(poses: Sequence[Keypoints], fn: Callable, how: str):
    values = [v for v in (fn(kp) for kp in poses) if v is not None]
    if isinstance(values[0] if values else None, float):
        values = [v for v in values if v > 1e-6]
    if not values:
        return None
    return values[0] if how == "first" else np.median(np.asarray(values, dtype=np.float64), axis=0)


@dataclass(frozen=True)
class Retarget:
    """The similarity transform ``p' = scale * p + offset`` into the frame ``image_size`` (H, W).

    ``measure``/``anchor`` name the body-size measure and anchor used; ``fit_scale`` (<= 1) is the extra shrink
    applied to keep the sequence inside the frame (1.0: none needed).
    """

    scale: float
    offset: tuple[float, float]
    image_size: tuple[int, int]
    measure: str = "torso"
    anchor: str = "hip_centre"
    fit_scale: float = 1.0

    def __call__(self, kp: Keypoints) -> Keypoints:
        xy = kp.xy * self.scale + np.asarray(self.offset, dtype=np.float64)
        xy[kp.missing_mask()] = MISSING
        return Keypoints(xy, self.image_size)


def fit_retarget(source_pose: Keypoints, driving: Sequence[Keypoints], *, reference: str = "median",
                 fit: bool = True, margin: float = DEFAULT_MARGIN) -> Retarget:
    """The transform that aligns the driving poses with the source person (see the module docstring).

    1. scale ``s = m(source) / m(driving reference)`` for the first body-size measure ``m`` available in both:
       torso length (neck -> hip centre), shoulder width, joint extent (bounding-box height);
    2. translation: the driving reference anchor (hip centre, else neck, else joint centroid) lands on the source
       pose's anchor: ``t = a(source) - s * a(driving)``;
    3. ``fit``: with all frames transformed, if the joints' bounding box is larger than the frame minus ``margin``
       (a fraction of the frame's side) on any side, scale by ``k = min(1, avail_w / box_w, avail_h / box_h)``
       about the source anchor, then shift by the least amount that brings the box inside.

    ``reference``: "median" (the median measure and anchor over all driving frames where they exist; robust to a
    bad frame) or "first" (the first frame where they exist). The driving motion is kept: a driver who walks to
    the right walks to the right in the output too.
    """
    if not isinstance(source_pose, Keypoints):
        raise TypeError(f"source_pose: expected rpfm.pose.Keypoints, got {type(source_pose).__name__}.")
    if reference not in REFERENCES:
        raise ValueError(f"reference: expected one of {list(REFERENCES)}, got {reference!r}.")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin: expected a fraction of the frame in [0, 0.5), got {margin!r}.")
    driving = list(driving)
    if not driving:
        raise ValueError("driving: no poses to retarget.")
    scale = measure = None
    for measure, fn in SIZE_MEASURES:
        m_src, m_drv = fn(source_pose), _reference(driving, fn, reference)
        if m_src is not None and m_src > 1e-6 and m_drv is not None:
            scale = m_src / float(m_drv)
            break
    if scale is None:
        raise ValueError("source_pose / driving: no body-size measure (torso, shoulder width, joint extent) is "
                         "available in both the source pose and the driving poses; they need at least two visible "
                         "joints each.")
    for anchor, fn in ANCHORS:
        a_src, a_drv = fn(source_pose), _reference(driving, fn, reference)
        if a_src is not None and a_drv is not None:
            break
    offset = a_src - scale * np.asarray(a_drv, dtype=np.float64)
    H, W = source_pose.image_size
    k = 1.0
    if fit:
        pts = np.concatenate([kp.xy[kp.visible_mask()] for kp in driving]) * scale + offset
        if len(pts):
            lo = np.array([margin * (W - 1), margin * (H - 1)])
            hi = np.array([(1 - margin) * (W - 1), (1 - margin) * (H - 1)])
            box_lo, box_hi = pts.min(axis=0), pts.max(axis=0)
            span = np.maximum(box_hi - box_lo, 1e-9)
            k = float(min(1.0, *((hi - lo) / span)))
            # scale about the source anchor: p'' = a + k (p' - a)
            box_lo, box_hi = a_src + k * (box_lo - a_src), a_src + k * (box_hi - a_src)
            shift = np.where(box_lo < lo, lo - box_lo, np.where(box_hi > hi, hi - box_hi, 0.0))
            scale, offset = scale * k, a_src + k * (offset - a_src) + shift
    return Retarget(scale=float(scale), offset=(float(offset[0]), float(offset[1])), image_size=(H, W),
                    measure=measure, anchor=anchor, fit_scale=k)


def retarget(source_pose: Keypoints, driving: Sequence[Keypoints], **kwargs: Any) -> list[Keypoints]:
    """``driving`` mapped into the source pose's frame with :func:`fit_retarget` (same keyword arguments)."""
    t = fit_retarget(source_pose, driving, **kwargs)
    return [t(kp) for kp in driving]


def source_pose_for(source: Any, source_pose: Keypoints | str | os.PathLike | None = None,
                    estimator: str | Estimator | None = None) -> Keypoints:
    """The source person's keypoints in the source image's frame: ``source_pose`` (Keypoints or a keypoint file;
    moved to the image's frame when it records a different one), else estimated from the image."""
    from .images import _open

    img = _open(source, "source") if isinstance(source, (str, os.PathLike)) else source
    if isinstance(img, Image.Image):
        size = (img.height, img.width)
    elif isinstance(img, np.ndarray) and img.ndim == 3:
        size = img.shape[:2]
    else:   # a tensor (3, H, W) / (1, 3, H, W)
        size = tuple(int(s) for s in img.shape[-2:])
    if source_pose is not None:
        if not isinstance(source_pose, Keypoints):
            from .pose.formats import load_keypoints

            try:
                source_pose = load_keypoints(source_pose, size if Path(source_pose).suffix.lower() != ".txt" else None)
            except (ValueError, TypeError) as e:
                raise _with_name(e, f"source_pose: {source_pose}") from None
        return source_pose if source_pose.image_size == size else source_pose.resize(size)
    if isinstance(img, np.ndarray) or isinstance(img, Image.Image):
        arr = np.asarray(img.convert("RGB")) if isinstance(img, Image.Image) else img
    else:
        x = img[0] if img.ndim == 4 else img
        arr = ((x.detach().float().cpu().permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    kp = get_estimator(estimator)(arr)
    if kp is None:
        raise ValueError("source: the pose estimator found no person in the source image. Pass the source person's "
                         "keypoints with source_pose= (--source-pose kp.json).")
    return kp


# ============================================================================================ generation
def animate(pipe, source: Any, poses: Sequence[Any], *, num_steps: int = 10, guidance_scale: float = 1.0,
            batch_size: int = 8, shared_noise: bool = True, seed: int | None = 0, solver: str = "euler",
            output_type: str = "pil", resize: bool = False,
            progress: Callable[[int, int], None] | None = None) -> list:
    """Render ``source`` in every pose of ``poses`` -> one frame per pose (a list, in order).

    Args:
        pipe: an :class:`rpfm.RPFMPipeline`.
        source: the person photo (any input the pipeline accepts; one person).
        poses: the per-frame poses: :class:`Keypoints` in the source image's frame (see :func:`retarget`) or
            rendered skeletons (a list of images, or an (F, 3, H, W) tensor in [0, 1]).
        batch_size: frames generated per model call.
        shared_noise: every frame starts from the same noise (static pose -> static frame); False draws fresh
            noise for every frame.
        seed: seeds the noise (None: nondeterministic).
        output_type: "pil" (PIL images), "np" ((H, W, 3) float32 arrays in [0, 1]) or "pt" ((3, H, W) tensors).
        progress: called as ``progress(frames_done, total)`` after every batch.

    The source work (latent, condition share) happens once; each batch runs only the pose branch, the sampler and
    the decoder (``pipe.stream``).
    """
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}.")
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type: expected 'pil', 'np' or 'pt', got {output_type!r}.")
    n = len(poses)
    if n == 0:
        raise ValueError("poses: the pose sequence is empty. Pass at least one pose.")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    streamer = pipe.stream(source, num_steps=num_steps, guidance_scale=guidance_scale, solver=solver,
                           generator=generator, shared_noise=shared_noise, output_type=output_type, resize=resize)
    frames: list = []
    for i in range(0, n, batch_size):
        chunk = poses[i:i + batch_size]
        if isinstance(chunk, tuple):
            chunk = list(chunk)
        out = streamer(chunk)
        frames.extend(list(out))
        if progress is not None:
            progress(len(frames), n)
    return frames


def _as_float_frames(frames: Sequence[Any]) -> np.ndarray:
    from .video import to_uint8_frame

    out = []
    for i, f in enumerate(frames):
        if isinstance(f, np.ndarray) and np.issubdtype(f.dtype, np.floating) and f.ndim == 3 and f.shape[2] == 3:
            out.append(f.astype(np.float64))
        else:
            out.append(to_uint8_frame(f, name=f"frames[{i}]").astype(np.float64) / 255.0)
    return np.stack(out)


def flicker(frames: Sequence[Any]) -> float:
    """Temporal flicker: mean over t and pixels of |frame[t+1] - frame[t]|, on [0, 1] RGB (needs >= 2 frames).

    Frames: PIL images, uint8 arrays, float arrays in [0, 1] or (3, H, W) tensors. Includes the change the driving
    motion causes; compare settings on the same pose sequence.
    """
    if len(frames) < 2:
        raise ValueError(f"frames: flicker needs at least 2 frames, got {len(frames)}.")
    x = _as_float_frames(frames)
    return float(np.abs(np.diff(x, axis=0)).mean())


# ============================================================================================ layout
def _fit_height(img: np.ndarray, height: int) -> Image.Image:
    h, w = img.shape[:2]
    return Image.fromarray(img).resize((max(1, round(w * height / h)), height), Image.BILINEAR)


def _draw(kp: Keypoints) -> np.ndarray:
    """The skeleton drawn as the model sees it: in a frame 256 px tall (thin limbs), uint8 (H', W', 3)."""
    from .pose.render import render_pose

    h, w = kp.image_size
    size = (256, max(1, round(256 * w / h)))
    return (render_pose(kp.resize(size)) * 255).round().astype(np.uint8)


def side_by_side(outputs: Sequence[Any], poses: Sequence[Keypoints], driving: Driving | None = None, *,
                 source: Any = None, scale: int = 1, labels: bool = True) -> list[Image.Image]:
    """Per frame: [source] | [driving frame (or the driving pose drawn in its own frame)] | rendered pose | output.

    ``poses`` are the poses the outputs were generated from (drawn at the output size); ``driving`` adds its panel
    when given, ``source`` (an image) a first panel. ``scale`` enlarges the whole row (nearest neighbour) so small
    outputs are visible. ``labels`` writes each panel's name above it.
    """
    from .labels import with_labels

    from .video import to_uint8_frame

    if len(outputs) != len(poses) or (driving is not None and len(driving) != len(outputs)):
        raise ValueError(f"side_by_side: {len(outputs)} outputs, {len(poses)} poses"
                         + (f", {len(driving)} driving frames" if driving is not None else "")
                         + "; they must match.")
    rows = []
    for i, (out, kp) in enumerate(zip(outputs, poses)):
        o = to_uint8_frame(out, name=f"outputs[{i}]")
        h, w = o.shape[:2]
        panels = [_fit_height(to_uint8_frame(source, name="source"), h)] if source is not None else []
        if driving is not None:
            panels.append(_fit_height(driving.frames[i] if driving.frames else _draw(driving.poses[i]), h))
        panels.append(_fit_height(_draw(kp), h).resize((w, h), Image.BILINEAR))
        panels.append(Image.fromarray(o))
        names = (["source"] if source is not None else []) + (["driving"] if driving is not None else []) + \
            ["pose", "output"]
        row = Image.new("RGB", (sum(p.width for p in panels), h))
        x = 0
        for p in panels:
            row.paste(p, (x, 0))
            x += p.width
        if scale != 1:
            row = row.resize((row.width * scale, h * scale), Image.NEAREST)
        rows.append(with_labels(row, [p.width * scale for p in panels], names if labels else None))
    return rows


# ============================================================================================ command line
def _progress_bar(total: int, enabled: bool = True) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """(update(done, total), close()) — a tqdm bar on stderr when tqdm imports, else a plain stderr line."""
    from .progress import ProgressBar

    bar = ProgressBar(total, desc="animate", unit="frame", disable=not enabled)
    return (lambda done, n: bar.set(done)), bar.close


def _parse_hw(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x256), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``rpfm animate`` on the top-level ``subparsers``."""
    from .cli_support import float_in, positive_int, seed_arg

    p = subparsers.add_parser(
        "animate", help="animate a person photo from a driving video or a pose sequence (MP4/GIF)",
        description="Render the person in SOURCE in every pose of DRIVING (a video: poses estimated per frame; a "
        "folder of keypoint files, one per frame; or a JSON list of keypoint dicts) and write an MP4 or GIF. The "
        "driving poses are retargeted to the source person's size and position (torso length and hip centre). "
        "Prints frames/s and the flicker (mean |frame t+1 - frame t|).",
        epilog="example: rpfm animate --source person.png --driving poses/ --out out.mp4 --steps 10 --side-by-side")
    p.add_argument("--source", required=True, help="source person image (resized to the model's square size)")
    p.add_argument("--driving", required=True, help="driving video (.mp4 ...), folder of keypoint files "
                   "(.json OpenPose/plain, .npy, .txt), or a .json list of keypoint dicts")
    p.add_argument("--out", required=True, help="output video: .mp4 (H.264) or .gif")
    p.add_argument("--model", default=None, help="pipeline folder (default: the shipped demo model, trained "
                   "on synthetic people)")
    p.add_argument("--steps", type=positive_int, default=10, help="Euler steps per frame (default: 10)")
    p.add_argument("--guidance", type=float_in(0), default=1.0, help="guidance scale (default: 1.0 = off)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="frames per model call (default: 8)")
    p.add_argument("--fresh-noise", action="store_true", help="fresh noise per frame (default: the same noise for "
                   "every frame, which keeps a static pose static)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--side-by-side", action="store_true", help="write driving | pose | output per frame")
    p.add_argument("--scale", type=positive_int, default=1, help="enlarge the written frames by this integer factor "
                   "(nearest; default: 1)")
    p.add_argument("--fps", type=float_in(0, lo_open=True), default=None,
                   help="output frame rate, > 0 (default: the driving video's, or 10)")
    p.add_argument("--source-pose", default=None, help="the source person's keypoints (.json/.npy/.txt) in the source "
                   "image's frame (default: estimated from the source image)")
    p.add_argument("--no-retarget", action="store_true", help="use the driving poses as they are (only scaled from "
                   "their frame to the source's)")
    p.add_argument("--reference", choices=REFERENCES, default="median", help="driving frame(s) the body size and "
                   "position are measured on (default: median over all frames)")
    p.add_argument("--driving-size", type=_parse_hw, default=None, help="HxW frame of driving keypoint files that "
                   "record none (OpenPose JSON, .npy; default: the source image's size)")
    p.add_argument("--estimator", default="blazepose", help="pose estimator for videos/the source photo: "
                   "'blazepose', 'onnx' or a model path (default: blazepose)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="use at most this many driving frames")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_animate)
    return p


def cmd_animate(args: argparse.Namespace) -> int:
    from .cli_support import device as _device
    from .fileio import check_output_file
    from .images import _open
    from .pipeline import RPFMPipeline
    from .video import WRITE_EXTENSIONS, require_av, write_video

    out = check_output_file(args.out, "--out", suffixes=WRITE_EXTENSIONS)   # fail before any model work
    if out.suffix.lower() == ".mp4":
        require_av()
    device = _device(args.device)
    if args.model is None:
        from .demo import ASSET_DIR

        model_dir = ASSET_DIR
    else:
        model_dir = Path(args.model)
    source = _open(args.source, "--source").convert("RGB")
    size = (source.height, source.width)
    driving = load_driving(args.driving, estimator=args.estimator, image_size=args.driving_size or size,
                           max_frames=args.max_frames, keep_frames=args.side_by_side)
    if args.no_retarget:
        poses, how = [kp.resize(size) for kp in driving.poses], "not retargeted"
    else:
        src_kp = source_pose_for(source, args.source_pose, args.estimator)
        t = fit_retarget(src_kp, driving.poses, reference=args.reference)
        poses = [t(kp) for kp in driving.poses]
        how = (f"retargeted by {t.measure} + {t.anchor}: scale {t.scale:.3f}"
               + (f" (shrunk x{t.fit_scale:.3f} to stay in frame)" if t.fit_scale < 1 else ""))
    pipe = RPFMPipeline.from_pretrained(model_dir, device=device)
    update, close = _progress_bar(len(poses), enabled=not args.no_progress)
    t0 = time.perf_counter()
    try:
        frames = animate(pipe, source, poses, num_steps=args.steps, guidance_scale=args.guidance,
                         batch_size=args.batch_size, shared_noise=not args.fresh_noise, seed=args.seed,
                         resize=True, progress=update)
    finally:
        close()
    seconds = time.perf_counter() - t0
    fl = flicker(frames) if len(frames) > 1 else 0.0
    if args.side_by_side:
        written = side_by_side(frames, poses, driving, scale=args.scale)
    elif args.scale != 1:
        written = [f.resize((f.width * args.scale, f.height * args.scale), Image.NEAREST) for f in frames]
    else:
        written = frames
    fps = args.fps or driving.fps or 10.0
    write_video(out, written, fps=fps)
    found = sum(driving.found)
    w, h = written[0].size
    print(f"wrote {out}: {len(frames)} frames {w}x{h} at {fps:g} fps; poses from {driving.source}"
          + (f" (person found in {found}/{len(driving)} frames)" if found < len(driving) else "") + f", {how}")
    print(f"generation: {len(frames) / seconds:.2f} frames/s ({seconds:.2f} s; batch {args.batch_size}, "
          f"{args.steps} Euler steps, guidance {args.guidance:g}, {device}); flicker {fl:.4f} "
          f"(mean |frame t+1 - frame t| in [0, 1], {'fresh' if args.fresh_noise else 'shared'} noise)")
    return 0


__all__ = ["Driving", "Retarget", "animate", "fit_retarget", "retarget", "flicker", "side_by_side", "load_driving",
           "poses_from_video", "poses_from_frames", "poses_from_folder", "poses_from_json", "source_pose_for",
           "get_estimator", "torso_length", "shoulder_width", "hip_centre", "neck_point", "add_cli"]
