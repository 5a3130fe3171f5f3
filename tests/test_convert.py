"""Converters from DiT/LFM and X-MDPT layouts (spec §5.4), tested on synthetic state dicts in those layouts."""
import argparse

import pytest
import torch

from rpfm.config import tiny_config
from rpfm.convert import convert_state_dict, detect_source, load_foreign_model, read_checkpoint, unwrap_state_dict
from rpfm.model import RPFM, Condition

from .conftest import randomize, tiny_inputs

CFG = tiny_config()
C, P = CFG.latent_channels, CFG.patch_size


def _dit_like():
    """A 4-channel, unconditional DiT (what LFM trains) and its checkpoint in DiT layout, learned sigma included."""
    dit = randomize(RPFM(CFG.replace(input_concat=False, branches=())), seed=3).eval()
    sd = dict(dit.state_dict())
    w = sd["final_layer.linear.weight"].reshape(P, P, C, -1)
    b = sd["final_layer.linear.bias"].reshape(P, P, C)
    sigma_w, sigma_b = torch.randn_like(w), torch.randn_like(b)
    sd["final_layer.linear.weight"] = torch.cat([w, sigma_w], dim=2).reshape(P * P * 2 * C, -1)
    sd["final_layer.linear.bias"] = torch.cat([b, sigma_b], dim=2).reshape(-1)
    sd["y_embedder.embedding_table.weight"] = torch.randn(1, CFG.hidden_size)
    return dit, sd


def test_dit_checkpoint_converts_and_keeps_its_function(tmp_path):
    dit, sd = _dit_like()
    ckpt = {"model": {f"module.{k}": v + 1 for k, v in sd.items()}, "ema": {f"module.{k}": v for k, v in sd.items()},
            "opt": {"state": {}}, "args": argparse.Namespace(model="DiT-B/2", lr=1e-4), "step": 10}
    torch.save(ckpt, tmp_path / "dit.pt")
    model, report = load_foreign_model(tmp_path / "dit.pt", CFG)
    assert report.source == "dit" and "y_embedder.embedding_table.weight" in report.dropped
    assert "x_embedder.proj.weight" in report.adapted and "final_layer.linear.weight" in report.adapted
    assert "mlp_final.0.weight" in report.initialised
    # with the null condition and the concatenated channels zero-weighted, the converted RPFM is the DiT
    inp = tiny_inputs(CFG, 2)
    cond = model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"],
                                   keep_mask=torch.zeros(2))
    v = model.velocity(inp["x"], inp["t"], cond)
    v_dit = dit.velocity(inp["x"], inp["t"], Condition(torch.zeros(2, CFG.hidden_size), None))
    torch.testing.assert_close(v, v_dit, rtol=1e-5, atol=1e-5)


def test_which_model_weights():
    _, sd = _dit_like()
    ckpt = {"model": {k: v + 1 for k, v in sd.items()}, "ema": sd}
    assert torch.equal(unwrap_state_dict(ckpt, which="model")["blocks.0.attn.qkv.weight"],
                       sd["blocks.0.attn.qkv.weight"] + 1)
    assert torch.equal(unwrap_state_dict(ckpt)["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])
    assert torch.equal(unwrap_state_dict({"model": sd})["pos_embed"], sd["pos_embed"])   # no EMA: model


def _xmdpt_like():
    src = randomize(RPFM(CFG.replace(input_concat=False, branches=("global_pose", "global_source",
                                                                    "local_source"))), seed=4)
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("src_embedder.")}
    sd["pos_embed"] = torch.randn_like(sd["pos_embed"])                   # learnable in X-MDPT
    D, T = CFG.hidden_size, CFG.num_tokens
    sd.update({"decoder_pos_embed": torch.randn(1, T, D), "mask_token": torch.randn(1, 1, D),
               "blocks.0.attn.rel_pos_bias.relative_position_bias_table": torch.randn(52, CFG.num_heads),
               "blocks.0.attn.rel_pos_bias.relative_position_index": torch.zeros(T, T, dtype=torch.long),
               "sideblocks.0.attn.qkv.weight": torch.randn(3 * D, D),
               "sideblocks_cross.0.attn.to_q.weight": torch.randn(D, D)})
    w = sd["final_layer.linear.weight"].reshape(P, P, C, -1)
    sd["final_layer.linear.weight"] = torch.cat([w, torch.randn_like(w)], 2).reshape(P * P * 2 * C, -1)
    b = sd["final_layer.linear.bias"].reshape(P, P, C)
    sd["final_layer.linear.bias"] = torch.cat([b, torch.randn_like(b)], 2).reshape(-1)
    return src, sd


def test_xmdpt_mapping():
    src, sd = _xmdpt_like()
    assert detect_source(sd) == "xmdpt"
    state, report = convert_state_dict(sd, CFG)
    model = RPFM(CFG)
    model.load_state_dict(state, strict=True)
    for k in ("conv1d_local.0.weight", "mlp_dino_img.2.bias", "conv1d_pose.0.weight", "mlp_final.0.weight",
              "blocks.1.mlp.fc2.weight", "t_embedder.mlp.2.weight"):
        assert torch.equal(state[k], sd[k]), k
    x_w = sd["x_embedder.proj.weight"]
    assert torch.equal(state["src_embedder.proj.weight"], x_w)        # X-MDPT's local branch used x_embedder
    assert torch.equal(state["x_embedder.proj.weight"][:, :C], x_w)
    assert torch.count_nonzero(state["x_embedder.proj.weight"][:, C:]) == 0
    assert torch.equal(state["pos_embed"], RPFM(CFG).pos_embed.detach())  # fixed sin-cos, not the learnable one
    for k in ("mask_token", "decoder_pos_embed", "sideblocks.0.attn.qkv.weight",
              "blocks.0.attn.rel_pos_bias.relative_position_index"):
        assert k in report.dropped
    assert "conv1d_local_pose.0.weight" in report.initialised
    # the aggregated vector's shared branches equal the source model's three-branch computation
    inp = tiny_inputs(CFG, 2)
    kw = dict(z_s=inp["z_s"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    src.src_embedder.load_state_dict({"proj.weight": x_w, "proj.bias": sd["x_embedder.proj.bias"]})
    src.pos_embed.data.copy_(model.pos_embed)
    parts = model.conv1d_local(model.src_embedder(inp["z_s"]) + model.pos_embed)
    parts_src = src.conv1d_local(src.src_embedder(kw["z_s"]) + src.pos_embed)
    torch.testing.assert_close(parts, parts_src)


def test_rpfm_layout_passes_through():
    sd = randomize(RPFM(CFG)).state_dict()
    state, report = convert_state_dict(unwrap_state_dict({f"_orig_mod.{k}": v for k, v in sd.items()}), CFG)
    assert report.source == "rpfm" and not report.adapted and not report.initialised
    assert all(torch.equal(state[k], sd[k]) for k in sd)


def test_wrong_size_is_refused():
    _, sd = _dit_like()
    with pytest.raises(ValueError, match="has shape .* but this config needs"):
        convert_state_dict(sd, CFG.replace(hidden_size=64))
    with pytest.raises(ValueError, match="no place in an RPFM"):
        convert_state_dict(sd, CFG.replace(depth=1))
    with pytest.raises(ValueError, match="unknown layout"):
        convert_state_dict(sd, CFG, source="sd15")


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_unsafe_and_broken_files_are_refused(tmp_path, capsys):
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="cannot be read safely"):
        read_checkpoint(tmp_path / "evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out
    _, sd = _dit_like()
    torch.save(sd, tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot be read safely"):
        read_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "none.pt")
