"""The Generate and Animate actions of the web demo, as plain functions of a :class:`ServeContext`.

They take what the page hands over (file paths, numbers, choices), check it (:mod:`rpfm.serve.uploads`), run the
pipeline under the context's model lock and return images, a video path and a one-line report. Bad input raises
:class:`~rpfm.serve.uploads.UploadError` with a message for the page; the app shows it and keeps serving.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .context import ServeContext
from .uploads import (MAX_VIDEO_FRAMES, UploadError, as_path_list, check_video, fit_square, load_pose_file,
                      open_photo)

POSE_SOURCES = ("preset", "photo", "keypoints")
DISPLAY_SIZE = 256          # images are enlarged (nearest neighbour) to at least this for the page
MAX_STEPS = 200
ANIMATE_BATCH = 8


@dataclass
class Generated:
    """Generate's result: the three panels (enlarged for display) and the report line."""

    source: Image.Image
    pose: Image.Image
    result: Image.Image
    report: str


def enlarge(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Nearest-neighbour enlargement by a whole factor, so small model outputs stay crisp in the page."""
    factor = max(1, size // max(image.size))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def check_settings(steps: Any, guidance: Any, seed: Any) -> tuple[int, float, int]:
    """The numeric settings from the page -> (steps, guidance, seed), refused with a message when out of range."""
    try:
        steps, guidance, seed = int(steps), float(guidance), int(seed)
    except (TypeError, ValueError):
        raise UploadError(f"settings: steps, guidance and seed must be numbers, got {steps!r}, {guidance!r}, "
                          f"{seed!r}.") from None
    if not 1 <= steps <= MAX_STEPS:
        raise UploadError(f"steps: expected 1 to {MAX_STEPS}, got {steps}.")
    if not 0 <= guidance <= 20:
        raise UploadError(f"guidance: expected 0 to 20 (1.0 = off), got {guidance:g}.")
    return steps, guidance, seed


def source_image(ctx: ServeContext, upload: Any, what: str = "source photo") -> Image.Image:
    """The source person as the model sees it: the uploaded photo padded to a square at the model's size."""
    return fit_square(open_photo(upload, what), ctx.image_size)


def pose_from_photo(ctx: ServeContext, upload: Any, what: str = "pose photo"):
    """Estimate the pose in a photo (squared like a source photo) -> Keypoints in the model's frame."""
    photo = open_photo(upload, what)
    side = max(photo.size)
    kp = ctx.estimate(fit_square(photo, side))
    if kp is None:
        raise UploadError(f"{what}: no person found in the photo. Upload a photo in which one person is clearly "
                          "visible, or pick a preset pose.")
    return kp.resize((ctx.image_size, ctx.image_size))


def target_pose(ctx: ServeContext, pose_source: str, *, preset: Any = 0, photo: Any = None, keypoints: Any = None):
    """The target pose from the chosen source -> Keypoints in the model's frame."""
    if pose_source == "preset":
        try:
            return ctx.presets[int(preset)].keypoints
        except (TypeError, ValueError, IndexError):
            raise UploadError(f"preset pose: pick one of the {len(ctx.presets)} presets.") from None
    if pose_source == "photo":
        return pose_from_photo(ctx, photo)
    if pose_source == "keypoints":
        return load_pose_file(keypoints, ctx.image_size)
    raise UploadError(f"target pose: unknown choice {pose_source!r}; choose one of {', '.join(POSE_SOURCES)}.")


def generate(ctx: ServeContext, source: Any, pose_source: str = "preset", *, preset: Any = 0, pose_photo: Any = None,
             pose_keypoints: Any = None, steps: Any = 20, guidance: Any = 1.0, seed: Any = 0,
             solver: str = "euler") -> Generated:
    """The Generate tab: render the source person in the target pose."""
    import torch

    from ..pose.render import render_pose
    from ..samplers import SOLVERS

    if solver not in SOLVERS:
        raise UploadError(f"solver: unknown {solver!r}; choose one of {', '.join(SOLVERS)}.")
    steps, guidance, seed = check_settings(steps, guidance, seed)
    src = source_image(ctx, source)
    t0 = time.perf_counter()
    kp = target_pose(ctx, pose_source, preset=preset, photo=pose_photo, keypoints=pose_keypoints)
    pose_s = time.perf_counter() - t0
    with ctx.model_lock:
        t1 = time.perf_counter()
        out = ctx.pipe(src, kp, num_steps=steps, guidance_scale=guidance, solver=solver,
                       generator=torch.Generator().manual_seed(seed))
        gen_s = time.perf_counter() - t1
    pose_img = Image.fromarray((render_pose(kp) * 255).round().astype(np.uint8))
    size = ctx.image_size
    report = (f"Generated {size}x{size} in {gen_s:.2f} s ({solver}, {out.nfe} model evaluations, guidance "
              f"{guidance:g}, seed {seed}, sampler {out.backends.get('sampler', '?')}, {ctx.pipe.device.type})"
              + (f"; pose estimated in {pose_s:.2f} s" if pose_source == "photo" else "") + ".")
    return Generated(enlarge(src), enlarge(pose_img), enlarge(out.images[0]), report)


# ============================================================================================ animate
def driving_poses(ctx: ServeContext, video: Any = None, keypoint_files: Any = None, *,
                  max_frames: int = MAX_VIDEO_FRAMES):
    """The driving sequence from a video (poses estimated per frame) or keypoint file(s) -> (Driving, note)."""
    from ..animate import Driving, poses_from_json, poses_from_video

    files = as_path_list(keypoint_files)
    if video and files:
        raise UploadError("driving: upload either a video or keypoint files, not both.")
    size = (ctx.image_size, ctx.image_size)
    try:
        if video:
            path, _ = check_video(video)
            driving = poses_from_video(path, max_frames=max_frames + 1)   # one more: tells whether it was cut
        elif len(files) == 1 and files[0].suffix.lower() == ".json":
            driving = poses_from_json(files[0], size)
        elif files:
            driving = Driving([load_pose_file(f, ctx.image_size, f"keypoint file {f.name}")
                               for f in sorted(files, key=lambda p: _natural(p.name))], source="keypoint files")
        else:
            raise UploadError("driving: upload a driving video or a keypoint sequence (one JSON list, or one "
                              "keypoint file per frame).")
    except UploadError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise UploadError(str(e)) from None
    note = ""
    if len(driving) > max_frames:
        driving.poses, driving.found = driving.poses[:max_frames], driving.found[:max_frames]
        note = f" (first {max_frames} frames used)"
    return driving, note


def _natural(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def animate_clip(ctx: ServeContext, source: Any, *, video: Any = None, keypoint_files: Any = None, steps: Any = 10,
                 seed: Any = 0, progress: Callable[[int, int], None] | None = None) -> tuple[Path, str]:
    """The Animate tab: the source person in every driving pose -> (MP4 path under the workdir, report line).

    The driving poses are retargeted to the source person (``rpfm.animate.fit_retarget``) when a pose can be
    estimated in the source photo; otherwise they are only scaled to the model's frame.
    """
    from ..animate import animate, fit_retarget, flicker, side_by_side
    from ..video import write_video

    steps, _, seed = check_settings(steps, 1.0, seed)
    src = source_image(ctx, source)
    driving, note = driving_poses(ctx, video, keypoint_files)
    size = (ctx.image_size, ctx.image_size)
    src_kp = ctx.estimate(np.asarray(src))
    if src_kp is not None and src_kp.visible_mask().sum() >= 4:
        t = fit_retarget(src_kp, driving.poses)
        poses, how = [t(kp) for kp in driving.poses], "retargeted to the source person"
    else:
        poses, how = [kp.resize(size) for kp in driving.poses], "scaled to the frame (no pose found in the source)"
    with ctx.model_lock:
        t0 = time.perf_counter()
        frames = animate(ctx.pipe, src, poses, num_steps=steps, batch_size=ANIMATE_BATCH, seed=seed,
                         progress=progress)
        seconds = time.perf_counter() - t0
    fps = driving.fps or 10.0
    rows = side_by_side(frames, poses, scale=max(1, 128 // ctx.image_size))
    out = write_video(ctx.new_file(".mp4"), rows, fps=fps)
    fl = flicker(frames) if len(frames) > 1 else 0.0
    report = (f"{len(frames)} frames{note} from {'the video' if video else 'the keypoint sequence'}, {how}; "
              f"generated at {len(frames) / seconds:.1f} frames/s ({steps} Euler steps, batch {ANIMATE_BATCH}, "
              f"{ctx.pipe.device.type}); flicker {fl:.4f}; video at {fps:g} fps (pose | result).")
    return out, report


__all__ = ["Generated", "generate", "animate_clip", "driving_poses", "target_pose", "source_image", "enlarge",
           "check_settings", "POSE_SOURCES"]
