"""The reference ops against textbook formulas and torch.nn layers."""
import pytest
import torch
import torch.nn.functional as F

from rpfm.ops import reference as ref
from rpfm.ops.attention import attention_sdpa


def test_adaln_matches_layernorm_formula():
    x, shift, scale = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 12, dtype=torch.float64), \
        torch.randn(2, 12, dtype=torch.float64)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    expected = (x - mu) / torch.sqrt(var + 1e-6) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(ref.adaln_modulate_ref(x, shift, scale), expected)


def test_gated_residual_adaln():
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    gate, shift, scale = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 8)
    x_new, h = ref.gated_residual_adaln_ref(x, y, gate, shift, scale)
    torch.testing.assert_close(x_new, x + gate[:, None] * y)
    torch.testing.assert_close(h, ref.adaln_modulate_ref(x + gate[:, None] * y, shift, scale))


@pytest.mark.parametrize("with_ctx", [False, True])
def test_patchify_matches_conv_patch_embedding(with_ctx):
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    ctx = torch.randn(2, 8, 8, 8, dtype=torch.float64) if with_ctx else None
    full = torch.cat([x, ctx], 1) if with_ctx else x
    conv = torch.nn.Conv2d(full.shape[1], 16, 2, 2).double()
    expected = conv(full).flatten(2).transpose(1, 2)
    patches = ref.patchify_ref(x, ctx, patch_size=2)
    got = F.linear(patches, conv.weight.flatten(1), conv.bias)
    torch.testing.assert_close(got, expected)


def test_unpatchify_matches_dit_layout():
    B, g, p, C = 2, 3, 2, 4
    y = torch.randn(B, g * g, p * p * C)
    out = ref.unpatchify_ref(y, patch_size=p, channels=C)
    # DiT: feature index (p1 * p + p2) * C + c lands at pixel (row*p + p1, col*p + p2)
    for (row, col, p1, p2, c) in [(0, 0, 0, 0, 0), (1, 2, 1, 0, 3), (2, 1, 0, 1, 2)]:
        assert out[1, c, row * p + p1, col * p + p2] == y[1, row * g + col, (p1 * p + p2) * C + c]
    with pytest.raises(ValueError, match="square token grid"):
        ref.unpatchify_ref(torch.randn(1, 6, 16), patch_size=2, channels=4)


def test_attention_math_equals_sdpa():
    q, k, v = (torch.randn(2, 7, 3, 16, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(ref.attention_ref(q, k, v), attention_sdpa(q, k, v))


@pytest.mark.parametrize("cfg", [True, False])
def test_euler_cfg_step(cfg):
    x = torch.randn(3, 4, 2, 2)
    v = torch.randn(6 if cfg else 3, 4, 2, 2)
    dt, w = torch.tensor(-0.1), torch.tensor(1.3)
    expected = x + dt * ((v[3:] + 1.3 * (v[:3] - v[3:])) if cfg else v)
    out = ref.euler_cfg_step_ref(x, v, dt, w)
    assert out is x
    torch.testing.assert_close(x, expected)


def test_gelu_tanh():
    x = torch.randn(100, dtype=torch.float64)
    expected = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(ref.gelu_tanh_ref(x), expected)
