"""Attention: every available backend (flash_attn, xformers, sdpa, math) at preset shapes, bf16, in TFLOP/s.

FLOPs = 4 * B * H * T^2 * Dh (QK^T and PV, 2 per multiply-add). Backends that are not available here are skipped
with their probe's reason, so the table lists competitors by what imports.
"""
from __future__ import annotations

import pytest
import torch

from rpfm.ops import registry

from .conftest import BATCH, DTYPE, ROUNDS, WARMUP_ROUNDS, device_time

BACKENDS = [b.name for b in registry.backends("attention")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention(benchmark, backend, preset, cfg, randn):
    b = registry._REGISTRY["attention"][backend]
    ok, reason = b.availability()
    if not ok:
        pytest.skip(f"{backend}: {reason}")
    why = b.check(device="cuda", dtype=DTYPE, head_dim=cfg.head_dim)
    if why:
        pytest.skip(f"{backend}: {why}")
    B, T, H, Dh = BATCH, cfg.num_tokens, cfg.num_heads, cfg.head_dim
    q, k, v = randn(B, T, H, Dh), randn(B, T, H, Dh), randn(B, T, H, Dh)

    def synced():
        out = b.fn(q, k, v)
        torch.cuda.synchronize()
        return out

    benchmark.group = f"attention-{preset}"
    benchmark.pedantic(synced, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    flops = 4 * B * H * T * T * Dh
    if benchmark.stats is not None:
        benchmark.extra_info["tflops"] = round(flops / benchmark.stats.stats.median / 1e12, 2)
    device_s, how = device_time(b.fn, (q, k, v), {})
    benchmark.extra_info["device_ms"] = round(device_s * 1e3, 4)
    benchmark.extra_info["tflops_device"] = round(flops / device_s / 1e12, 2)
    benchmark.extra_info["device_timing"] = how
