"""patchify (with the conditioning concat) and unpatchify: eager vs torch.compile vs Triton (bf16, preset shapes)."""
from __future__ import annotations

import pytest

from rpfm.ops.reference import patchify_ref, unpatchify_ref


def setup_patchify(impl, randn, batch, cfg):
    C, h = cfg.latent_channels, cfg.latent_size
    x, ctx = randn(batch, C, h, h), randn(batch, cfg.in_channels - C, h, h)   # noisy latent; source + pose latents
    return impl(patchify_ref, "patchify", "patchify_triton"), (x, ctx), {"patch_size": cfg.patch_size}


def setup_unpatchify(impl, randn, batch, cfg):
    p, C = cfg.patch_size, cfg.latent_channels
    y = randn(batch, cfg.num_tokens, p * p * C)                                # final-layer output tokens
    return impl(unpatchify_ref, "patchify", "unpatchify_triton"), (y,), {"patch_size": p, "channels": C}


@pytest.mark.benchmark(group="patchify")
def test_patchify(run_bench, impl, randn, batch, cfg, preset):
    run_bench(*setup_patchify(impl, randn, batch, cfg), group=f"patchify-{preset}")


@pytest.mark.benchmark(group="unpatchify")
def test_unpatchify(run_bench, impl, randn, batch, cfg, preset):
    run_bench(*setup_unpatchify(impl, randn, batch, cfg), group=f"unpatchify-{preset}")
