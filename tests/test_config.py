import json

import pytest

from rpfm.config import BRANCHES, PRESETS, RPFMConfig, from_dict, get_preset, to_dict, to_json


def test_presets_have_paper_shapes():
    b = PRESETS["RPFM-B/2"]
    assert (b.depth, b.hidden_size, b.num_heads, b.head_dim) == (12, 768, 12, 64)
    assert (b.latent_size, b.num_tokens, b.in_channels) == (32, 256, 12)
    assert PRESETS["RPFM-XL/2"].head_dim == 72
    assert PRESETS["RPFM-B/2-512"].num_tokens == 1024
    assert PRESETS["medium"] is PRESETS["RPFM-B/2"] and PRESETS["large"] is PRESETS["RPFM-L/2"]


def test_ablation_switches():
    assert PRESETS["RPFM-B/2-no-concat"].in_channels == 4
    assert PRESETS["RPFM-B/2-no-aggregation"].branches == ()
    assert "local_pose" not in PRESETS["RPFM-B/2-three-branch"].branches


def test_json_round_trip():
    cfg = RPFMConfig(image_size=512, branches=BRANCHES[:2])
    again = from_dict(json.loads(to_json(cfg)))
    assert again == cfg and again.num_tokens == 1024


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match="unknown keys \\['hidden'\\].*hidden_size"):
        from_dict({**to_dict(RPFMConfig()), "hidden": 3})


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=770), "multiple of num_heads"),
    (dict(image_size=100), "multiple of latent_downsample"),
    (dict(depth=0), "positive int"),
    (dict(branches=("global_pose", "bogus")), "branches"),
    (dict(image_size=264), "divisible by patch_size"),
])
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RPFMConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown name 'RPFM-Q/2'.*RPFM-B/2"):
        get_preset("RPFM-Q/2")
