"""HoistedVelocity (per-step work done once per call) equals its eager twin, RPFM.velocity, at every grid point."""
from __future__ import annotations

import pytest
import torch

from rpfm.config import tiny_config
from rpfm.demo import demo_config
from rpfm.hoisted import HoistedVelocity
from rpfm.integrators import time_grid
from rpfm.model import RPFM

from .conftest import randomize, tiny_inputs

CONFIGS = {"tiny-all-branches": tiny_config(), "demo-local": demo_config(),
           "no-concat": tiny_config(input_concat=False)}


def _cond(model, batch, seed, guided=True):
    ins = tiny_inputs(model.config, batch, seed)
    cfg = model.config
    cond = model.prepare_condition(z_s=ins["z_s"], z_p=ins["z_p"],
                                   f_pose=ins["f_pose"] if "global_pose" in cfg.branches else None,
                                   f_src=ins["f_src"] if "global_source" in cfg.branches else None)
    return (cond.with_null() if guided else cond), ins["x"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hoisted_velocity_matches_model_velocity_at_every_step(name):
    model = randomize(RPFM(CONFIGS[name])).eval()
    cond, x = _cond(model, 2, seed=1)
    x_in = torch.cat([x, x])
    t = time_grid(5)[0]
    with torch.no_grad():
        hoisted = HoistedVelocity(model, cond, t)
        for k in range(t.shape[0]):
            ref = model.velocity(x_in, t[k].expand(4), cond)
            torch.testing.assert_close(hoisted(x_in, k), ref, rtol=1e-5, atol=1e-5)


def test_update_follows_a_new_condition_and_in_place_weight_changes():
    model = randomize(RPFM(tiny_config())).eval()
    cond, x = _cond(model, 3, seed=1, guided=False)
    t = time_grid(4)[0]
    with torch.no_grad():
        hoisted = HoistedVelocity(model, cond, t)
        cond2, _ = _cond(model, 3, seed=7, guided=False)
        model.blocks[0].adaLN_modulation[1].weight.mul_(1.5)
        model.x_embedder.proj.weight.add_(0.01)
        hoisted.update(cond2)
        torch.testing.assert_close(hoisted(x, 2), model.velocity(x, t[2].expand(3), cond2), rtol=1e-5, atol=1e-5)


def test_tables_are_contiguous_per_step_and_not_inference_tensors():
    model = randomize(RPFM(tiny_config())).eval()
    cond, _ = _cond(model, 2, seed=1)
    with torch.inference_mode():
        hoisted = HoistedVelocity(model, cond, time_grid(3)[0])
    assert not hoisted.mods.is_inference() and not hoisted.h0.is_inference()
    assert hoisted.mods.shape == (4, 6 * model.config.depth + 2, 4, model.config.hidden_size)
    assert all(m.is_contiguous() for m in hoisted.rows[1])
