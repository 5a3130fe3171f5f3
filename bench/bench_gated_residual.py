"""gated_residual_adaln: eager reference vs torch.compile(reference) vs the Triton kernel (bf16, preset shapes)."""
from __future__ import annotations

import pytest

from rpfm.ops.reference import gated_residual_adaln_ref


def setup_gated_residual(impl, randn, batch, cfg):
    B, T, D = batch, cfg.num_tokens, cfg.hidden_size
    args = (randn(B, T, D), randn(B, T, D), randn(B, D), randn(B, D), randn(B, D))   # x, y, gate, shift, scale
    return impl(gated_residual_adaln_ref, "gated_residual", "gated_residual_adaln_triton"), args, {"eps": 1e-6}


@pytest.mark.benchmark(group="gated_residual")
def test_gated_residual(run_bench, impl, randn, batch, cfg, preset):
    run_bench(*setup_gated_residual(impl, randn, batch, cfg), group=f"gated_residual-{preset}")
