"""gelu_tanh on the MLP hidden activation (B, T, mlp_ratio * D): eager vs torch.compile vs Triton (bf16)."""
from __future__ import annotations

import pytest

from rpfm.ops.reference import gelu_tanh_ref


def setup_gelu(impl, randn, batch, cfg):
    x = randn(batch, cfg.num_tokens, int(cfg.hidden_size * cfg.mlp_ratio))
    return impl(gelu_tanh_ref, "gelu", "gelu_tanh_triton"), (x,), {}


@pytest.mark.benchmark(group="gelu")
def test_gelu(run_bench, impl, randn, batch, cfg, preset):
    run_bench(*setup_gelu(impl, randn, batch, cfg), group=f"gelu-{preset}")
