"""CPU: the fast path (auto backends + C++ loop with hoisted per-step work) vs the eager reference vs torch.compile,
interleaved run by run so a noisy machine's load drifts hit every variant alike.

    python bench/cpu_fast_path.py --steps 20 --reps 5          # the shipped demo model, batch 8, guidance 1.1
    python bench/cpu_fast_path.py --release runs/x-export      # any exported pipeline folder instead

Times the sampling stage (the whole sampler call: NFE velocity evaluations on the CFG-doubled batch) and, for the
fast path, the first image of a freshly loaded pipeline (load + encode + sample + decode). Variants:
  eager     every op on its eager reference (use_backend("*", "eager")), Python Euler loop
  ours      auto backends (oneDNN linear with fused bias/GELU, fewer-pass adaLN, SDPA) + C++ loop, hoisted tables
  compile   eager ops, torch.compile(mode="max-autotune") of the velocity network (its cold compile reported)
Runs each repetition in the order given and then reversed (both orders), and prints the median, min and max ms
per sampling call and the ratios to eager (of the medians, and the median of the per-repetition ratios).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rpfm.demo import load_release
from rpfm.ops import use_backend
from rpfm.speed import inputs


def make(variant: str, release: str | None):
    pipe = load_release(*([release] if release else []))[0]
    if variant in ("eager", "compile"):
        with use_backend("*", "eager"):
            pipe.model.reset_backends()
            pipe.model.opset(pipe.device, pipe.dtype)
    if variant == "compile":
        pipe.model.velocity = torch.compile(pipe.model.velocity, mode="max-autotune", dynamic=False)
    return pipe


def sample_once(pipe, variant, cond, x1, steps, guidance):
    backend = "auto" if variant == "ours" else "eager"
    t0 = time.perf_counter()
    with torch.no_grad():
        pipe._sample(cond, x1, num_steps=steps, guidance_scale=guidance, solver="euler", sampler_backend=backend,
                     atol=0, rtol=0)
    return (time.perf_counter() - t0) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--guidance", type=float, default=1.1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--variants", default="eager,ours,compile")
    p.add_argument("--release", default=None, help="a pipeline folder (default: the shipped demo model)")
    args = p.parse_args(argv)
    variants = args.variants.split(",")

    t0 = time.perf_counter()
    first = load_release(*([args.release] if args.release else []))[0]
    src, pose = inputs(first, 1, torch.device("cpu"))
    first(src, pose, num_steps=args.steps, guidance_scale=args.guidance, output_type="pt")
    print(f"ours: first image (load + encode + {args.steps} steps + decode, batch 1): "
          f"{time.perf_counter() - t0:.2f} s")

    pipes, cold = {}, {}
    src, pose = inputs(first, args.batch, torch.device("cpu"))
    cond = first.encode_condition(src, pose)
    x1 = first.prepare_noise(args.batch, torch.Generator().manual_seed(0))
    for v in variants:
        pipes[v] = make(v, args.release)
        t = time.perf_counter()
        sample_once(pipes[v], v, cond, x1, args.steps, args.guidance)           # warm-up (compile happens here)
        cold[v] = time.perf_counter() - t
    times = {v: [] for v in variants}
    for r in range(args.reps):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            times[v].append(sample_once(pipes[v], v, cond, x1, args.steps, args.guidance))
    ref = statistics.median(times["eager"]) if "eager" in times else None
    print(f"demo model, batch {args.batch} (CFG {2 * args.batch}), {args.steps} Euler steps, guidance "
          f"{args.guidance}, {args.reps} interleaved reps (orders alternate), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    # "paired": the median over reps of eager's time / the variant's time in the same rep (the two ran back to back),
    # which cancels the slow drifts of a shared machine better than a ratio of medians.
    print("| variant | sampling ms median | min | max | vs eager (medians) | vs eager (paired) | first call s |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        med = statistics.median(times[v])
        ratio = f"{ref / med:.2f}x" if ref else "-"
        paired = (f"{statistics.median(e / t for e, t in zip(times['eager'], times[v])):.2f}x"
                  if "eager" in times else "-")
        print(f"| {v} | {med:.0f} | {min(times[v]):.0f} | {max(times[v]):.0f} | {ratio} | {paired} | {cold[v]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
