"""The speed protocol (RPFM Table 3 after X-MDPT), whole pipeline, with a per-stage breakdown.

Paper protocol: batch 8, 256x256, medium model (RPFM-B/2), 60 Euler steps, guidance 1.1 (CFG doubles the batch
inside the sampler), mean +- std of 10 timed runs after warm-up. We time the whole pipeline (DINOv2-B on the pose,
DINOv2-G on the source, VAE encodes, sampling, VAE decode) and each stage. Encoders are random-initialised at
full size (timing does not depend on the weights). Variants, all in one run on the same inputs:

  eager-fp32     the reference: eager ops (RPFM_FORCE_EAGER), Python Euler loop, fp32
  eager-bf16     the same in bf16
  compile-bf16   torch.compile(mode="max-autotune") of the eager velocity network, bf16
  ours           bf16, auto backends (Triton kernels, flash/SDPA attention) + the C++ CUDA-graph sampler

Also: streaming (batch 1, 10 steps, guidance 1.1, source features cached) in frames/s, and the time to the first
image after loading. On CPU, run a small configuration (--preset tiny) and read the ours/eager ratio.

    python bench/protocol.py --device cuda --variants eager-fp32,eager-bf16,ours --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager

import torch

from rpfm.config import PRESETS, tiny_config
from rpfm.model import RPFM
from rpfm.ops import use_backend

STAGES = ("features", "encode", "sample", "decode")


def build_encoders(full_size: bool, device, dtype):
    """Random-initialised SD-VAE, DINOv2-B and DINOv2-G (real architectures) or tiny stand-ins."""
    from diffusers import AutoencoderKL
    from transformers import Dinov2Config, Dinov2Model

    from rpfm.codec import SDVAECodec
    from rpfm.features import GlobalFeatureExtractor

    if full_size:
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=256, norm_num_groups=32)
        dino_b = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, image_size=518, patch_size=14)
        dino_g = Dinov2Config(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24,
                              intermediate_size=6144, image_size=518, patch_size=14, use_swiglu_ffn=True)
    else:
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=64, norm_num_groups=8)
        dino_b = Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                              image_size=224, patch_size=14)
        dino_g = Dinov2Config(hidden_size=40, num_hidden_layers=1, num_attention_heads=2, intermediate_size=80,
                              image_size=224, patch_size=14)
    codec = SDVAECodec(vae)
    return (codec.to(device, dtype), GlobalFeatureExtractor(Dinov2Model(dino_b)).to(device, dtype),
            GlobalFeatureExtractor(Dinov2Model(dino_g)).to(device, dtype))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def variant_backends(variant: str):
    if variant.startswith("eager") or variant.startswith("compile"):
        with use_backend("*", "eager"):
            yield
    else:
        yield


def make_pipeline(args, variant: str):
    from rpfm.pipeline import RPFMPipeline

    device = torch.device(args.device)
    dtype = torch.float32 if variant.endswith("fp32") else torch.bfloat16
    cfg = tiny_config() if args.preset == "tiny" else PRESETS[args.preset]
    torch.manual_seed(0)
    with variant_backends(variant):
        model = RPFM(cfg)
        with torch.no_grad():   # random weights everywhere (adaLN-Zero init would make the DiT output 0)
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.02)
        codec, pose_enc, src_enc = build_encoders(args.preset != "tiny", device, dtype)
        pipe = RPFMPipeline(model, codec, pose_enc, src_enc).to(device, dtype)
        pipe.model.opset(device, dtype)   # resolve backends now, under the variant's override
    if variant.startswith("compile"):
        pipe.model.velocity = torch.compile(pipe.model.velocity, mode="max-autotune", dynamic=False)
    return pipe


def run_once(pipe, src, pose, *, steps, guidance, backend, device, stage_times: dict | None):
    """One full generation; optionally records per-stage wall times (synchronised between stages)."""
    t = [time.perf_counter()]

    def mark():
        sync(device)
        t.append(time.perf_counter())

    with torch.no_grad():
        cfg = pipe.config
        z_s = pipe.codec.encode(src)
        z_p = pipe.codec.encode(pose * 2 - 1)
        if stage_times is not None:
            mark()
        f_pose = pipe.pose_encoder(pose) if "global_pose" in cfg.branches else None
        f_src = pipe.source_encoder(src) if "global_source" in cfg.branches else None
        cond = pipe.model.prepare_condition(z_s=z_s, z_p=z_p, f_pose=f_pose, f_src=f_src)
        if stage_times is not None:
            mark()
        x1 = pipe.prepare_noise(src.shape[0], torch.Generator().manual_seed(0))
        x0, _, _ = pipe._sample(cond, x1, num_steps=steps, guidance_scale=guidance, solver="euler",
                                sampler_backend=backend, atol=1e-5, rtol=1e-5)
        if stage_times is not None:
            mark()
        img = pipe.codec.decode(x0)
        mark()
    if stage_times is not None:
        for name, a, b in zip(("encode", "features", "sample", "decode"), t[:-1], t[1:]):
            stage_times.setdefault(name, []).append((b - a) * 1e3)
    return img


def bench_variant(args, variant: str) -> dict:
    device = torch.device(args.device)
    backend = "eager" if variant.startswith(("eager", "compile")) else "auto"
    t_load = time.perf_counter()
    pipe = make_pipeline(args, variant)
    size = pipe.config.image_size
    g = torch.Generator().manual_seed(1)
    src = (torch.rand(args.batch, 3, size, size, generator=g) * 2 - 1).to(device, pipe.dtype)
    pose = torch.rand(args.batch, 3, size, size, generator=g).to(device, pipe.dtype)
    with variant_backends(variant):
        run_once(pipe, src, pose, steps=args.steps, guidance=args.guidance, backend=backend, device=device,
                 stage_times=None)
        first_image_s = time.perf_counter() - t_load
        for _ in range(args.warmup):
            run_once(pipe, src, pose, steps=args.steps, guidance=args.guidance, backend=backend, device=device,
                     stage_times=None)
        totals, stages = [], {}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            run_once(pipe, src, pose, steps=args.steps, guidance=args.guidance, backend=backend, device=device,
                     stage_times=None)
            totals.append((time.perf_counter() - t0) * 1e3)
        for _ in range(max(3, args.runs // 3)):
            run_once(pipe, src, pose, steps=args.steps, guidance=args.guidance, backend=backend, device=device,
                     stage_times=stages)
        stream = streaming(pipe, src[:1], pose[:1], args, backend, device)
    out = {"variant": variant, "mean_ms": statistics.mean(totals), "std_ms": statistics.pstdev(totals),
           "median_ms": statistics.median(totals), "first_image_s": first_image_s,
           "stages_ms": {k: statistics.median(v) for k, v in stages.items()}, **stream,
           "backends": {**pipe.model.opset(device, pipe.dtype).names}}
    del pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def streaming(pipe, src, pose, args, backend, device) -> dict:
    """Batch 1 through ``pipe.stream``: source work cached once; per frame the pose branch, sampler, decoder."""
    streamer = pipe.stream(src, num_steps=args.stream_steps, guidance_scale=args.guidance, output_type="pt",
                           sampler_backend=backend, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        streamer(pose)
    sync(device)
    n = args.stream_frames
    t0 = time.perf_counter()
    for _ in range(n):
        streamer(pose)
    sync(device)
    dt = (time.perf_counter() - t0) / n
    return {"stream_fps": 1.0 / dt, "stream_ms_per_frame": dt * 1e3}


def markdown(results: list[dict], args) -> str:
    ref = next((r for r in results if r["variant"] == "eager-fp32"), results[0])
    lines = [f"device: {torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}; torch "
             f"{torch.__version__}; preset {args.preset}; batch {args.batch}; {args.steps} Euler steps; guidance "
             f"{args.guidance}; {args.runs} timed runs after {args.warmup} warm-up",
             "",
             "| variant | whole pipeline ms (mean ± std) | speed-up vs eager-fp32 | features | VAE encode | sampling "
             "| VAE decode | stream fps (b1, %d steps) | first image s |" % args.stream_steps,
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["stages_ms"]
        lines.append(f"| {r['variant']} | {r['mean_ms']:.1f} ± {r['std_ms']:.1f} | "
                     f"{ref['mean_ms'] / r['mean_ms']:.2f}x | {s.get('features', 0):.1f} | {s.get('encode', 0):.1f} "
                     f"| {s.get('sample', 0):.1f} | {s.get('decode', 0):.1f} | {r['stream_fps']:.1f} | "
                     f"{r['first_image_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default=None, help="RPFM preset (default: RPFM-B/2 on CUDA, tiny on CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--guidance", type=float, default=1.1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--stream-steps", type=int, default=10)
    p.add_argument("--stream-frames", type=int, default=30)
    p.add_argument("--variants", default="eager-fp32,eager-bf16,ours")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.preset is None:
        args.preset = "RPFM-B/2" if args.device.startswith("cuda") else "tiny"
    if args.device == "cpu":
        args.variants = args.variants.replace("eager-bf16", "").replace("ours", "ours-fp32")
    results = []
    for variant in [v for v in args.variants.split(",") if v]:
        print(f"[protocol] {variant} ...", file=sys.stderr, flush=True)
        results.append(bench_variant(args, variant))
    table = markdown(results, args)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "table": table}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
