"""Command line: ``rpfm demo|generate|convert|assemble|data|pose|train|codec|export|eval|bench|animate|serve|env``.

Run ``rpfm COMMAND --help`` for details. Each command group registers itself with an ``add_cli(subparsers)``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli_support import (DTYPES, SEED_MAX, command_label, flag_names, float_in, int_at_least,  # noqa: F401
                          positive_int, run, seed_arg)  # run: the error handler, re-exported for callers
from .cli_support import check_out_image as _check_out_image
from .cli_support import device as _device
from .cli_support import save_image as _save


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import GRID_LABELS, grid, load_release

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
    _save(grid(rows, labels=GRID_LABELS), path)
    print(f"wrote {args.out}: {len(rows)} held-out pairs (source | target pose | generated | ground truth) in "
          f"{time.perf_counter() - t0:.2f} s on {device}, {out.nfe} steps, sampler {out.backends['sampler']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .batch import generate_batch, jobs_from_folders, jobs_from_pairs_file, load_pose
    from .pipeline import RPFMPipeline

    batch = args.pairs is not None or (args.source is not None and Path(args.source).is_dir())
    if args.pairs is None and (args.source is None or args.pose is None):
        raise ValueError("--source and --pose: give both (files for one image, folders for every source x pose), "
                         "or --pairs pairs.csv.")
    if args.pairs is not None and (args.source is not None or args.pose is not None):
        raise ValueError("--pairs: give either --pairs or --source/--pose, not both.")
    if not batch and Path(args.pose).is_dir():
        raise ValueError(f"--pose: '{args.pose}' is a folder but --source is a file. Give two folders (every source x "
                         "every pose) or two files.")
    if batch:
        from .fileio import check_output_folder

        out = check_output_folder(args.out, "--out")               # before loading the model
    else:
        out = _check_out_image(args.out)
    device = _device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    pipe = RPFMPipeline.from_pretrained(args.model, device=device, dtype=dtype)
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, solver=args.solver,
                resize=args.resize or False)
    t0 = time.perf_counter()
    if batch:
        jobs = jobs_from_pairs_file(args.pairs) if args.pairs else jobs_from_folders(args.source, args.pose)
        made, skipped = generate_batch(pipe, jobs, args.out, batch_size=args.batch_size, seed=args.seed,
                                       progress=not args.no_progress, **call)
        print(f"wrote {made} images to {args.out} in {time.perf_counter() - t0:.2f} s on {device}"
              + (f" ({skipped} already there, skipped)" if skipped else ""))
        return 0
    if args.no_progress:
        pipe.set_progress_bar_config(disable=True)
    pose = load_pose(args.pose, pipe.config.image_size)
    result = pipe(args.source, pose, generator=torch.Generator().manual_seed(args.seed), **call)
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
    from .framing import RESIZE_MODES
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

    gen = sub.add_parser("generate", help="generate images from source photos and target poses (one or a batch)",
                         description="Load a pipeline folder (from save_pretrained; default: the shipped demo model) "
                         "and render the person in SOURCE in the pose POSE (keypoints or an OpenPose-style skeleton "
                         "image, RGB on black). Batches: --pairs pairs.csv (header source,pose[,out]) or two "
                         "folders (every source x every pose), written to the --out folder with a progress bar; "
                         "images already there are skipped, so an interrupted run resumes.",
                         epilog="examples: rpfm generate --source person.png --pose pose.json --out out.png   |   "
                         "rpfm generate --model ./rpfm-b2 --pairs pairs.csv --out results/ --steps 60 --guidance 1.1")
    gen.add_argument("--model", default="demo",
                     help="pipeline folder written by RPFMPipeline.save_pretrained (default: demo, the shipped model)")
    gen.add_argument("--source", help="source person image, or a folder of them (image_size x image_size, or "
                     "--resize)")
    gen.add_argument("--pose", help="target pose: keypoints (.json OpenPose or rpfm JSON, .npy, PIDM .txt) or a "
                     "rendered skeleton image, or a folder of them")
    gen.add_argument("--pairs", help="CSV with a header source,pose[,out]: one output per row (paths relative to the "
                     "CSV's folder)")
    gen.add_argument("--out", required=True, help="output image (one pair): .png, .jpg, .webp, .bmp or .tif (the "
                     "format follows the extension); or a folder (batches)")
    gen.add_argument("--batch-size", type=positive_int, default=8, help="pairs per pipeline call in batches (default: 8)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    gen.add_argument("--steps", type=positive_int, default=60, help="solver steps (default: 60, the paper's NFE)")
    gen.add_argument("--guidance", type=float_in(0), default=1.1, help="guidance scale (default: 1.1; 1.0 = off)")
    gen.add_argument("--solver", choices=SOLVERS, default="euler")
    gen.add_argument("--seed", type=seed_arg, default=0)
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    gen.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    gen.add_argument("--resize", nargs="?", const="stretch", choices=RESIZE_MODES, default=None,
                     help="bring inputs of another size to the model's square: crop (square around the person, "
                     "aspect kept), fit (whole photo, padded) or stretch (the default when --resize has no value)")
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
    from .assemble import add_cli as add_assemble_cli
    from .data.cli import add_cli as add_data_cli
    from .evaluate import add_cli as add_eval_cli
    from .pose.cli import add_cli as add_pose_cli
    from .serve.cli import add_cli as add_serve_cli
    from .speed import add_cli as add_bench_cli
    from .train.cli import add_cli as add_train_cli
    from .train.codec_cli import add_cli as add_codec_cli

    for add in (add_data_cli, add_pose_cli, add_train_cli, add_codec_cli, add_eval_cli, add_bench_cli,
                add_animate_cli, add_assemble_cli, add_serve_cli):
        add(sub)

    env = sub.add_parser("env", help="print versions, devices and the backend chosen for every op")
    env.set_defaults(func=cmd_env)
    return parser


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
