"""adaln_modulate: eager reference vs torch.compile(reference) vs the Triton kernel, on preset shapes (bf16)."""
from __future__ import annotations

import pytest

from rpfm.ops.reference import adaln_modulate_ref


def setup_adaln(impl, randn, batch, cfg):
    B, T, D = batch, cfg.num_tokens, cfg.hidden_size
    args = (randn(B, T, D), randn(B, D), randn(B, D))                     # x, shift, scale
    return impl(adaln_modulate_ref, "adaln", "adaln_modulate_triton"), args, {"eps": 1e-6}


@pytest.mark.benchmark(group="adaln")
def test_adaln(run_bench, impl, randn, batch, cfg, preset):
    run_bench(*setup_adaln(impl, randn, batch, cfg), group=f"adaln-{preset}")
