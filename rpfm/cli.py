"""Command line: ``rpfm demo|generate|convert|data|pose|train|export|eval|bench|animate|env``.

Run ``rpfm COMMAND --help`` for details. Each command group registers itself with an ``add_cli(subparsers)``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SEED_MAX = 2**64 - 1                     # torch.Generator.manual_seed takes seeds up to this


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .pipeline import check_device

    return check_device(name, name="--device")


def _check_out_image(path: str) -> Path:
    """--out of an image command: checked (extension, folder, writable) before any work."""
    from .fileio import check_output_file
    from .imagefile import IMAGE_SUFFIXES

    return check_output_file(path, "--out", suffixes=IMAGE_SUFFIXES)


def _save(image, path: Path) -> None:
    from .imagefile import save_image

    save_image(image, path)


# ---------------------------------------------------------------------------------------------------- argument types
# argparse types: a bad value stops the command at parsing ("rpfm CMD: error: argument --flag: ..."), before any work.
def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def float_in(lo: float | None = None, *, lo_open: bool = False):
    """A finite float, at least ``lo`` (greater than ``lo`` when ``lo_open``) when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)):
            bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo:g}"
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}")
        return value

    return parse


def seed_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed in 0 .. 2**64 - 1, got {value}")
    return value


positive_int = int_at_least(1)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import grid, load_release

    path = _check_out_image(args.out)
    device = _device(args.device)
    t0 = time.perf_counter()
    pipe, pairs = load_release()
    pipe.to(device)
    sources = [s for _, s, _, _ in pairs]
    poses = [p for _, _, p, _ in pairs]
    out = pipe(sources, poses, num_steps=args.steps, guidance_scale=args.guidance,
               generator=torch.Generator().manual_seed(args.seed))
    rows = [[s, p, o, t] for (_, s, p, t), o in zip(pairs, out.images)]
    _save(grid(rows), path)
    print(f"wrote {args.out}: {len(rows)} held-out pairs (source | target pose | generated | ground truth) in "
          f"{time.perf_counter() - t0:.2f} s on {device}, {out.nfe} steps, sampler {out.backends['sampler']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .pipeline import RPFMPipeline

    out = _check_out_image(args.out)
    device = _device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    pipe = RPFMPipeline.from_pretrained(args.model, device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    pose = args.pose
    if Path(pose).suffix.lower() in (".json", ".npy", ".txt"):
        from .pose.formats import load_keypoints

        # OpenPose / .npy coordinates carry no frame: take them as pixels of an image_size x image_size image
        size = None if Path(pose).suffix.lower() == ".txt" else (pipe.config.image_size,) * 2
        pose = load_keypoints(pose, size)
    result = pipe(args.source, pose, num_steps=args.steps, guidance_scale=args.guidance, solver=args.solver,
                  generator=generator, resize=args.resize)
    _save(result.images[0], out)
    print(f"wrote {out} in {time.perf_counter() - t0:.2f} s on {device} (NFE {result.nfe}, {result.backends})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .codec import load_codec
    from .convert import load_foreign_model
    from .features import load_feature_extractor
    from .fileio import check_output_folder, read_json
    from .pipeline import RPFMPipeline

    check_output_folder(args.out, "--out")
    if args.config:
        cfg = config_mod.from_dict(read_json(args.config, "--config"))
    else:
        cfg = config_mod.get_preset(args.preset)
    model, report = load_foreign_model(args.checkpoint, cfg, source=args.source, which=args.weights)
    pose = load_feature_extractor(args.pose_encoder) if args.pose_encoder else None
    src = load_feature_extractor(args.source_encoder) if args.source_encoder else None
    RPFMPipeline(model, load_codec(args.codec), pose, src).save_pretrained(args.out)
    print(f"wrote pipeline folder {args.out}: {report.summary()}")
    if report.initialised:
        print(f"left at initialisation (train or fine-tune these): {', '.join(report.initialised[:12])}"
              + (" ..." if len(report.initialised) > 12 else ""))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from . import env_report

    env_report()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .samplers import SOLVERS

    parser = argparse.ArgumentParser(prog="rpfm", description="Pose-guided person image synthesis with flow "
                                     "matching (RPFM).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the embedded default end to end and write a PNG grid",
                          description="Load the demo model shipped with rpfm (trained on the synthetic benchmark; no "
                          "downloads) and write source | target pose | generated | ground truth for held-out "
                          "identities as a PNG.")
    demo.add_argument("--out", default="rpfm_demo.png", help="output image, .png (default: rpfm_demo.png), .jpg, "
                      ".webp, .bmp or .tif")
    demo.add_argument("--steps", type=positive_int, default=20, help="Euler steps (default: 20)")
    demo.add_argument("--guidance", type=float_in(0), default=1.0, help="guidance scale (default: 1.0)")
    demo.add_argument("--seed", type=seed_arg, default=0)
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    demo.set_defaults(func=cmd_demo)

    gen = sub.add_parser("generate", help="generate one image from a source photo and a target pose",
                         description="Load a pipeline folder (from save_pretrained) and render the person in "
                         "SOURCE in the pose drawn in POSE (an OpenPose-style skeleton image, RGB on black).",
                         epilog="example: rpfm generate --model ./rpfm-b2 --source person.png --pose pose.png "
                         "--out out.png --steps 60 --guidance 1.1")
    gen.add_argument("--model", required=True, help="pipeline folder written by RPFMPipeline.save_pretrained")
    gen.add_argument("--source", required=True, help="source person image (image_size x image_size, or --resize)")
    gen.add_argument("--pose", required=True, help="target pose: keypoints (.json OpenPose or rpfm JSON, .npy, PIDM "
                     ".txt) or a rendered skeleton image (same size as --source)")
    gen.add_argument("--out", required=True, help="output image: .png, .jpg, .webp, .bmp or .tif (the format "
                     "follows the extension)")
    gen.add_argument("--steps", type=positive_int, default=60, help="solver steps (default: 60, the paper's NFE)")
    gen.add_argument("--guidance", type=float_in(0), default=1.1, help="guidance scale (default: 1.1; 1.0 = off)")
    gen.add_argument("--solver", choices=SOLVERS, default="euler")
    gen.add_argument("--seed", type=seed_arg, default=0)
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    gen.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    gen.add_argument("--resize", action="store_true", help="resize inputs to the model's image size")
    gen.set_defaults(func=cmd_generate)

    conv = sub.add_parser("convert", help="turn a checkpoint trained elsewhere into a pipeline folder",
                          description="Convert a DiT/LFM/SiT, X-MDPT or RPFM (spec layout) checkpoint (.pt/.pth read "
                          "with weights_only=True, or .safetensors; never unpickles code) into an rpfm pipeline "
                          "folder, with the codec and feature extractors you give.",
                          epilog="example: rpfm convert --checkpoint ema_0.9999_300000.pt --source xmdpt "
                          "--preset RPFM-B/2 --codec ./sd-vae-ft-mse --pose-encoder ./dinov2-base "
                          "--source-encoder ./dinov2-giant --out ./rpfm-b2-from-xmdpt")
    conv.add_argument("--checkpoint", required=True)
    conv.add_argument("--source", choices=("auto", "rpfm", "dit", "lfm", "sit", "xmdpt"), default="auto",
                      help="checkpoint layout (default: detect)")
    conv.add_argument("--weights", choices=("ema", "model"), default="ema",
                      help="which weights of a training checkpoint (default: ema, else model)")
    group = conv.add_mutually_exclusive_group()
    group.add_argument("--preset", default="RPFM-B/2", help="RPFM preset of the target model (default: RPFM-B/2)")
    group.add_argument("--config", help="a JSON file of RPFMConfig fields instead of a preset")
    conv.add_argument("--codec", required=True, help="latent codec folder (e.g. a copy of sd-vae-ft-mse)")
    conv.add_argument("--pose-encoder", help="DINOv2-B folder (needed when the model uses the global pose branch)")
    conv.add_argument("--source-encoder", help="DINOv2-G folder (needed for the global source branch)")
    conv.add_argument("--out", required=True, help="output pipeline folder")
    conv.set_defaults(func=cmd_convert)

    from .animate import add_cli as add_animate_cli
    from .data.synthetic import add_cli as add_data_cli
    from .evaluate import add_cli as add_eval_cli
    from .pose.cli import add_cli as add_pose_cli
    from .speed import add_cli as add_bench_cli
    from .train.cli import add_cli as add_train_cli

    for add in (add_data_cli, add_pose_cli, add_train_cli, add_eval_cli, add_bench_cli, add_animate_cli):
        add(sub)

    env = sub.add_parser("env", help="print versions, devices and the backend chosen for every op")
    env.set_defaults(func=cmd_env)
    return parser


# ---------------------------------------------------------------------------------------------------- errors
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError, ImportError)
DEBUG_ENV = "RPFM_DEBUG"
# Python argument names that library errors start with, and the flag the CLI user typed instead.
_FLAG_NAMES = {"source_image": "--source", "target_pose": "--pose", "num_steps": "--steps",
               "guidance_scale": "--guidance", "batch_size": "--batch-size", "max_frames": "--max-frames",
               "out_dir": "--out", "fps": "--fps", "seed": "--seed"}


def command_label(args: argparse.Namespace) -> str:
    """'generate', 'data synth', ...: the words the user typed to pick the command."""
    words = [args.command] + [v for k, v in sorted(vars(args).items()) if k.endswith("_command") and
                              k != "command" and isinstance(v, str)]
    return " ".join(words)


def flag_names(message: str, names: dict[str, str] | None = None) -> str:
    """Rewrite Python argument names at the start of an error message (``num_steps: ...``, ``source_image[0]: ...``)
    and ``resize=True`` hints into the CLI flags the user typed."""
    names = {**_FLAG_NAMES, **(names or {})}
    message = message.replace("pass resize=True", "pass --resize")
    m = re.match(r"^(\w+)(?=[\[:])", message)
    if m and m.group(1) in names:
        message = names[m.group(1)] + message[m.end():]
    return message


def _describe(e: BaseException) -> str:
    """The message; an OS error raised by the system (errno set) as "Permission denied: 'path'"."""
    if isinstance(e, OSError) and e.strerror:
        files = "".join(f" '{f}'" for f in (e.filename, e.filename2) if f)
        return f"{e.strerror}:{files}" if files else e.strerror
    return str(e) or type(e).__name__


def run(args: argparse.Namespace) -> int:
    """Run a parsed command. Errors meant for users (bad values, missing or unreadable files, OS errors) print one
    line ``rpfm COMMAND: error: ...`` and return 2; warnings print as ``rpfm COMMAND: warning: ...``. Anything else
    is reported the same way as an unexpected error (set RPFM_DEBUG=1 for the traceback)."""
    label = command_label(args)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"rpfm {label}: warning: {message}", file=sys.stderr, flush=True)

    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"rpfm {label}: interrupted", file=sys.stderr)
            return 130
        except USER_ERRORS as e:
            if debug:
                raise
            print(f"rpfm {label}: error: {flag_names(_describe(e), getattr(args, '_flag_names', None))}",
                  file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 -- the last line of defence against a raw traceback
            if debug:
                raise
            print(f"rpfm {label}: error: unexpected {type(e).__name__}: {str(e).rstrip('.')}. This is a bug in "
                  f"rpfm; run again with {DEBUG_ENV}=1 for the traceback and report it.", file=sys.stderr)
            return 2


def main(argv: list[str] | None = None) -> int:
    """The ``rpfm`` command. Returns the exit code: 0, or 2 for any error (argparse's included); ``--help`` exits."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        return e.code if isinstance(e.code, int) else 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
