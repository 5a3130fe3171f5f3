"""``rpfm train`` and ``rpfm export``: ``add_cli(subparsers)`` registers both; ``main(argv)`` runs them standalone.

    python -m rpfm.train.cli train --config examples/train_demo.json
    python -m rpfm.train.cli train --config run.json --resume            # newest checkpoint in out_dir
    python -m rpfm.train.cli train --config run.json --resume runs/x/checkpoints/step_00004000
    python -m rpfm.train.cli export --checkpoint runs/x --out rpfm-x     # EMA weights -> from_pretrained folder

Under torchrun, see ``rpfm.train.distributed`` for the one-node and multi-node commands.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .trainer import train

    cfg = load_config(args.config)
    changes = {}
    if args.out_dir is not None:
        changes["out_dir"] = args.out_dir
    if args.resume is not None:
        changes["resume"] = args.resume
    if changes:
        cfg = cfg.replace(**changes)
    result = train(cfg)
    if result.checkpoint is not None and os.environ.get("RANK", "0") == "0":
        print(f"trained to step {result.step}; checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..fileio import check_output_folder
    from .checkpoint import export_pipeline

    check_output_folder(args.out, "--out")

    path = export_pipeline(args.checkpoint, args.out)
    print(f"wrote {path} (EMA weights; load with RPFMPipeline.from_pretrained)", file=sys.stderr)
    return 0


def add_cli(subparsers) -> None:
    """Register ``train`` and ``export`` on an argparse subparsers object."""
    train = subparsers.add_parser(
        "train", help="train an RPFM model from a config file",
        description="Train with the flow-matching recipe (AdamW, EMA, bf16 autocast on GPU). Writes "
        "OUT_DIR/log.jsonl, OUT_DIR/checkpoints/step_*/ and OUT_DIR/samples/. Launch under torchrun for several GPUs "
        "or nodes.",
        epilog="example: rpfm train --config examples/train_demo.json   |   "
        "torchrun --standalone --nproc_per_node=gpu -m rpfm.train.cli train --config run.json")
    train.add_argument("--config", required=True, help="TrainConfig as .json (or .yaml with PyYAML installed)")
    train.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                       help="continue from the newest checkpoint in out_dir, or from PATH (a checkpoint folder)")
    train.add_argument("--out-dir", help="override the config's out_dir")
    train.set_defaults(func=cmd_train, _flag_names={"out_dir": "out_dir (--out-dir)"})

    export = subparsers.add_parser(
        "export", help="write a checkpoint's EMA weights as a pipeline folder",
        description="Turn a training checkpoint into an RPFMPipeline.from_pretrained folder (EMA weights, with the "
        "codec and feature extractors named in its training config).",
        epilog="example: rpfm export --checkpoint runs/demo --out rpfm-demo")
    export.add_argument("--checkpoint", required=True,
                        help="a checkpoints/step_XXXXXXXX folder, or a run's out_dir (its newest checkpoint)")
    export.add_argument("--out", required=True, help="output pipeline folder")
    export.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rpfm", description="RPFM training commands.")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..cli_support import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
