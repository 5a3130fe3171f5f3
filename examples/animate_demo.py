"""Animate a held-out synthetic person with a smoothly moving synthetic driver; write an MP4 and a GIF.

    .venv/bin/python examples/animate_demo.py --out animate_demo            # + --gif docs/animate_demo.gif

The source is identity 2 of the synthetic benchmark (seed 0), a *test* identity the shipped demo model never saw;
the driver is another synthetic person (identity 7, drawn at 128 x 128, so retargeting has a different body and
frame to undo) whose joint angles move smoothly through a few hand-made key poses and back. The script writes

    OUT/source.png, OUT/source_pose.json    the source person and its keypoints (the model's image size)
    OUT/poses.json                          the driver's keypoints, one dict per frame (128 x 128 frame)
    OUT/driving.mp4                         the driver's frames
    OUT/animate.mp4, OUT/animate.gif        source | driving frame | retargeted pose | generated, ~192 px panels

and prints frames/s (batch 1 and 16) and the flicker with shared and with fresh noise. The same result from the
command line: ``rpfm animate --source OUT/source.png --source-pose OUT/source_pose.json --driving OUT/poses.json
--out out.mp4 --side-by-side --scale 3``. The demo model is small and trained on a CPU on 128 x 128 synthetic
people: expect the right colours and a person that follows the pose, with blotchy texture.

``--source-photo astronaut`` (or ``grace_hopper``, or a path) uses a real photograph that ships inside a package
instead: BlazePose finds the person, the photo is cropped to a square around the detected joints and resized to
the model's size, and the driver is retargeted to the estimated pose. The demo model never saw a real photograph (nor an
upper-body crop), so this shows the photo -> pose -> retarget -> generate path working end to end, not image quality.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rpfm.animate import Driving, animate, fit_retarget, flicker, side_by_side
from rpfm.data.synthetic import generate_sample, identity_appearance, render_person
from rpfm.demo import load_release
from rpfm.fileio import atomic_write_bytes
from rpfm.pose.formats import write_keypoints_json
from rpfm.video import write_video

SEED, SOURCE_ID, DRIVER_ID = 0, 2, 7


def _pose(arm_r=(10, 0, 10, 20), arm_l=(10, 0, 10, 20), leg_r=(3, 0, 3), leg_l=(3, 0, 3), **kw) -> dict:
    """A front-view pose dict for rpfm.data.synthetic (angles in degrees; arms: abduct, flex, elbow, inward)."""
    pose = {"view": "front", "kind": "demo", "yaw": 0.0, "arm": {"r": list(arm_r), "l": list(arm_l)},
            "leg": {"r": list(leg_r), "l": list(leg_l)}, "twist": 0.0, "lean": 0.0, "side_lean": 0.0,
            "head_yaw": 0.0, "head_tilt": 0.0}
    pose.update(kw)
    return pose


KEY_POSES = [
    _pose(),                                                                          # standing
    _pose(arm_r=(60, 0, 30, 10), arm_l=(60, 0, 30, 10), yaw=-15, head_yaw=-10),     # arms out
    _pose(arm_r=(20, 35, 60, 40), arm_l=(15, -30, 10, 10), leg_r=(2, 25, 5), leg_l=(2, -20, 25), yaw=10),  # step
    _pose(arm_r=(70, 0, 10, 0), arm_l=(10, 0, 10, 20), leg_l=(14, 0, 3), side_lean=4, head_tilt=6),  # wave
]


def _lerp(a, b, w: float):
    if isinstance(a, dict):
        return {k: _lerp(a[k], b[k], w) for k in a}
    if isinstance(a, list):
        return [_lerp(x, y, w) for x, y in zip(a, b)]
    if isinstance(a, (int, float)):
        return (1 - w) * a + w * b
    return a


def driver_sequence(frames_per_move: int = 12, size: int = 128):
    """The driver's frames and keypoints: cosine-eased moves through KEY_POSES and back to the first."""
    app = identity_appearance(SEED, DRIVER_ID)
    images, poses = [], []
    keys = KEY_POSES + KEY_POSES[:1]
    for a, b in zip(keys[:-1], keys[1:]):
        for i in range(frames_per_move):
            w = 0.5 - 0.5 * math.cos(math.pi * i / frames_per_move)
            img, kp = render_person(app, _lerp(a, b, w), size, np.random.default_rng(0))   # fixed placement jitter
            images.append(img)
            poses.append(kp)
    return images, poses


