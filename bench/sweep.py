"""Steps x solver sweep: quality against time, to choose how few steps you can afford.

For each solver (Euler, Heun at several step counts; dopri5 at two tolerances) on the same held-out pairs and the
same initial noise: SSIM and PSNR against the ground truth, the RMS distance of the final latents to a
tight-tolerance dopri5 solution (atol = rtol = 1e-6, the ODE's "true" endpoint), NFE, and sampling time.

    python bench/sweep.py --model rpfm/assets/demo-synth128 --data data/synth128 --limit 200 --out bench/sweep
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rpfm.data.pairs import PairFolderDataset
from rpfm.metrics import psnr_per_image, ssim_per_image
from rpfm.pipeline import RPFMPipeline

CONFIGS = [("euler", 5), ("euler", 10), ("euler", 20), ("euler", 30), ("euler", 60),
           ("heun", 3), ("heun", 5), ("heun", 10), ("heun", 30), ("dopri5", 1e-3), ("dopri5", 1e-4)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--out", default="bench/sweep")
    args = p.parse_args(argv)
    pipe = RPFMPipeline.from_pretrained(args.model)
    test = PairFolderDataset(args.data, "test", image_size=pipe.config.image_size, augment=False)
    n = min(args.limit, len(test))
    items = [test[i] for i in range(n)]
    src = torch.stack([it["source"] for it in items])
    pose = torch.stack([it["target_pose"] for it in items])
    tgt = np.stack([((it["target"] + 1) / 2).permute(1, 2, 0).numpy() for it in items])
    noise = torch.cat([pipe.prepare_noise(1, torch.Generator().manual_seed(i)) for i in range(n)])

    def run(solver, arg):
        outs, nfe, seconds = [], 0, 0.0
        for s in range(0, n, args.batch_size):
            with torch.no_grad():
                cond = pipe.encode_condition(src[s:s + args.batch_size], pose[s:s + args.batch_size])
                t0 = time.perf_counter()
                kw = dict(num_steps=arg, atol=1e-5, rtol=1e-5) if solver != "dopri5" else \
                    dict(num_steps=1, atol=arg, rtol=arg)
                x0, k, _ = pipe._sample(cond, noise[s:s + args.batch_size].clone(), guidance_scale=args.guidance,
                                        solver=solver, sampler_backend="eager", **kw)
                seconds += time.perf_counter() - t0
            outs.append(x0)
            nfe = max(nfe, k)
        return torch.cat(outs), nfe, seconds

    ref, ref_nfe, _ = run("dopri5", 1e-6)
    rows = []
    for solver, arg in CONFIGS:
        z, nfe, seconds = run(solver, arg)
        with torch.no_grad():
            img = ((pipe.codec.decode(z).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        rows.append({"solver": solver, "setting": arg, "nfe": nfe, "ms_per_image": 1e3 * seconds / n,
                     "ssim": float(np.mean(ssim_per_image(img, tgt))), "psnr": float(np.mean(psnr_per_image(img, tgt))),
                     "rms_to_reference": float((z - ref).pow(2).mean().sqrt())})
        print(rows[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"pairs": n, "reference_nfe": ref_nfe, "rows": rows}, indent=2))
    lines = [f"{n} held-out pairs, guidance {args.guidance}, CPU; reference: dopri5 atol = rtol = 1e-6 "
             f"(NFE {ref_nfe})", "",
             "| solver | steps / tol | NFE | ms / image (sampling) | SSIM | PSNR | RMS to reference |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['solver']} | {r['setting']} | {r['nfe']} | {r['ms_per_image']:.1f} | {r['ssim']:.4f} | "
                     f"{r['psnr']:.2f} | {r['rms_to_reference']:.4f} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for solver, marker in (("euler", "o"), ("heun", "s"), ("dopri5", "^")):
        rs = [r for r in rows if r["solver"] == solver]
        axes[0].plot([r["nfe"] for r in rs], [r["rms_to_reference"] for r in rs], marker=marker, label=solver)
        axes[1].plot([r["ms_per_image"] for r in rs], [r["ssim"] for r in rs], marker=marker, label=solver)
    axes[0].set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMS distance to dopri5 (1e-6)")
    axes[1].set(xscale="log", xlabel="sampling ms / image (CPU)", ylabel="SSIM vs ground truth")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
