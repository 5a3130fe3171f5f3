"""Codec training (rpfm codec train / export / eval): exact resume, export with a unit-variance scaling factor,
the SSIM loss against scikit-image, and clear errors. Tiny AutoencoderKL configs on 16x16 images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rpfm.codec import SDVAECodec, load_codec
from rpfm.fileio import load_tensors
from rpfm.train import checkpoint as ckpt_mod
from rpfm.train.codec_config import from_dict
from rpfm.train.codec_export import evaluate_codec, export_codec
from rpfm.train.codec_trainer import CodecTrainer, image_files, load_images, ssim_map_mean, train_codec
from rpfm.train.schedule import lr_at

TINY_VAE = {"block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
            "mid_block_add_attention": False}


def _blobs(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: a flat background with one coloured rectangle each (structured, compressible)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 256, 3)
        y, x = rng.integers(0, size // 2, 2)
        h, w = rng.integers(3, size // 2, 2)
        out[i, y:y + h, x:x + w] = rng.integers(0, 256, 3)
    return out


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    for split, seed in (("train", 0), ("test", 1)):
        (root / f"{split}_highres").mkdir(parents=True)
        for i, arr in enumerate(_blobs(12 if split == "train" else 4, seed=seed)):
            Image.fromarray(arr).save(root / f"{split}_highres" / f"img{i:03d}.png")
    return root


def _cfg(root, out, **kw):
    return {"data": {"root": str(root), "split": "train"}, "vae": TINY_VAE, "out_dir": str(out), "batch_size": 4,
            "steps": 4, "ckpt_every": 2, "log_every": 1, "progress": False, **kw}


@pytest.mark.parametrize("crop", [None, 12])
def test_resume_repeats_the_uninterrupted_run_bitwise(data_root, tmp_path, crop):
    full = train_codec(_cfg(data_root, tmp_path / "full", steps=6, crop=crop))
    train_codec(_cfg(data_root, tmp_path / "split", steps=4, crop=crop))          # crosses an epoch boundary
    resumed = train_codec(_cfg(data_root, tmp_path / "split", steps=6, crop=crop, resume=True))
    assert full.step == resumed.step == 6
    a = load_tensors(full.checkpoint / "model.safetensors")
    b = load_tensors(resumed.checkpoint / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.loss == resumed.loss


def test_trainer_logs_the_scheduled_lr(data_root, tmp_path):
    run = tmp_path / "run"
    train_codec(_cfg(data_root, run, steps=6, lr=1e-3, lr_decay_start=0.5, lr_min_ratio=0.2))
    logged = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    expected = [lr_at(s, lr=1e-3, steps=6, decay_start=0.5, min_ratio=0.2) for s in range(6)]
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged[0] > logged[-1]


def test_resume_inside_the_tail_is_exact(data_root, tmp_path):
    kw = dict(steps=6, lr=1e-3, lr_decay_start=0.3)
    full = train_codec(_cfg(data_root, tmp_path / "full", **kw))
    middle = tmp_path / "full" / "checkpoints" / "step_00000004"
    resumed = train_codec(_cfg(data_root, tmp_path / "resumed", resume=str(middle), **kw))
    a, b = (load_tensors(r.checkpoint / "model.safetensors") for r in (full, resumed))
    assert resumed.step == 6 and all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_without_resume_is_refused(data_root, tmp_path):
    train_codec(_cfg(data_root, tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        CodecTrainer(_cfg(data_root, tmp_path / "run", steps=4))


def test_resume_with_another_architecture_is_refused(data_root, tmp_path):
    train_codec(_cfg(data_root, tmp_path / "run", steps=2))
    other = {**TINY_VAE, "latent_channels": 8}
    with pytest.raises(ckpt_mod.CheckpointError, match="latent_channels"):
        CodecTrainer(_cfg(data_root, tmp_path / "run", steps=4, vae=other, resume=True))


def test_training_lowers_the_reconstruction_error(data_root, tmp_path):
    images = load_images(image_files(data_root, "train"), None)
    untrained = CodecTrainer(_cfg(data_root, tmp_path / "a", steps=1))
    result = train_codec(_cfg(data_root, tmp_path / "b", steps=60, lr=3e-3, ema_decay=0.0, ckpt_every=60))
    before = evaluate_codec(SDVAECodec(untrained.vae.eval(), scaling_factor=1.0), images)
    out = export_codec(result.checkpoint, tmp_path / "codec")
    after = evaluate_codec(load_codec(out), images)
    assert after["psnr"] > before["psnr"] + 3


def test_export_gives_a_loadable_codec_with_unit_variance_latents(data_root, tmp_path):
    result = train_codec(_cfg(data_root, tmp_path / "run", steps=2))
    out = export_codec(tmp_path / "run", tmp_path / "codec")
    codec = load_codec(out)
    assert isinstance(codec, SDVAECodec)
    assert codec.latent_channels == 4 and codec.downsample == 2
    stats = json.loads((out / "codec_stats.json").read_text())
    assert stats["step"] == result.step
    images = load_images(image_files(data_root, "train"), None)
    z = codec.encode(images.float() / 127.5 - 1)                                  # posterior mode, scaled
    assert z.shape == (12, 4, 8, 8)
    assert abs(float(z.std()) - 1.0) < 0.02
    assert codec.scaling_factor == pytest.approx(1.0 / stats["latent_std"])
    assert json.loads((out / "config.json").read_text())["scaling_factor"] == pytest.approx(codec.scaling_factor)
    with pytest.raises(ValueError, match="not empty.*--overwrite"):
        export_codec(tmp_path / "run", out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".codec.tmp-")]


def test_export_refuses_a_flow_model_checkpoint(tmp_path):
    from rpfm.config import RPFMConfig

    cfg = RPFMConfig(image_size=16, latent_channels=4, latent_downsample=2, hidden_size=32, depth=1, num_heads=2,
                     branches=("local_source", "local_pose"))
    ckpt_mod.save_checkpoint(tmp_path / "flow", 1, model={"w": torch.zeros(1)}, ema={"w": torch.zeros(1)},
                             optimizer={"state": {}, "param_groups": []}, rng={}, train_config={},
                             model_config=cfg)
    with pytest.raises(ValueError, match="not a codec training checkpoint.*rpfm export"):
        export_codec(tmp_path / "flow", tmp_path / "out")


def test_ssim_loss_matches_scikit_image_gaussian_ssim():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 24, 24)).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape).astype(np.float32), 0, 1)
    ours = float(ssim_map_mean(torch.from_numpy(x), torch.from_numpy(y)))
    ref = np.mean([structural_similarity(x[i], y[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0, channel_axis=0) for i in range(2)])
    assert ours == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("change, match", [
    ({"vae": {"blocks": 3}}, r"unknown keys \['blocks'\] in 'vae'"),
    ({"vae": {"block_out_channels": [8, 12], "norm_num_groups": 8}}, "norm_num_groups"),
    ({"batch_size": 0}, "'batch_size' must be an int >= 1"),
    ({"lr": -1.0}, "'lr' must be"),
    ({"data": {"path": "x"}}, "'data' must be a mapping with a \"root\""),
    ({"data": {"root": "x", "image_size": 13}}, "multiple of the codec's downsample factor 2"),
    ({"epochs": 3}, r"unknown keys \['epochs'\]"),
    ({"crop": 7}, "'crop' must be null or a multiple of the codec's downsample factor 2 of at least 11"),
])
def test_config_errors_name_the_field(data_root, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        from_dict(_cfg(data_root, tmp_path / "x", **change))


def test_bad_data_gives_clear_errors(tmp_path, data_root):
    with pytest.raises(FileNotFoundError, match="no 'train_highres' folder.*rpfm data synth"):
        CodecTrainer(_cfg(tmp_path / "nowhere", tmp_path / "run"))
    with pytest.raises(ValueError, match="batch_size: 64 is larger than the 12 training images"):
        CodecTrainer(_cfg(data_root, tmp_path / "run", batch_size=64))
    Image.new("RGB", (20, 16)).save(data_root / "train_highres" / "zz_wrong.png")
    with pytest.raises(ValueError, match="zz_wrong.png' is 20x16, expected 16x16"):
        CodecTrainer(_cfg(data_root, tmp_path / "run"))


def test_cli_train_export_eval(data_root, tmp_path, capsys):
    from rpfm.cli import main

    cfg_file = tmp_path / "codec.json"
    cfg_file.write_text(json.dumps(_cfg(data_root, tmp_path / "run", steps=2)))
    assert main(["codec", "train", "--config", str(cfg_file)]) == 0
    assert main(["codec", "train", "--config", str(cfg_file), "--resume"]) == 0          # already done: no-op
    assert main(["codec", "export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["codec", "eval", "--codec", str(tmp_path / "c"), "--data", str(data_root),
                 "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 4 and np.isfinite(report["psnr"]) and -1 <= report["ssim_gaussian"] <= 1
    assert report["ssim"] is None                                                      # 16 px < the 51-px window
    assert main(["codec", "eval", "--codec", str(tmp_path / "c"), "--data", str(tmp_path / "nowhere")]) == 2
    assert "rpfm codec eval: error: data.root: no 'test_highres' folder" in capsys.readouterr().err


def test_cli_eval_leaves_autograd_on(data_root, tmp_path):
    # The CLI runs inside long-lived processes too (tests, notebooks): it must not switch autograd off globally.
    from rpfm.cli import main

    train_codec(_cfg(data_root, tmp_path / "run", steps=1))
    export_codec(tmp_path / "run", tmp_path / "c")
    assert main(["codec", "eval", "--codec", str(tmp_path / "c"), "--data", str(data_root)]) == 0
    assert torch.is_grad_enabled()
