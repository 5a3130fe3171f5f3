"""The trainer on CPU with a tiny model: a run's outputs, reproducibility, the feature cache, EMA, NaN handling,
checkpoint guarantees, export and the CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rpfm.model import RPFM
from rpfm.pipeline import RPFMPipeline
from rpfm.train import checkpoint as ckpt_mod
from rpfm.train import cli
from rpfm.train.config import TrainConfig
from rpfm.train.data import TensorPairDataset
from rpfm.train.ema import EMA
from rpfm.train.logs import read_log
from rpfm.train.trainer import NonFiniteLossError, Trainer, train

# 32x32 images, pixel codec f = 4 (48 x 8 x 8 latents, 16 tokens), D = 32, one block, local branches only.
TINY_MODEL = dict(image_size=32, latent_channels=48, latent_downsample=4, patch_size=2, hidden_size=32, depth=1,
                  num_heads=2, branches=["local_source", "local_pose"])


def random_pairs(n: int = 16, size: int = 32, seed: int = 0) -> TensorPairDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorPairDataset(torch.rand(n, 3, size, size, generator=g) * 2 - 1,
                             torch.rand(n, 3, size, size, generator=g) * 2 - 1,
                             torch.rand(n, 3, size, size, generator=g))


def tiny_config(tmp_path: Path, *, run: str = "run", n: int = 16, **overrides) -> TrainConfig:
    """A TrainConfig on a 'tensors' dataset file in tmp_path (written once)."""
    data = tmp_path / f"pairs{n}.safetensors"
    if not data.exists():
        random_pairs(n).save(data)
    base = dict(model=TINY_MODEL, codec={"type": "pixel", "downsample": 4},
                dataset={"name": "tensors", "path": str(data)}, out_dir=str(tmp_path / run), batch_size=4, steps=6,
                log_every=1, ckpt_every=3, progress=False, ema_decay=0.9)
    base.update(overrides)
    return TrainConfig(**base)


def losses(out_dir: str | Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(Path(out_dir) / "log.jsonl")}


# ---------------------------------------------------------------------------------------------------- a run
def test_run_writes_log_checkpoints_and_samples(tmp_path):
    cfg = tiny_config(tmp_path, steps=7, ckpt_every=3, keep_checkpoints=2, sample_every=7, num_samples=3)
    result = train(cfg)
    out = Path(cfg.out_dir)
    assert result.step == 7 and result.checkpoint == out / "checkpoints" / "step_00000007"
    records = read_log(out / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, 8))
    assert set(records[0]) >= {"step", "loss", "lr", "grad_norm", "steps_per_s", "time"}
    assert all(r["lr"] == 1e-4 and r["loss"] > 0 and r["grad_norm"] > 0 for r in records)
    # Checkpoints at 3, 6 and the last step; only the newest 2 are kept; `latest` names the newest.
    assert [p.name for _, p in ckpt_mod.list_checkpoints(out / "checkpoints")] == ["step_00000006", "step_00000007"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000007"
    state = json.loads((out / "checkpoints" / "step_00000007" / "trainer_state.json").read_text())
    assert state["step"] == 7 and state["train_config"]["batch_size"] == 4
    assert state["model_config"]["hidden_size"] == 32 and state["optimizer"]["param_groups"][0]["lr"] == 1e-4
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".pkl") for p in out.rglob("*"))
    from PIL import Image

    with Image.open(out / "samples" / "step_00000007.png") as grid:
        assert grid.size == (4 * 32, 3 * 32)                      # source | pose | generated | ground truth, 3 rows


def test_seeded_runs_repeat_and_seeds_differ(tmp_path):
    a = train(tiny_config(tmp_path, run="a", steps=3, ckpt_every=10))
    b = train(tiny_config(tmp_path, run="b", steps=3, ckpt_every=10))
    c = train(tiny_config(tmp_path, run="c", steps=3, ckpt_every=10, seed=1))
    assert losses(a.out_dir) == losses(b.out_dir)
    assert losses(a.out_dir) != losses(c.out_dir)


def test_training_reduces_the_loss(tmp_path):
    # Four pairs, learnt with a large LR: the flow-matching loss must fall clearly.
    cfg = tiny_config(tmp_path, n=4, batch_size=4, steps=100, lr=3e-3, cond_drop=0.0, ckpt_every=100, log_every=1)
    train(cfg)
    values = list(losses(cfg.out_dir).values())
    assert sum(values[-5:]) / 5 < 0.8 * sum(values[:5]) / 5


def test_feature_cache_gives_the_same_losses(tmp_path):
    plain = train(tiny_config(tmp_path, run="plain", steps=4, ckpt_every=10))
    cached = train(tiny_config(tmp_path, run="cached", steps=4, ckpt_every=10, feature_cache=True))
    assert losses(plain.out_dir) == losses(cached.out_dir)


def test_global_branches_with_dinov2_and_cache(tmp_path):
    transformers = pytest.importorskip("transformers")
    from rpfm.features import GlobalFeatureExtractor

    torch.manual_seed(0)
    dino = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1,
                                                              num_attention_heads=2, intermediate_size=32,
                                                              image_size=28, patch_size=14))
    GlobalFeatureExtractor(dino).save_pretrained(tmp_path / "dino")
    model = {**TINY_MODEL, "branches": ["global_pose", "global_source", "local_source", "local_pose"],
             "pose_feature_dim": 16, "source_feature_dim": 16, "num_global_tokens": 5}
    with pytest.raises(ValueError, match="'pose_encoder' is required"):
        Trainer(tiny_config(tmp_path, model=model))
    enc = dict(model=model, pose_encoder=str(tmp_path / "dino"), source_encoder=str(tmp_path / "dino"), steps=2,
               ckpt_every=10)
    plain = train(tiny_config(tmp_path, run="plain", **enc))
    cached = train(tiny_config(tmp_path, run="cached", feature_cache=True, **enc))
    assert losses(plain.out_dir) == pytest.approx(losses(cached.out_dir), rel=1e-6)
    pipe = RPFMPipeline.from_pretrained(ckpt_mod.export_pipeline(plain.out_dir, tmp_path / "export"))
    assert pipe.pose_encoder is not None and pipe.source_encoder is not None


def test_ema_update_rule():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.75)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, 0.75 * before[k] + 0.25 * (before[k] + 1.0))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_grad_clip_logs_the_unclipped_norm_and_accumulation_counts_batches(tmp_path):
    a = train(tiny_config(tmp_path, run="a", steps=1, ckpt_every=10))
    b = train(tiny_config(tmp_path, run="b", steps=1, ckpt_every=10, grad_clip=1e-3))
    ra, rb = read_log(Path(a.out_dir) / "log.jsonl")[0], read_log(Path(b.out_dir) / "log.jsonl")[0]
    assert ra["loss"] == rb["loss"] and ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-6)
    trainer = Trainer(tiny_config(tmp_path, run="acc", steps=3, grad_accum=2, ckpt_every=3))
    trainer.fit()
    assert trainer.consumed == 6
    state = json.loads((Path(trainer.cfg.out_dir) / "checkpoints" / "step_00000003" / "trainer_state.json")
                       .read_text())
    assert state["consumed_batches"] == 6 and state["batches_per_epoch"] == 4


# ---------------------------------------------------------------------------------------------------- bad input
class NaNAtStep(Trainer):
    """Sets a weight to NaN while computing the loss of step ``nan_step`` (a diverging run)."""

    nan_step = 5

    def loss_fn(self, latents, t, noise, keep):
        if self.step + 1 == self.nan_step:
            with torch.no_grad():
                self.model.final_layer.linear.bias.fill_(float("nan"))
        return super().loss_fn(latents, t, noise, keep)


def test_nan_loss_stops_naming_the_step_and_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, steps=8, ckpt_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*step_00000004"):
        NaNAtStep(cfg).fit()
    root = Path(cfg.out_dir) / "checkpoints"
    assert [s for s, _ in ckpt_mod.list_checkpoints(root)] == [2, 4]
    assert (root / "latest").read_text().strip() == "step_00000004"
    ckpt = ckpt_mod.load_checkpoint(root)
    assert all(torch.isfinite(v).all() for v in ckpt.model.values())
    assert max(losses(cfg.out_dir)) == 4                      # the NaN step is not logged as a normal step


def test_nan_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 5.*none"):
        NaNAtStep(tiny_config(tmp_path, steps=8, ckpt_every=6)).fit()
    assert ckpt_mod.list_checkpoints(Path(tmp_path / "run" / "checkpoints")) == []


def test_existing_run_needs_resume(tmp_path):
    train(tiny_config(tmp_path, steps=3))
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        Trainer(tiny_config(tmp_path, steps=6))


def test_resume_with_another_model_config_names_the_fields(tmp_path):
    train(tiny_config(tmp_path, steps=3))
    other = {**TINY_MODEL, "hidden_size": 64, "depth": 2}
    with pytest.raises(ckpt_mod.CheckpointError, match=r"depth: checkpoint 1 vs run 2.*hidden_size: checkpoint 32 "
                                                        r"vs run 64"):
        Trainer(tiny_config(tmp_path, steps=6, model=other, resume=True))


def test_batch_larger_than_dataset_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="batch_size: 32 is larger than the dataset \\(16 items\\)"):
        Trainer(tiny_config(tmp_path, batch_size=32))
    cfg = tiny_config(tmp_path, dataset={"name": "tensors", "path": str(tmp_path / "nope.safetensors")})
    with pytest.raises(FileNotFoundError, match="nope.safetensors' does not exist"):
        Trainer(cfg)


def test_codec_must_match_the_model(tmp_path):
    with pytest.raises(ValueError, match="12-channel latents at 1/2 .*latent_channels=48, latent_downsample=4"):
        Trainer(tiny_config(tmp_path, codec={"type": "pixel", "downsample": 2}))


def test_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, steps=6, ckpt_every=3)
    trainer = Trainer(cfg)
    real = ckpt_mod.save_tensors

    def crash_on_optimizer(tensors, path, metadata=None):
        if trainer.step == 6 and Path(path).name == "optimizer.safetensors":
            raise OSError("disk full (simulated)")
        return real(tensors, path, metadata)

    monkeypatch.setattr(ckpt_mod, "save_tensors", crash_on_optimizer)
    with pytest.raises(OSError, match="simulated"):
        trainer.fit()
    root = Path(cfg.out_dir) / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000003"]
    assert ckpt_mod.find_latest(root).name == "step_00000003"
    assert ckpt_mod.load_checkpoint(root).step == 3


# ---------------------------------------------------------------------------------------------------- export, CLI
def test_export_writes_the_ema_weights_as_a_pipeline(tmp_path):
    cfg = tiny_config(tmp_path, steps=3)
    result = train(cfg)
    out = ckpt_mod.export_pipeline(result.checkpoint, tmp_path / "pipe")
    pipe = RPFMPipeline.from_pretrained(out)
    ema = ckpt_mod.load_checkpoint(result.checkpoint).ema
    for k, v in pipe.model.state_dict().items():
        assert torch.equal(v, ema[k]), k
    raw = ckpt_mod.load_checkpoint(result.checkpoint).model
    assert not torch.equal(raw["final_layer.linear.weight"], ema["final_layer.linear.weight"])
    item = random_pairs(1)[0]
    image = pipe(item["source"], item["target_pose"], num_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 32, 32)
    assert isinstance(pipe.model, RPFM)


def test_cli_train_resume_and_export(tmp_path, capsys):
    cfg = tiny_config(tmp_path, steps=2, ckpt_every=2)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert cli.main(["train", "--config", str(path), "--out-dir", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "checkpoints" / "step_00000002").is_dir()
    # Again without --resume: refused with a hint; with --resume: continues to the new step count.
    assert cli.main(["train", "--config", str(path), "--out-dir", str(tmp_path / "cli")]) == 2
    assert "--resume" in capsys.readouterr().err
    path.write_text(json.dumps({**cfg.to_dict(), "steps": 4}))
    assert cli.main(["train", "--config", str(path), "--out-dir", str(tmp_path / "cli"), "--resume"]) == 0
    assert sorted(losses(tmp_path / "cli")) == [1, 2, 3, 4]
    assert cli.main(["export", "--checkpoint", str(tmp_path / "cli"), "--out", str(tmp_path / "pipe")]) == 0
    assert RPFMPipeline.from_pretrained(tmp_path / "pipe").config.hidden_size == 32
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**cfg.to_dict(), "learning_rate": 1e-3}))
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert "unknown keys ['learning_rate']" in capsys.readouterr().err


def test_plain_progress_line_without_tqdm(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)             # import tqdm -> ImportError
    train(tiny_config(tmp_path, steps=2, ckpt_every=10, log_every=2, progress=True))
    err = capsys.readouterr().err
    assert "step 2/2" in err and "steps/s" in err and "ETA" in err


def test_tensorboard_requested_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match="tensorboard: true needs the tensorboard package.*pip install tensorboard"):
        Trainer(tiny_config(tmp_path, steps=1, tensorboard=True))


def test_bf16_autocast_keeps_fp32_master_weights(tmp_path):
    fp32 = train(tiny_config(tmp_path, run="fp32", steps=2, ckpt_every=2))
    bf16 = train(tiny_config(tmp_path, run="bf16", steps=2, ckpt_every=2, precision="bf16"))
    a, b = losses(fp32.out_dir), losses(bf16.out_dir)
    assert a != b                                             # autocast really ran (CPU bf16)
    assert b == pytest.approx(a, rel=2e-2)
    weights = ckpt_mod.load_checkpoint(bf16.checkpoint).model
    assert all(v.dtype == torch.float32 for v in weights.values())


def test_worker_processes_load_the_same_batches(tmp_path):
    a = train(tiny_config(tmp_path, run="a", steps=5, ckpt_every=10))
    b = train(tiny_config(tmp_path, run="b", steps=5, ckpt_every=10, num_workers=2))
    assert losses(a.out_dir) == losses(b.out_dir)


def test_image_level_feature_cache_matches_encoding_every_pair(tmp_path):
    # A folder dataset without augmentation: the cache encodes each image once (not once per pair) and must give the
    # losses of the uncached run, where every pair's three images are encoded when the batch is drawn.
    from rpfm.data.synthetic import generate_synthetic
    from rpfm.train.data import CachedImageFeatures

    generate_synthetic(tmp_path / "synth", identities=3, images_per_identity=3, size=64, seed=0)
    model = {**TINY_MODEL, "image_size": 64}
    dataset = {"name": "folder", "root": str(tmp_path / "synth"), "split": "train", "image_size": 64,
               "augment": False}
    plain = train(tiny_config(tmp_path, run="plain", model=model, dataset=dataset, steps=3, ckpt_every=10))
    trainer = Trainer(tiny_config(tmp_path, run="cached", model=model, dataset=dataset, steps=3, ckpt_every=10,
                                  feature_cache=True))
    assert isinstance(trainer.dataset, CachedImageFeatures)
    n_images = len({n for pair in trainer.raw_dataset.pairs for n in pair})
    assert trainer.dataset.images["z"].shape[0] == n_images < 3 * len(trainer.raw_dataset)
    trainer.fit()
    assert losses(plain.out_dir) == pytest.approx(losses(trainer.out_dir), rel=1e-6)


def test_feature_cache_dir_reuses_the_encoded_images_only_when_nothing_changed(tmp_path, monkeypatch, caplog):
    # A resumed run (or a second run on the same data and encoders) loads the per-image cache from disk instead of
    # encoding again, and gets the same tensors; another seed, or a changed image, makes a new file.
    from rpfm.data.synthetic import generate_synthetic
    from rpfm.train import feature_store

    generate_synthetic(tmp_path / "synth", identities=3, images_per_identity=3, size=64, seed=0)
    model = {**TINY_MODEL, "image_size": 64}
    dataset = {"name": "folder", "root": str(tmp_path / "synth"), "split": "train", "image_size": 64,
               "augment": False}
    store = tmp_path / "cache"
    cfg = dict(model=model, dataset=dataset, steps=2, ckpt_every=10, feature_cache=True, feature_cache_dir=str(store))
    first = Trainer(tiny_config(tmp_path, run="a", **cfg))
    files = sorted(store.glob("*.safetensors"))
    assert len(files) == 1

    def no_encoding(*a, **k):
        raise AssertionError("encoded again although the cache on disk matches")

    monkeypatch.setattr(Trainer, "encode_images", no_encoding)
    second = Trainer(tiny_config(tmp_path, run="b", **cfg))
    for k, v in first.dataset.images.items():
        assert torch.equal(second.dataset.images[k], v), k
    assert torch.equal(second.dataset.pairs, first.dataset.pairs)
    monkeypatch.undo()

    Trainer(tiny_config(tmp_path, run="c", **{**cfg, "seed": 1}))               # other posterior samples
    assert len(list(store.glob("*.safetensors"))) == 2
    # a damaged file is ignored with a warning and rebuilt
    files[0].write_bytes(files[0].read_bytes()[:100])
    with caplog.at_level("WARNING", logger="rpfm.train"):
        again = Trainer(tiny_config(tmp_path, run="d", **cfg))
    assert "ignoring" in caplog.text
    for k, v in first.dataset.images.items():
        assert torch.equal(again.dataset.images[k], v), k
    assert feature_store.load(store, files[0].stem) is not None                 # rewritten whole
    from PIL import Image
    name = Path(first.raw_dataset.pairs[0][0]).stem                              # one changed training image
    png = next(p for p in (tmp_path / "synth" / "train_highres").glob("*.png") if p.stem == name)
    img = Image.open(png).convert("RGB")
    img.putpixel((0, 0), (255, 0, 0) if img.getpixel((0, 0)) != (255, 0, 0) else (0, 0, 255))
    img.save(png)
    Trainer(tiny_config(tmp_path, run="e", **cfg))
    assert len(list(store.glob("*.safetensors"))) == 3


def test_feature_cache_dir_needs_the_feature_cache(tmp_path):
    with pytest.raises(ValueError, match=r"'feature_cache_dir' must be null unless feature_cache is true"):
        tiny_config(tmp_path, feature_cache_dir=str(tmp_path / "c"))


def test_feature_cache_key_hashes_modules_with_scalar_buffers():
    # The real global encoders (torchvision trunks) carry BatchNorm's 0-dim `num_batches_tracked`: the digest must
    # hash it (it crashed on it once), be stable for equal weights and change with any weight or buffer.
    from rpfm.train import feature_store

    def trunk(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    a, b = trunk(0), trunk(0)
    assert a[1].num_batches_tracked.dim() == 0
    assert feature_store.module_digest(a) == feature_store.module_digest(b)
    b[1].num_batches_tracked += 1
    assert feature_store.module_digest(a) != feature_store.module_digest(b)
    c = trunk(0)
    with torch.no_grad():
        c[0].weight[0, 0, 0, 0] += 1e-3
    assert feature_store.module_digest(a) != feature_store.module_digest(c)
    assert feature_store.module_digest(None) == "none"
