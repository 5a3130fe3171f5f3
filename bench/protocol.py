"""The speed protocol (RPFM Table 3 after X-MDPT), whole pipeline, several variants side by side.

Paper protocol: batch 8, 256x256, medium model (RPFM-B/2), 60 Euler steps, guidance 1.1 (CFG doubles the batch
inside the sampler), mean +- std of 10 timed runs after warm-up, per stage (VAE encode, DINOv2 features +
condition, sampling, VAE decode). Encoders are random-initialised at full size (timing does not depend on the
weights). The implementation is ``rpfm.speed`` (also behind ``rpfm bench``); this script runs several variants on
the same inputs and adds streaming (batch 1, 10 steps, source cached) in frames/s:

  eager-fp32     the reference: eager ops (use_backend("*", "eager")), Python Euler loop, fp32
  eager-bf16     the same in bf16
  compile-bf16   torch.compile(mode="max-autotune") of the eager velocity network, bf16
  ours           bf16, auto backends (Triton kernels, flash/SDPA attention) + the C++ CUDA-graph sampler

On CPU the default is the tiny configuration (--preset tiny) with eager-fp32 and ours-fp32: read the ratio.

    python bench/protocol.py --device cuda --variants eager-fp32,eager-bf16,ours --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from rpfm.speed import SpeedProtocol, random_pipeline, run_protocol


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default=None, help="RPFM preset or tiny (default: RPFM-B/2 on CUDA, tiny on CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--guidance", type=float, default=1.1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--stream-steps", type=int, default=10)
    p.add_argument("--stream-frames", type=int, default=30)
    p.add_argument("--variants", default=None,
                   help="comma-separated (default: eager-fp32,eager-bf16,ours on CUDA; eager-fp32,ours-fp32 on CPU)")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    preset = args.preset or ("RPFM-B/2" if cuda else "tiny")
    variants = (args.variants or ("eager-fp32,eager-bf16,ours" if cuda else "eager-fp32,ours-fp32")).split(",")
    protocol = SpeedProtocol(batch=args.batch, steps=args.steps, guidance=args.guidance, warmup=args.warmup,
                             runs=args.runs, stream_frames=args.stream_frames, stream_steps=args.stream_steps)
    report = run_protocol(lambda dev, dtype: random_pipeline(preset, dev, dtype), [v for v in variants if v],
                          protocol, device, model=f"preset {preset} (random weights)",
                          log=lambda m: print(f"[protocol] {m}", file=sys.stderr, flush=True))
    print(report["table"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