def real_photo_source(name: str, size: int):
    """A real photograph cropped to a square around the person BlazePose finds, and its keypoints in that crop."""
    from rpfm.pose import load_estimator

    if name == "astronaut":
        import skimage.data

        photo = Image.fromarray(skimage.data.astronaut())
    elif name == "grace_hopper":
        import matplotlib.cbook

        photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    else:
        photo = Image.open(name).convert("RGB")
    kp = load_estimator("blazepose")(photo)
    if kp is None:
        raise SystemExit(f"--source-photo {name}: no person found in the photo")
    vis = kp.xy[kp.visible_mask()]
    (x0, y0), (x1, y1) = vis.min(0), vis.max(0)
    side = int(min(max(x1 - x0, y1 - y0) * 1.6, photo.width, photo.height))
    left = int(np.clip((x0 + x1) / 2 - side / 2, 0, photo.width - side))
    top = int(np.clip((y0 + y1) / 2 - side / 2, 0, photo.height - side))
    crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return crop, kp.crop(top, left, (side, side)).resize((size, size))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="animate_demo", help="output folder (created)")
    ap.add_argument("--gif", default=None, help="also write the side-by-side GIF here (e.g. docs/animate_demo.gif)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--frames-per-move", type=int, default=10)
    ap.add_argument("--source-photo", default=None,
                    help="astronaut | grace_hopper | PATH: a real photograph as the source (see the docstring)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pipe, _ = load_release()
    size = pipe.config.image_size                                   # the source at the model's own size
    if args.source_photo:
        source, src_kp = real_photo_source(args.source_photo, size)
    else:
        src_img, src_kp, _ = generate_sample(SEED, SOURCE_ID, 0, size)
        source = Image.fromarray(src_img)
    source.save(out / "source.png")
    write_keypoints_json(out / "source_pose.json", src_kp)
    drv_images, drv_poses = driver_sequence(args.frames_per_move)
    atomic_write_bytes(out / "poses.json", json.dumps([kp.to_dict() for kp in drv_poses]).encode())
    write_video(out / "driving.mp4", drv_images, fps=12)

    t = fit_retarget(src_kp, drv_poses)
    poses = [t(kp) for kp in drv_poses]
    print(f"{len(poses)} frames; retarget: {t.measure} + {t.anchor}, scale {t.scale:.3f}, fit x{t.fit_scale:.3f}")

    animate(pipe, source, poses[:16], num_steps=args.steps, batch_size=16)   # warm-up (first calls are slower)
    speed = {}
    for bs in (1, 16):
        t0 = time.perf_counter()
        frames = animate(pipe, source, poses, num_steps=args.steps, batch_size=bs)
        speed[bs] = len(frames) / (time.perf_counter() - t0)
    fresh = animate(pipe, source, poses, num_steps=args.steps, batch_size=16, shared_noise=False)
    fl_shared, fl_fresh = flicker(frames), flicker(fresh)

    rows = side_by_side(frames, poses, Driving(drv_poses, frames=drv_images), source=source,
                        scale=max(1, round(192 / size)))                  # panels about 192 px (x3 at 64)
    write_video(out / "animate.mp4", rows, fps=12)
    write_video(out / "animate.gif", rows, fps=12)
    if args.gif:   # small enough to commit: panels of about 128 px
        write_video(args.gif, side_by_side(frames, poses, Driving(drv_poses, frames=drv_images), source=source,
                                           scale=max(1, 128 // size)), fps=12)
    print(f"wrote {out}/animate.mp4 and {out}/animate.gif ({rows[0].width}x{rows[0].height})"
          + (f" and {args.gif}" if args.gif else ""))
    print(f"frames/s at {args.steps} steps: batch 1 {speed[1]:.2f}, batch 16 {speed[16]:.2f}")
    print(f"flicker (mean |frame t+1 - frame t|, [0, 1]): shared noise {fl_shared:.4f}, fresh noise {fl_fresh:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
