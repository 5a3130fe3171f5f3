"""The whole DiT velocity forward: fused (auto backends) vs eager reference vs torch.compile of the eager model.

One forward of the CFG-doubled batch (B = 16 = 8 images x 2) at preset shapes, bf16, random weights. Records
TFLOP/s (FLOPs counted once with torch.utils.flop_counter) and the fraction of the measured bf16 matmul peak of
this GPU (an 8192^3 product, measured once per session), plus the GPU time with the forward replayed in a CUDA
graph (what the graph sampler sees, without host launch cost).
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rpfm.ops import use_backend

from .conftest import BATCH, DTYPE, ROUNDS, WARMUP_ROUNDS, device_time, random_model


@functools.lru_cache(maxsize=1)
def matmul_peak_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=DTYPE)
    b = torch.randn(8192, 8192, device="cuda", dtype=DTYPE)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12


def setup_dit(variant: str, cfg):
    model = random_model(cfg)
    g = torch.Generator(device="cuda").manual_seed(0)
    h, C = cfg.latent_size, cfg.latent_channels
    lat = lambda: torch.randn(BATCH, C, h, h, generator=g, device="cuda", dtype=DTYPE)  # noqa: E731
    with torch.no_grad():
        cond = model.prepare_condition(
            z_s=lat(), z_p=lat(),
            f_pose=torch.randn(BATCH, cfg.num_global_tokens, cfg.pose_feature_dim, device="cuda", dtype=DTYPE),
            f_src=torch.randn(BATCH, cfg.num_global_tokens, cfg.source_feature_dim, device="cuda", dtype=DTYPE))
    x, t = lat(), torch.rand(BATCH, device="cuda")
    if variant in ("eager", "compiled"):
        with use_backend("*", "eager"):
            model.opset(x.device, x.dtype)            # resolve (and cache) the eager ops now
    else:
        model.opset(x.device, x.dtype)
    fn = model.velocity
    if variant == "compiled":
        fn = torch.compile(model.velocity, dynamic=False)
    return torch.no_grad()(fn), (x, t, cond), model


@pytest.mark.parametrize("variant", ["eager", "compiled", "fused"])
def test_dit_forward(benchmark, variant, preset, cfg):
    fn, args, model = setup_dit(variant, cfg)
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    flops = counter.get_total_flops()

    def synced():
        out = fn(*args)
        torch.cuda.synchronize()
        return out

    benchmark.group = f"dit-{preset}"
    benchmark.pedantic(synced, rounds=max(10, ROUNDS // 5), warmup_rounds=WARMUP_ROUNDS, iterations=1)
    with torch.no_grad():
        device_s, how = device_time(fn, args, {}, reps=3, replays=5)
    peak = matmul_peak_tflops()
    info = benchmark.extra_info
    info["backends"] = model.opset(args[0].device, args[0].dtype).names
    info["gflop"] = round(flops / 1e9, 2)
    info["matmul_peak_tflops"] = round(peak, 1)
    if benchmark.stats is not None:
        info["tflops"] = round(flops / benchmark.stats.stats.median / 1e12, 1)
    info["device_ms"] = round(device_s * 1e3, 3)
    info["tflops_device"] = round(flops / device_s / 1e12, 1)
    info["fraction_of_peak_device"] = round(flops / device_s / 1e12 / peak, 3)
    info["device_timing"] = how
