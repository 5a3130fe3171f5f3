"""Command line: ``rpfm demo|generate|convert|data|pose|train|export|eval|bench|animate|serve|env``.

Run ``rpfm COMMAND --help`` for details. Each command group registers itself with an ``add_cli(subparsers)``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine. Use --device cpu.")
    return torch.device(name)


def _save(image, path: Path) -> None:
    from .fileio import atomic_write_bytes
    import io

    if not path.parent.exists():
        raise SystemExit(f"--out: the folder '{path.parent}' does not exist. Create it first.")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import grid, load_release

    device = _device(args.device)
    t0 = time.perf_counter()
    pipe, pairs = load_release()
    pipe.to(device)
    sources = [s for _, s, _, _ in pairs]
    poses = [p for _, _, p, _ in pairs]
    out = pipe(sources, poses, num_steps=args.steps, guidance_scale=args.guidance,
               generator=torch.Generator().manual_seed(args.seed))
    rows = [[s, p, o, t] for (_, s, p, t), o in zip(pairs, out.images)]
    _save(grid(rows), Path(args.out))
    print(f"wrote {args.out}: {len(rows)} held-out pairs (source | target pose | generated | ground truth) in "
          f"{time.perf_counter() - t0:.2f} s on {device}, {out.nfe} steps, sampler {out.backends['sampler']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .pipeline import RPFMPipeline

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
    out = pipe(args.source, pose, num_steps=args.steps, guidance_scale=args.guidance, solver=args.solver,
               generator=generator, resize=args.resize)
    _save(out.images[0], Path(args.out))
    print(f"wrote {args.out} in {time.perf_counter() - t0:.2f} s on {device} (NFE {out.nfe}, {out.backends})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .codec import load_codec
    from .convert import load_foreign_model
    from .features import load_feature_extractor
    from .fileio import read_json
    from .pipeline import RPFMPipeline

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
    demo.add_argument("--out", default="rpfm_demo.png", help="output PNG (default: rpfm_demo.png)")
    demo.add_argument("--steps", type=int, default=20, help="Euler steps (default: 20)")
    demo.add_argument("--guidance", type=float, default=1.0, help="guidance scale (default: 1.0)")
    demo.add_argument("--seed", type=int, default=0)
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
    gen.add_argument("--out", required=True, help="output PNG path")
    gen.add_argument("--steps", type=int, default=60, help="solver steps (default: 60, the paper's NFE)")
    gen.add_argument("--guidance", type=float, default=1.1, help="guidance scale (default: 1.1; 1.0 = off)")
    gen.add_argument("--solver", choices=SOLVERS, default="euler")
    gen.add_argument("--seed", type=int, default=0)
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
    from .serve.cli import add_cli as add_serve_cli
    from .speed import add_cli as add_bench_cli
    from .train.cli import add_cli as add_train_cli
    from .train.codec_cli import add_cli as add_codec_cli

    for add in (add_data_cli, add_pose_cli, add_train_cli, add_codec_cli, add_eval_cli, add_bench_cli,
                add_animate_cli, add_serve_cli):
        add(sub)

    env = sub.add_parser("env", help="print versions, devices and the backend chosen for every op")
    env.set_defaults(func=cmd_env)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; errors meant for users print one line and exit 2 instead of a traceback."""
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        print(f"rpfm {args.command}: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
