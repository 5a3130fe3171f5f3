"""The whole model on its fast paths (Triton kernels, fused attention) against the eager reference, on a GPU.

The k x eager rule: |fused - truth| <= 2 |eager_lowp - truth| + floor, with the truth the eager model in fp32.
Skipped with a reason where there is no CUDA device (CPU parity of each kernel runs in tests/kernels).
"""
import pytest
import torch

from rpfm.config import PRESETS
from rpfm.model import RPFM
from rpfm.ops import use_backend
from rpfm.testing import ATOL, assert_close_to_ref

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (fast paths are GPU)")]


def _model(preset: str, dtype, eager: bool) -> RPFM:
    torch.manual_seed(0)
    model = RPFM(PRESETS[preset])
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    model = model.to("cuda", dtype).eval()
    if eager:
        model.set_backends(**{op: "eager" for op in ("adaln_modulate", "gated_residual_adaln", "patchify",
                                                     "unpatchify", "gelu_tanh")}, attention="math")
    return model


@pytest.mark.parametrize("preset", ["RPFM-S/2", "RPFM-B/2"])
@pytest.mark.parametrize("batch", [1, 16])
def test_fused_model_matches_eager(preset, batch):
    cfg = PRESETS[preset]
    g = torch.Generator(device="cuda").manual_seed(1)
    h = cfg.latent_size
    lat = lambda: torch.randn(batch, cfg.latent_channels, h, h, generator=g, device="cuda")  # noqa: E731
    x, z_s, z_p = lat(), lat(), lat()
    f_pose = torch.randn(batch, 257, cfg.pose_feature_dim, generator=g, device="cuda")
    f_src = torch.randn(batch, 257, cfg.source_feature_dim, generator=g, device="cuda")
    t = torch.rand(batch, generator=g, device="cuda")
    outs = {}
    with torch.no_grad():
        for name, dtype, eager in [("truth", torch.float32, True), ("eager", torch.bfloat16, True),
                                   ("fused", torch.bfloat16, False)]:
            m = _model(preset, dtype, eager)
            c = lambda a: a.to(dtype)  # noqa: E731
            outs[name] = m(c(x), t, z_s=c(z_s), z_p=c(z_p), f_pose=c(f_pose), f_src=c(f_src)).float()
            if name == "fused":
                assert m.opset(x.device, dtype).names["adaln_modulate"] == "triton"
    assert outs["truth"].abs().mean() > 1e-3
    # outputs were stored in bf16: the floor is bf16's, on the output's scale (the helper would assume fp32 here)
    atol = ATOL[torch.bfloat16] * max(1.0, outs["truth"].abs().max().item())
    assert_close_to_ref(outs["fused"], outs["truth"], outs["eager"], atol=atol, name=f"{preset} velocity")


def test_fused_pipeline_images_match_eager():
    from rpfm import RPFMPipeline
    from rpfm.codec import PixelCodec
    from rpfm.demo import demo_config

    def pipe(eager):
        torch.manual_seed(0)
        m = RPFM(demo_config())
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.03)
        pl = RPFMPipeline(m, PixelCodec(downsample=4)).to("cuda", torch.float32)
        if eager:
            with use_backend("*", "eager"):
                pl.model.reset_backends()
                pl.model.opset(pl.device, pl.dtype)
        return pl

    g = torch.Generator().manual_seed(0)
    src, pose = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g)
    kw = dict(num_steps=4, guidance_scale=1.1, output_type="pt", sampler_backend="eager")
    a = pipe(False)(src, pose, generator=torch.Generator().manual_seed(0), **kw).images
    b = pipe(True)(src, pose, generator=torch.Generator().manual_seed(0), **kw).images
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
