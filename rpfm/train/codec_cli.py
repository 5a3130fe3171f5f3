"""``rpfm codec train | export | eval``: train a latent codec (AutoencoderKL) on a dataset's images.

    rpfm codec train --config configs/codec_synth128.json            # [--resume [PATH]] [--out-dir DIR]
    rpfm codec export --checkpoint runs/codec128 --out codecs/synth128
    rpfm codec eval --codec codecs/synth128 --data data/synth128 --split test [--out report.json]
"""
from __future__ import annotations

import argparse
import json
import sys


def cmd_train(args: argparse.Namespace) -> int:
    from .codec_config import load_config
    from .codec_trainer import train_codec

    cfg = load_config(args.config)
    changes = {k: v for k, v in (("out_dir", args.out_dir), ("resume", args.resume)) if v is not None}
    if changes:
        cfg = cfg.replace(**changes)
    result = train_codec(cfg)
    print(f"trained to step {result.step}; checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..fileio import check_output_folder
    from .codec_export import export_codec

    check_output_folder(args.out, "--out")             # before any work: not a file, writable
    path = export_codec(args.checkpoint, args.out, overwrite=args.overwrite)
    print(f"wrote {path} (EMA weights; load with rpfm.codec.load_codec or SDVAECodec.from_pretrained)",
          file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..codec import load_codec
    from ..fileio import atomic_write_json, check_output_file
    from .codec_export import evaluate_codec
    from .codec_trainer import image_files, load_images

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: expected a positive number of images, got {args.limit}.")
    if args.out:
        check_output_file(args.out, "--out")          # before any work: its folder exists and is writable
    codec = load_codec(args.codec)
    files = image_files(args.data, args.split)[:args.limit]
    with torch.no_grad():
        report = {"codec": args.codec, "data": args.data, "split": args.split,
                  **evaluate_codec(codec, load_images(files, None))}
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.out:
        atomic_write_json(args.out, report)
    print(text)
    return 0


def add_cli(subparsers) -> None:
    """Register ``codec`` (with train / export / eval) on an argparse subparsers object."""
    codec = subparsers.add_parser(
        "codec", help="train, export and score a latent codec (AutoencoderKL)",
        description="Train a diffusers AutoencoderKL (the class of SD-VAE) on a dataset's images, export it as a "
        "codec folder with a unit-variance scaling factor, and score its reconstructions (PSNR / SSIM).")
    sub = codec.add_subparsers(dest="codec_command", required=True)
    train = sub.add_parser("train", help="train a codec from a config file",
                           description="Writes OUT_DIR/log.jsonl, OUT_DIR/checkpoints/step_*/ (atomic, exact resume) "
                           "and OUT_DIR/samples/ (originals over reconstructions).",
                           epilog="example: rpfm codec train --config configs/codec_synth128.json")
    train.add_argument("--config", required=True, help="CodecTrainConfig as .json")
    train.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                       help="continue from the newest checkpoint in out_dir, or from PATH (a checkpoint folder)")
    train.add_argument("--out-dir", help="override the config's out_dir")
    train.set_defaults(func=cmd_train, _flag_names={"out_dir": "out_dir (--out-dir)"})

    export = sub.add_parser("export", help="write a codec checkpoint's EMA weights as a codec folder",
                            epilog="example: rpfm codec export --checkpoint runs/codec128 --out codecs/synth128")
    export.add_argument("--checkpoint", required=True,
                        help="a checkpoints/step_XXXXXXXX folder, or a run's out_dir (its newest checkpoint)")
    export.add_argument("--out", required=True, help="output codec folder")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.set_defaults(func=cmd_export)

    ev = sub.add_parser("eval", help="reconstruction PSNR / SSIM of a codec on a dataset split",
                        epilog="example: rpfm codec eval --codec codecs/synth128 --data data/synth128 --split test")
    ev.add_argument("--codec", required=True, help="a codec folder (rpfm codec export output, or an SD-VAE folder)")
    ev.add_argument("--data", required=True, help="dataset root in the CFLD layout ({split}_highres/)")
    ev.add_argument("--split", default="test", help="train or test (default: test)")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N images")
    ev.add_argument("--out", default=None, help="also write the report as JSON here")
    ev.set_defaults(func=cmd_eval)
