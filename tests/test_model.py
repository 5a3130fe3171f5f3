"""The eager reference model: shapes, parameter counts, initialisation, and fused schedule == textbook DiT."""
import numpy as np
import pytest
import torch

from rpfm.config import PRESETS, tiny_config
from rpfm.model import RPFM, sincos_pos_embed_2d

from .conftest import randomize, tiny_inputs


@pytest.mark.parametrize("preset, count", [
    ("RPFM-B/2", 131_958_806), ("RPFM-L/2", 460_293_142), ("RPFM-S/2", 33_539_606), ("RPFM-XL/2", 677_741_078),
    ("RPFM-B/2-512", 131_960_342), ("RPFM-B/2-three-branch", 131_943_957), ("RPFM-B/2-no-concat", 131_934_230),
])
def test_trainable_parameter_count_matches_spec(preset, count):
    with torch.device("meta"):
        model = RPFM(PRESETS[preset])
    assert model.num_trainable_parameters() == count
    assert not model.pos_embed.requires_grad


def test_state_dict_names_follow_dit_and_xmdpt():
    with torch.device("meta"):
        keys = set(RPFM(PRESETS["RPFM-B/2"]).state_dict())
    for k in ["pos_embed", "x_embedder.proj.weight", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.bias",
              "blocks.11.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "blocks.3.adaLN_modulation.1.weight",
              "final_layer.linear.weight", "final_layer.adaLN_modulation.1.bias", "src_embedder.proj.weight",
              "pose_embedder.proj.weight", "mlp_dino_pose.2.weight", "mlp_dino_img.0.weight",
              "conv1d_pose.0.weight", "conv1d_global.2.bias", "conv1d_local.0.weight",
              "conv1d_local_pose.0.weight", "mlp_final.0.weight"]:
        assert k in keys, k
    with torch.device("meta"):
        m = RPFM(PRESETS["RPFM-B/2"])
    assert tuple(m.x_embedder.proj.weight.shape) == (768, 12, 2, 2)
    assert tuple(m.final_layer.linear.weight.shape) == (16, 768)
    assert tuple(m.conv1d_local[0].weight.shape) == (1, 256, 1)


def test_zero_init_gives_zero_velocity_and_identity_blocks():
    cfg = tiny_config()
    model = RPFM(cfg).eval()
    inp = tiny_inputs(cfg, 2)
    v = model(inp["x"], inp["t"], z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    assert v.shape == (2, 4, 8, 8)
    assert torch.count_nonzero(v) == 0      # final layer zero-initialised
    h = torch.randn(2, cfg.num_tokens, cfg.hidden_size)
    c = torch.randn(2, cfg.hidden_size)
    assert torch.equal(model.blocks[0](h, c), h)   # adaLN-Zero: gates are 0


def test_fused_schedule_equals_textbook_dit(tiny_model):
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, 3)
    cond = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    v = tiny_model.velocity(inp["x"], inp["t"], cond)
    v_ref = tiny_model.forward_textbook(inp["x"], inp["t"], cond)
    assert v.abs().mean() > 0.01
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-5)


def test_batch_one_and_zero_dim_t(tiny_model):
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, 1)
    kw = dict(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    v_vec = tiny_model(inp["x"], inp["t"], **kw)
    v_scalar = tiny_model(inp["x"], inp["t"][0], **kw)
    torch.testing.assert_close(v_vec, v_scalar)


def test_keep_mask_zero_is_null_condition(tiny_model):
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, 2)
    cond = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"],
                                        keep_mask=torch.tensor([1.0, 0.0]))
    assert cond.y[0].abs().sum() > 0 and cond.y[1].abs().sum() == 0
    null = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"],
                                        f_src=inp["f_src"]).with_null()
    assert null.y.shape[0] == 4 and null.y[2:].abs().sum() == 0
    torch.testing.assert_close(null.ctx[:2], null.ctx[2:])


def test_each_branch_changes_the_condition(tiny_model):
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, 2)
    base = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"]).y
    for key in ("z_s", "z_p", "f_pose", "f_src"):
        changed = dict(inp)
        changed[key] = inp[key] + 1.0
        y = tiny_model.prepare_condition(z_s=changed["z_s"], z_p=changed["z_p"], f_pose=changed["f_pose"],
                                         f_src=changed["f_src"]).y
        assert not torch.allclose(y, base), key


@pytest.mark.parametrize("overrides", [dict(input_concat=False), dict(branches=()),
                                       dict(branches=("local_source", "local_pose"))])
def test_ablations_run(overrides):
    cfg = tiny_config(**overrides)
    model = randomize(RPFM(cfg)).eval()
    inp = tiny_inputs(cfg, 2)
    f_pose = inp["f_pose"] if "global_pose" in cfg.branches else None
    f_src = inp["f_src"] if "global_source" in cfg.branches else None
    cond = model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=f_pose, f_src=f_src)
    v = model.velocity(inp["x"], inp["t"], cond)
    torch.testing.assert_close(v, model.forward_textbook(inp["x"], inp["t"], cond), rtol=1e-5, atol=1e-5)
    if not cfg.branches:   # ablation 2: the null condition equals the condition, so CFG has no effect
        assert torch.count_nonzero(cond.y) == 0


def test_sincos_matches_closed_form():
    emb = sincos_pos_embed_2d(8, 4)              # (16, 8): first 4 dims encode the column w, last 4 the row h
    assert emb.shape == (16, 8)
    token = 1 * 4 + 2                            # row 1, column 2
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    np.testing.assert_allclose(emb[token, :4], np.concatenate([np.sin(2 * omega), np.cos(2 * omega)]), rtol=1e-6)
    np.testing.assert_allclose(emb[token, 4:], np.concatenate([np.sin(1 * omega), np.cos(1 * omega)]), rtol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (dict(z_s=torch.randn(2, 4, 16, 16)), "z_s: expected shape \\(B, 4, 8, 8\\)"),
    (dict(z_p=torch.randn(3, 4, 8, 8)), "z_p: batch size 3"),
    (dict(f_pose=None), "f_pose: this model's config uses the global branches"),
    (dict(f_src=torch.randn(2, 10, 40)), "f_src: expected shape \\(2, 257, 40\\)"),
    (dict(z_s=np.zeros((2, 4, 8, 8))), "z_s: expected a torch.Tensor"),
])
def test_bad_inputs_raise_clear_errors(tiny_model, bad, match):
    inp = tiny_inputs(tiny_model.config, 2)
    kw = dict(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        tiny_model(inp["x"], inp["t"], **kw)
