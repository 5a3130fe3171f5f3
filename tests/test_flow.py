"""Flow-matching conventions (spec §1) checked against closed forms."""
import math

import pytest
import torch

from rpfm.flow import (SIGMA_MIN, GuidedVelocity, cfg_combine, check_guidance_scale, condition_keep_mask,
                       flow_matching_loss, interpolate, target_velocity)

from .conftest import tiny_inputs


def test_path_endpoints_and_derivative():
    z0, z1 = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(interpolate(z0, z1, torch.zeros(3, dtype=torch.float64)), z0 + SIGMA_MIN * z1)
    torch.testing.assert_close(interpolate(z0, z1, torch.ones(3, dtype=torch.float64)), z1)
    t, h = torch.full((3,), 0.37, dtype=torch.float64), 1e-6
    numeric = (interpolate(z0, z1, t + h) - interpolate(z0, z1, t - h)) / (2 * h)
    torch.testing.assert_close(numeric, target_velocity(z0, z1), rtol=1e-6, atol=1e-6)


def test_cfg_combine_identities():
    vc, vu = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(cfg_combine(vc, vu, 1.0), vc)
    torch.testing.assert_close(cfg_combine(vc, vu, 0.0), vu)
    torch.testing.assert_close(cfg_combine(vc, vu, 1.1), vu + 1.1 * (vc - vu))


def test_loss_is_plain_mse_of_velocity(tiny_model):
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, 2)
    z0, noise, t = inp["x"], torch.randn_like(inp["x"]), torch.tensor([0.2, 0.9])
    kw = dict(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    loss = flow_matching_loss(tiny_model, z0, t=t, noise=noise, **kw)
    z_t = (1 - t.view(2, 1, 1, 1)) * z0 + (SIGMA_MIN + (1 - SIGMA_MIN) * t.view(2, 1, 1, 1)) * noise
    v = tiny_model(z_t, t, **kw)
    expected = ((v - ((1 - SIGMA_MIN) * noise - z0)) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_keep_mask_drop_rate():
    mask = condition_keep_mask(20000, generator=torch.Generator().manual_seed(0))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs((1 - mask.mean().item()) - 0.1) < 0.01


class _Spy(torch.nn.Module):
    """Records batch sizes; velocity = y-dependent constant so the CFG combination is checkable."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def velocity(self, x, t, cond):
        self.calls.append(x.shape[0])
        return x * 0 + cond.y[:, :1, None, None]


def test_guided_velocity_batches_once_and_skips_uncond_at_w1(tiny_model):
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, 2)
    cond = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    spy = _Spy()
    f = GuidedVelocity(spy, cond, guidance_scale=1.0)
    f(inp["x"], torch.tensor(0.5))
    assert spy.calls == [2] and f.nfe == 1
    g = GuidedVelocity(spy, cond, guidance_scale=1.5)
    out = g(inp["x"], torch.tensor(0.5))
    assert spy.calls == [2, 4] and g.nfe == 1
    # null half has y = 0, so v = 0 + 1.5 * (y - 0)
    torch.testing.assert_close(out, 1.5 * cond.y[:, :1, None, None].expand_as(out))


@pytest.mark.parametrize("w", [-0.1, math.nan, math.inf])
def test_bad_guidance(w):
    with pytest.raises(ValueError, match="guidance_scale"):
        check_guidance_scale(w)
    with pytest.raises(TypeError, match="guidance_scale"):
        check_guidance_scale("1.1")
