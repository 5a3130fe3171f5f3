"""TrainConfig (defaults, validation, JSON/YAML), the dataset registry and its checks, the example config."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rpfm.config import get_preset
from rpfm.train import data as data_mod
from rpfm.train.config import from_dict, load_config, valid_keys
from rpfm.train.data import EpochBatchSampler, TensorPairDataset, build_dataset, check_dataset, register_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_demo.json"
MINIMAL = {"model": "RPFM-S/2", "codec": {"type": "pixel", "downsample": 8}, "dataset": {"name": "tensors"},
           "out_dir": "runs/x", "batch_size": 8, "steps": 10}


def test_defaults_are_the_recipe_of_spec_6():
    cfg = from_dict(MINIMAL)
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay) == (1e-4, (0.9, 0.999), 1e-8, 0.0)
    assert (cfg.ema_decay, cfg.cond_drop, cfg.grad_clip, cfg.grad_accum) == (0.9999, 0.1, None, 1)
    assert (cfg.precision, cfg.keep_checkpoints, cfg.feature_cache, cfg.resume) == ("auto", 3, False, False)
    assert cfg.model_config() == get_preset("RPFM-S/2")


def test_round_trip_and_replace():
    cfg = from_dict({**MINIMAL, "betas": [0.8, 0.99], "grad_clip": 1})
    assert cfg.betas == (0.8, 0.99) and cfg.grad_clip == 1.0
    assert from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.replace(steps=20).steps == 20 and cfg.steps == 10


def test_model_as_dict_or_preset_with_overrides():
    cfg = from_dict({**MINIMAL, "model": {"preset": "RPFM-S/2", "depth": 2}})
    assert cfg.model_config().depth == 2 and cfg.model_config().hidden_size == 384
    with pytest.raises(ValueError, match="'model' is not a valid model config: .*unknown name 'RPFM-Q/2'"):
        from_dict({**MINIMAL, "model": "RPFM-Q/2"})
    with pytest.raises(ValueError, match="'model' is not a valid model config: .*unknown keys \\['width'\\]"):
        from_dict({**MINIMAL, "model": {"width": 3}})


def test_unknown_and_missing_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rate'\]. Valid keys: \[.*'lr'.*\]"):
        from_dict({**MINIMAL, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match=r"missing required keys \['steps'\]"):
        from_dict({k: v for k, v in MINIMAL.items() if k != "steps"})
    assert "ema_decay" in valid_keys() and "feature_cache" in valid_keys()


@pytest.mark.parametrize("key,value,expected", [
    ("batch_size", "8", "'batch_size' must be an int >= 1, got '8' \\(str\\)"),
    ("batch_size", 0, "'batch_size' must be an int >= 1, got 0"),
    ("steps", 2.5, "'steps' must be an int >= 1, got 2.5 \\(float\\)"),
    ("grad_accum", True, "'grad_accum' must be an int >= 1, got True \\(bool\\)"),
    ("lr", -1.0, "'lr' must be a number in \\(0.0, inf\\)"),
    ("lr", "fast", "'lr' must be a number"),
    ("ema_decay", 1.5, "'ema_decay' must be a number in \\[0.0, 1.0\\]"),
    ("cond_drop", float("nan"), "'cond_drop' must be a number"),
    ("betas", [0.9], "'betas' must be a pair of numbers in \\[0, 1\\)"),
    ("precision", "fp16", "'precision' must be one of \\['auto', 'fp32', 'bf16'\\]"),
    ("device", "tpu", "'device' must be"),
    ("feature_cache", "yes", "'feature_cache' must be true or false"),
    ("dataset", "data/", "'dataset' must be a dict with a \"name\""),
    ("codec", 4, "'codec' must be a load_codec dict"),
    ("resume", 3, "'resume' must be true, false or a checkpoint path"),
])
def test_wrong_types_name_the_field(key, value, expected):
    with pytest.raises(ValueError, match=expected):
        from_dict({**MINIMAL, key: value})


def test_yaml_scientific_notation_strings_are_numbers():
    assert from_dict({**MINIMAL, "lr": "1e-4"}).lr == 1e-4        # PyYAML reads 1e-4 as a string


def test_load_json_and_yaml(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text(json.dumps(MINIMAL))
    assert load_config(tmp_path / "a.json").batch_size == 8
    pytest.importorskip("yaml")
    (tmp_path / "a.yaml").write_text("model: RPFM-S/2\ncodec: {type: pixel, downsample: 8}\ndataset: {name: tensors}\n"
                                     "out_dir: runs/x\nbatch_size: 8\nsteps: 10\nlr: 3e-4\nbetas: [0.9, 0.95]\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert (cfg.lr, cfg.betas) == (3e-4, (0.9, 0.95))
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ValueError, match="PyYAML is not installed.*pip install pyyaml.*JSON"):
        load_config(tmp_path / "a.yaml")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "a.toml").write_text("")
    with pytest.raises(ValueError, match="expected a .json, .yaml or .yml file"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path / "b.json")


def test_example_config_is_valid_and_its_dataset_registered():
    cfg = load_config(EXAMPLE)
    assert cfg.dataset["name"] in data_mod.DATASETS
    mcfg = cfg.model_config()
    assert mcfg.latent_channels == 3 * cfg.codec["downsample"] ** 2 and not mcfg.uses_global_features


# ---------------------------------------------------------------------------------------------------- datasets
def pairs(n=6, size=8):
    return TensorPairDataset(torch.zeros(n, 3, size, size), torch.zeros(n, 3, size, size),
                             torch.zeros(n, 3, size, size))


def test_tensor_dataset_file_round_trip_and_checks(tmp_path):
    ds = pairs()
    ds.save(tmp_path / "p.safetensors")
    loaded = build_dataset({"name": "tensors", "path": str(tmp_path / "p.safetensors")})
    assert len(loaded) == 6 and set(loaded[0]) == {"source", "target", "target_pose"}
    with pytest.raises(ValueError, match="poses must lie in \\[0, 1\\]"):
        TensorPairDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), -torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="shapes differ"):
        TensorPairDataset(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4), torch.zeros(2, 3, 4, 4))


def test_registry_errors_and_registration(tmp_path):
    with pytest.raises(FileNotFoundError, match="path '.*nope' does not exist"):
        build_dataset({"name": "tensors", "path": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="unknown name 'webdataset'. Registered datasets: \\[.*'tensors'"):
        build_dataset({"name": "webdataset"})
    with pytest.raises(ValueError, match="dataset 'tensors': bad options"):
        build_dataset({"name": "tensors", "path": str(tmp_path), "flip": True})
    register_dataset("test-six", lambda: pairs())
    try:
        assert len(build_dataset({"name": "test-six"})) == 6
    finally:
        data_mod.DATASETS.pop("test-six")


def test_check_dataset():
    check_dataset(pairs(), batch_size=6, image_size=8)
    with pytest.raises(ValueError, match="batch_size: 7 is larger than the dataset \\(6 items\\)"):
        check_dataset(pairs(), batch_size=7, image_size=8)
    with pytest.raises(ValueError, match="empty"):
        check_dataset(pairs(0), batch_size=1, image_size=8)
    with pytest.raises(ValueError, match="must be a float tensor \\(3, 16, 16\\) \\(the model's image_size\\), got "
                                         "\\(3, 8, 8\\)"):
        check_dataset(pairs(), batch_size=1, image_size=16)
    with pytest.raises(ValueError, match="items must be dicts with keys"):
        check_dataset([(1, 2)], batch_size=1, image_size=8)


def test_sharded_batches_are_the_global_batches():
    """W ranks x batch b together hold exactly the global batches of 1 rank x batch W*b, in the same order."""
    ds = list(range(23))
    for epoch in (0, 3):
        single = list(EpochBatchSampler(ds, batch_size=6, rank=0, world_size=1, seed=5, epoch=epoch))
        ranks = [list(EpochBatchSampler(ds, batch_size=6, rank=r, world_size=3, seed=5, epoch=epoch))
                 for r in range(3)]
        assert len(single) == EpochBatchSampler.batches_per_epoch(23, 6) == 3
        for k, batch in enumerate(single):
            merged = [None] * 6
            for r in range(3):
                merged[r::3] = ranks[r][k]
            assert merged == batch
    resumed = list(EpochBatchSampler(ds, batch_size=6, rank=0, world_size=1, seed=5, epoch=3, start=2))
    assert resumed == single[2:]
    with pytest.raises(ValueError, match="not divisible by the number of processes 4"):
        EpochBatchSampler(ds, batch_size=6, rank=0, world_size=4, seed=0, epoch=0)


def test_stick_figures_dataset():
    ds = build_dataset({"name": "stick_figures", "size": 3, "image_size": 32})
    check_dataset(ds, batch_size=3, image_size=32)
    item = ds[0]
    assert item["source"].min() >= -1 and item["target_pose"].max() <= 1 and item["target_pose"].max() > 0.5
