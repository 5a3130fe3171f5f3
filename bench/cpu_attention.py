"""CPU attention: rpfm._C's short-sequence kernel (``torch.ops.rpfm.attention``) vs SDPA, on q/k/v views of one
fused qkv tensor as the model makes them, at the demo model's heads (B·H = 48, Dh = 64) and longer sequences.

    python bench/cpu_attention.py                  # T = 64, 256, 1024
    python bench/cpu_attention.py --T 64 128 --reps 100

Prints ms per call (median of --reps after a warm-up) and the largest error of each against a float64 reference.
The ``cpp`` attention backend takes sequences up to ``rpfm.ops.cpu.CPP_ATTENTION_MAX_T`` tokens; this is how that
cutoff was chosen.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from rpfm import _ext
from rpfm.ops.reference import attention_ref


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def ms_per_call(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--batch", type=int, default=16, help="B (the CFG-doubled batch of 8)")
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    ok, why = _ext.cpu_fused_ops()
    if not ok or not hasattr(torch.ops.rpfm, "attention"):
        raise SystemExit(f"rpfm._C has no CPU attention kernel: {why}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch} H={args.heads} "
          f"Dh={args.head_dim}, q/k/v = views of one (B, T, 3, H, Dh) tensor")
    print("| T | rpfm._C ms | SDPA ms | SDPA / ours | max err ours | max err SDPA |")
    print("|---|---|---|---|---|---|")
    for T in args.T:
        q, k, v = torch.randn(args.batch, T, 3, args.heads, args.head_dim).unbind(2)
        truth = attention_ref(q.double(), k.double(), v.double()).float()
        ours = ms_per_call(lambda: torch.ops.rpfm.attention(q, k, v), args.reps)
        base = ms_per_call(lambda: sdpa(q, k, v), args.reps)
        e_ours = (torch.ops.rpfm.attention(q, k, v) - truth).abs().max().item()
        e_sdpa = (sdpa(q, k, v) - truth).abs().max().item()
        print(f"| {T} | {ours:.3f} | {base:.3f} | {base / ours:.2f}x | {e_ours:.1e} | {e_sdpa:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
