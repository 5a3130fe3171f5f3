"""The sampler loop: eager Python Euler+CFG loop vs the C++ CUDA-graph integrator, same model, same steps.

Batch 8 images (16 with CFG), 10 and 60 Euler steps, guidance 1.1, bf16, fused model ops in both. Reports ms per
call and per step; the difference is what graph capture removes (Python and launch overhead between kernels).
"""
from __future__ import annotations

import pytest
import torch

from rpfm import _ext
from rpfm.integrators import EagerEulerCFG, GraphEulerCFG

from .conftest import DTYPE, random_model


@pytest.mark.parametrize("steps", [10, 60])
@pytest.mark.parametrize("engine", ["eager", "graph"])
def test_integrator(benchmark, engine, steps, preset, cfg):
    if engine == "graph" and not _ext.has_cuda():
        pytest.skip(f"graph engine needs rpfm._C with CUDA: {_ext.EXT_REASON}")
    model = random_model(cfg)
    B, h = 8, cfg.latent_size
    g = torch.Generator(device="cuda").manual_seed(0)
    lat = lambda n: torch.randn(n, cfg.latent_channels, h, h, generator=g, device="cuda", dtype=DTYPE)  # noqa: E731
    with torch.no_grad():
        cond = model.prepare_condition(
            z_s=lat(B), z_p=lat(B),
            f_pose=torch.randn(B, 257, cfg.pose_feature_dim, device="cuda", dtype=DTYPE),
            f_src=torch.randn(B, 257, cfg.source_feature_dim, device="cuda", dtype=DTYPE)).with_null()
    velocity = model.velocity

    def velocity_fn(x_in, t):
        return velocity(x_in, t, cond)

    cls = GraphEulerCFG if engine == "graph" else EagerEulerCFG
    sampler = cls(velocity_fn, batch_size=B, latent_shape=(cfg.latent_channels, h, h), num_steps=steps,
                  guidance_scale=1.1, dtype=DTYPE, device="cuda")
    noise = lat(B)

    def synced():
        out = sampler(noise)
        torch.cuda.synchronize()
        return out

    benchmark.group = f"integrator-{preset}-{steps}steps"
    benchmark.pedantic(synced, rounds=10, warmup_rounds=2, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["ms_per_step"] = round(benchmark.stats.stats.median * 1e3 / steps, 3)
