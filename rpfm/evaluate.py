"""``rpfm eval``: generate every test pair of a dataset, save the images, compute the metrics, write a report.

- Generation is resumable: each output is saved under a stable name (``<source>__<target>.png``, atomic writes)
  and pairs whose file exists are skipped, so an interrupted run continues where it stopped.
- Sharding: under ``torchrun`` every rank takes the pairs i with i % WORLD_SIZE == RANK; rank 0 computes the
  metrics once every rank's images are there.
- Metrics: SSIM and PSNR (rpfm.metrics, CFLD protocol; ``--metric-size 256x176`` to resize back to DeepFashion's
  frame, or the native size for other data), next to two baselines computed the same way on the same pairs:
  copying the source image, and the mean training image. LPIPS runs when ``--lpips-alexnet`` and ``--lpips-heads``
  name local weight files; a missing file is reported and the other metrics still run.
- Output: ``metrics.json``, ``metrics.md`` (a Markdown table) and ``grid.png`` (source | target pose | output |
  ground truth for the first pairs) in ``--out``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .fileio import atomic_write_bytes, atomic_write_json


def _name(src: str, tgt: str) -> str:
    return f"{Path(src).stem}__{Path(tgt).stem}.png"


def _save_png(arr: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def generate_pairs(pipe, dataset, out_dir: Path, *, num_steps: int, guidance_scale: float, solver: str = "euler",
                   batch_size: int = 16, seed: int = 0, rank: int = 0, world_size: int = 1,
                   limit: int | None = None) -> int:
    """Generate the dataset's pairs (this rank's share) into ``out_dir/images``; returns how many were made."""
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    todo = [i for i in range(rank, n, world_size)
            if not (img_dir / _name(*dataset.pairs[i])).is_file()]
    made = 0
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        items = [dataset[i] for i in idx]
        src = torch.stack([it["source"] for it in items])
        pose = torch.stack([it["target_pose"] for it in items])
        # one generator per pair, seeded by its index: an output does not depend on batching or resumption
        noise = torch.cat([pipe.prepare_noise(1, torch.Generator().manual_seed(seed * 1_000_003 + i)) for i in idx])
        with torch.no_grad():
            cond = pipe.encode_condition(src, pose)
            x0, _, _ = pipe._sample(cond, noise, num_steps=num_steps, guidance_scale=guidance_scale, solver=solver,
                                    sampler_backend="auto", atol=1e-5, rtol=1e-5)
            images = ((pipe.codec.decode(x0.to(pipe.dtype)).float().clamp(-1, 1) + 1) / 2).cpu()
        for i, img in zip(idx, images):
            _save_png(img.permute(1, 2, 0).numpy(), img_dir / _name(*dataset.pairs[i]))
            made += 1
    return made


def compute_metrics(dataset, out_dir: Path, *, mean_image: np.ndarray | None = None,
                    metric_size: tuple[int, int] | None = None, limit: int | None = None,
                    lpips_files: tuple[str, str] | None = None) -> dict:
    """SSIM/PSNR (and LPIPS if weights are given) of the saved outputs and of the baselines, on the same pairs."""
    from .metrics import psnr_per_image, ssim_per_image

    n = len(dataset) if limit is None else min(limit, len(dataset))
    img_dir = out_dir / "images"
    expected = {_name(*dataset.pairs[i]) for i in range(n)}
    present = {p.name for p in img_dir.glob("*.png")} if img_dir.is_dir() else set()
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        raise ValueError(f"eval: {len(missing)} generated images are missing from '{img_dir}' (e.g. {missing[:3]}). "
                         f"Run the generation again (it resumes) or check --limit.")
    if extra:
        raise ValueError(f"eval: '{img_dir}' holds {len(extra)} images that match no pair of this dataset (e.g. "
                         f"{extra[:3]}). Use a fresh --out folder for another dataset or split.")
    if n == 0:
        raise ValueError("eval: the dataset has no pairs.")
    outputs, targets, sources = [], [], []
    for i in range(n):
        item = dataset[i]
        outputs.append(_load(img_dir / _name(*dataset.pairs[i])))
        targets.append(((item["target"] + 1) / 2).permute(1, 2, 0).numpy())
        sources.append(((item["source"] + 1) / 2).permute(1, 2, 0).numpy())
    if outputs[0].shape != targets[0].shape:
        raise ValueError(f"eval: generated images are {outputs[0].shape[:2]}, the dataset's are "
                         f"{targets[0].shape[:2]}. Generate at the dataset's image_size.")
    out, tgt, src = (np.stack(a) for a in (outputs, targets, sources))
    candidates = {"model": out, "baseline: copy source": src}
    if mean_image is not None:
        candidates["baseline: mean training image"] = np.broadcast_to(mean_image, tgt.shape).copy()
    result: dict = {"pairs": n, "metric_size": list(metric_size) if metric_size else list(tgt.shape[1:3]),
                    "rows": {}}
    lpips_model, lpips_error = None, None
    if lpips_files:
        try:
            from .metrics import LPIPS

            lpips_model = LPIPS.from_files(*lpips_files)
        except (FileNotFoundError, RuntimeError) as e:
            lpips_error = str(e)
    for name, pred in candidates.items():
        row = {"ssim": float(np.mean(ssim_per_image(pred, tgt, size=metric_size))),
               "psnr": float(np.mean(psnr_per_image(pred, tgt, size=metric_size)))}
        if lpips_model is not None:
            from .metrics import lpips

            to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float()  # noqa: E731
            row["lpips"] = float(lpips(to_t(pred), to_t(tgt), model=lpips_model))
        result["rows"][name] = row
    if lpips_error:
        result["lpips_error"] = lpips_error
    return result


def mean_training_image(dataset, *, max_items: int = 2000) -> np.ndarray:
    """The per-pixel mean of (up to ``max_items``) training targets, (H, W, 3) in [0, 1]."""
    n = min(len(dataset), max_items)
    acc = None
    for i in range(n):
        t = ((dataset[i]["target"] + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)
        acc = t if acc is None else acc + t
    return (acc / n).astype(np.float32)


def markdown(result: dict) -> str:
    keys = [k for k in ("ssim", "psnr", "lpips") if any(k in r for r in result["rows"].values())]
    lines = ["| | " + " | ".join(k.upper() for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" if k == "ssim" or k == "lpips" else f"{row[k]:.2f}"
                                                 for k in keys) + " |")
    return "\n".join(lines)


def save_grid(dataset, out_dir: Path, n: int = 6) -> Path:
    rows = []
    for i in range(min(n, len(dataset))):
        item = dataset[i]
        out = _load(out_dir / "images" / _name(*dataset.pairs[i]))
        rows.append(np.concatenate([((item["source"] + 1) / 2).permute(1, 2, 0).numpy(),
                                    item["target_pose"].permute(1, 2, 0).numpy(), out,
                                    ((item["target"] + 1) / 2).permute(1, 2, 0).numpy()], axis=1))
    grid = np.concatenate(rows, axis=0)
    scale = max(1, 256 // grid.shape[1] * 4) if grid.shape[1] < 512 else 1
    img = Image.fromarray((grid * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(out_dir / "grid.png", buf.getvalue())


def run_eval(args: argparse.Namespace) -> dict:
    from .data.pairs import PairFolderDataset
    from .pipeline import RPFMPipeline

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    pipe = RPFMPipeline.from_pretrained(args.model, device=device)
    size = pipe.config.image_size
    test = PairFolderDataset(args.data, args.split, image_size=size, augment=False)
    out_dir = Path(args.out)
    t0 = time.perf_counter()
    made = generate_pairs(pipe, test, out_dir, num_steps=args.steps, guidance_scale=args.guidance,
                          solver=args.solver, batch_size=args.batch_size, seed=args.seed, rank=rank,
                          world_size=world, limit=args.limit)
    gen_s = time.perf_counter() - t0
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        dist.barrier()
        if rank != 0:
            return {}
    mean = mean_training_image(PairFolderDataset(args.data, "train", image_size=size, augment=False))
    metric_size = tuple(int(v) for v in args.metric_size.split("x")) if args.metric_size else None
    lp = (args.lpips_alexnet, args.lpips_heads) if args.lpips_alexnet or args.lpips_heads else None
    result = compute_metrics(test, out_dir, mean_image=mean, metric_size=metric_size, limit=args.limit,
                             lpips_files=lp)
    result.update({"model": str(args.model), "data": str(args.data), "split": args.split, "steps": args.steps,
                   "guidance": args.guidance, "solver": args.solver, "generated_now": made,
                   "generation_s": round(gen_s, 2), "device": str(device)})
    atomic_write_json(out_dir / "metrics.json", result)
    table = markdown(result)
    atomic_write_bytes(out_dir / "metrics.md", (table + "\n").encode())
    save_grid(test, out_dir, n=min(6, args.limit or 6))
    print(table)
    return result


def add_cli(sub) -> None:
    p = sub.add_parser("eval", help="generate a dataset's test pairs and compute SSIM/PSNR/LPIPS with baselines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="pipeline folder")
    p.add_argument("--data", required=True, help="dataset root in the CFLD layout (e.g. from `rpfm data synth`)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--out", required=True, help="output folder (images/, metrics.json, metrics.md, grid.png)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--solver", default="euler", choices=("euler", "heun", "dopri5"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    p.add_argument("--metric-size", default=None, help="HxW to resize to before metrics, e.g. 256x176 (DeepFashion)")
    p.add_argument("--lpips-alexnet", default=None, help="torchvision alexnet-owt-7be5be79.pth")
    p.add_argument("--lpips-heads", default=None, help="lpips weights/v0.1/alex.pth")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=lambda a: (run_eval(a), 0)[1])
