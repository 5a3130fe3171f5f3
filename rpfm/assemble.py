"""``rpfm assemble``: an untrained pipeline folder from local component folders (an SD-VAE, DINOv2-B, DINOv2-G).

    rpfm assemble --codec ./sd-vae-ft-mse --pose-encoder ./dinov2-base --source-encoder ./dinov2-giant \
        --preset RPFM-B/2 --out ./rpfm-b2-init

The model config is the preset with every width that the components decide taken from them: the latent channels
and downsampling of the codec, the token widths and counts of the two DINOv2 encoders. With the paper's components
(sd-vae-ft-mse, dinov2-base, dinov2-giant) the preset is unchanged; other components (e.g. tiny test folders) adapt
it, and the command says what changed. The result loads with ``RPFMPipeline.from_pretrained`` and is the starting
point of ``rpfm train`` runs that fine-tune from it, of conversions, and of speed measurements with random weights.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .config import RPFMConfig


def adapt_config(cfg: RPFMConfig, codec: Any, pose_encoder: Any, source_encoder: Any) -> tuple[RPFMConfig, dict]:
    """``cfg`` with the widths the components fix; returns (config, {field: (preset value, new value)})."""
    wanted: dict[str, int] = {"latent_channels": codec.latent_channels, "latent_downsample": codec.downsample}
    for enc, dim in ((pose_encoder, "pose_feature_dim"), (source_encoder, "source_feature_dim")):
        if enc is not None:
            wanted[dim] = enc.feature_dim
            wanted["num_global_tokens"] = enc.num_tokens
    if pose_encoder is not None and source_encoder is not None and pose_encoder.num_tokens != source_encoder.num_tokens:
        raise ValueError(f"--pose-encoder / --source-encoder: they give {pose_encoder.num_tokens} and "
                         f"{source_encoder.num_tokens} tokens; the model needs one count for both. Use DINOv2 folders "
                         "with the same image_size and patch_size (224 / 14 -> 257 tokens).")
    changed = {k: (getattr(cfg, k), v) for k, v in wanted.items() if getattr(cfg, k) != v}
    return (cfg.replace(**{k: v for k, (_, v) in changed.items()}) if changed else cfg), changed


def assemble_pipeline(codec: str | os.PathLike, pose_encoder: str | os.PathLike | None,
                      source_encoder: str | os.PathLike | None, config: RPFMConfig, *, seed: int = 0):
    """Load the component folders and build an untrained RPFMPipeline; returns (pipeline, changed widths)."""
    import torch

    from .codec import load_codec
    from .features import load_feature_extractor
    from .model import RPFM
    from .pipeline import RPFMPipeline

    for flag, folder, branch in (("--pose-encoder", pose_encoder, "global_pose"),
                                 ("--source-encoder", source_encoder, "global_source")):
        if folder is None and branch in config.branches:
            raise ValueError(f"{flag}: the model uses the {branch} branch and needs a DINOv2 folder "
                             f"({'dinov2-base' if branch == 'global_pose' else 'dinov2-giant'}).")
    codec_m = load_codec(codec)
    pose_m = load_feature_extractor(pose_encoder) if pose_encoder is not None else None
    src_m = load_feature_extractor(source_encoder) if source_encoder is not None else None
    cfg, changed = adapt_config(config, codec_m, pose_m, src_m)
    torch.manual_seed(seed)
    return RPFMPipeline(RPFM(cfg), codec_m, pose_m, src_m), changed


def cmd_assemble(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .fileio import check_output_folder, read_json

    check_output_folder(args.out, "--out")             # before any work: not a file, writable
    cfg = config_mod.from_dict(read_json(args.config, "--config")) if args.config else \
        config_mod.get_preset(args.preset)
    pipe, changed = assemble_pipeline(args.codec, args.pose_encoder, args.source_encoder, cfg, seed=args.seed)
    pipe.save_pretrained(args.out)
    n = sum(p.numel() for p in pipe.model.parameters() if p.requires_grad)
    print(f"wrote untrained pipeline folder {args.out}: {n:,} trainable parameters, {cfg.image_size}x"
          f"{cfg.image_size} images" + ("; adapted to the components: " + ", ".join(
              f"{k} {a} -> {b}" for k, (a, b) in changed.items()) if changed else ""), file=sys.stderr)
    return 0


def add_cli(subparsers: Any) -> None:
    from .cli_support import plain, seed_arg
    from .config import PRESETS

    p = subparsers.add_parser("assemble", help="build an untrained pipeline folder from local SD-VAE and DINOv2 "
                              "folders", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", required=True, help="SD-VAE folder (diffusers AutoencoderKL: config.json + "
                   "diffusion_pytorch_model.safetensors), or an rpfm codec folder")
    p.add_argument("--pose-encoder", help="DINOv2-B folder (transformers: config.json + model.safetensors)")
    p.add_argument("--source-encoder", help="DINOv2-G folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", default="RPFM-B/2", choices=sorted(PRESETS), metavar="PRESET",
                       help=f"model preset (default: RPFM-B/2; one of {', '.join(sorted(PRESETS))})")
    group.add_argument("--config", help="a JSON file of RPFMConfig fields instead of a preset")
    p.add_argument("--seed", type=seed_arg, default=0, help="initialisation seed (default: 0)")
    p.add_argument("--out", required=True, help="output pipeline folder")
    p.set_defaults(func=cmd_assemble)


__all__ = ["adapt_config", "assemble_pipeline", "add_cli"]
