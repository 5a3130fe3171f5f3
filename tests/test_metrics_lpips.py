"""LPIPS (AlexNet, v0.1 heads) on random weights against a hand-written layer-by-layer computation; loading; errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rpfm.metrics import LPIPS, lpips, lpips_per_image

SIZE = 64


@pytest.fixture(scope="module")
def model() -> LPIPS:
    torch.manual_seed(0)
    m = LPIPS()
    with torch.no_grad():
        for k in range(5):                                   # v0.1 heads are non-negative
            w = getattr(m, f"lin{k}").model[1].weight
            w.copy_(torch.rand_like(w) * 0.1)
    return m.eval()


def images(b: int, seed: int, size: int = SIZE) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_lpips(m: LPIPS, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The lpips package's computation written out with plain torch ops, one image set at a time."""
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)

    def alex_taps(x):
        x = ((2 * x - 1) - shift) / scale                                    # normalize=True, ScalingLayer
        r1 = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], stride=4, padding=2))
        x = F.max_pool2d(r1, kernel_size=3, stride=2)
        r2 = F.relu(F.conv2d(x, sd["features.3.weight"], sd["features.3.bias"], padding=2))
        x = F.max_pool2d(r2, kernel_size=3, stride=2)
        r3 = F.relu(F.conv2d(x, sd["features.6.weight"], sd["features.6.bias"], padding=1))
        r4 = F.relu(F.conv2d(r3, sd["features.8.weight"], sd["features.8.bias"], padding=1))
        r5 = F.relu(F.conv2d(r4, sd["features.10.weight"], sd["features.10.bias"], padding=1))
        return [r1, r2, r3, r4, r5]

    total = 0
    for k, (a, b) in enumerate(zip(alex_taps(x0), alex_taps(x1))):
        a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        d = F.conv2d((a - b) ** 2, sd[f"lin{k}.model.1.weight"])           # 1x1 head, no bias
        total = total + d.mean(dim=[2, 3], keepdim=True)                    # spatial_average
    return total.view(-1)


# ---------------------------------------------------------------------------------------------------- structure
def test_matches_hand_written_computation(model):
    x0, x1 = images(3, 1), images(3, 2)
    with torch.no_grad():
        got = model(x0, x1)
        ref = reference_lpips(model, x0, x1)
    assert got.shape == (3,) and (got > 0).all()
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_tap_shapes_and_state_dict_keys(model):
    taps = model.taps(torch.zeros(1, 3, SIZE, SIZE))
    assert [t.shape[1] for t in taps] == [64, 192, 384, 256, 256]
    keys = set(model.state_dict())
    assert keys == {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")} | \
        {f"lin{k}.model.1.weight" for k in range(5)}
    assert model.state_dict()["lin2.model.1.weight"].shape == (1, 384, 1, 1)


def test_identity_symmetry_and_batching(model):
    x0, x1 = images(4, 3), images(4, 4)
    with torch.no_grad():
        assert torch.equal(model(x0, x0), torch.zeros(4))
        torch.testing.assert_close(model(x0, x1), model(x1, x0), rtol=0, atol=1e-7)
        one_by_one = torch.cat([model(x0[i:i + 1], x1[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(model(x0, x1), one_by_one, rtol=0, atol=1e-6)
    per = lpips_per_image(x0, x1, model=model, batch_size=3)               # chunks of 3 + 1
    assert per.dtype == np.float64 and per.shape == (4,)
    np.testing.assert_allclose(per, one_by_one.double().numpy(), rtol=0, atol=1e-6)
    assert lpips(x0, x1, model=model) == pytest.approx(float(per.mean()), abs=1e-7)


def test_accepts_uint8_arrays(model):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    as_tensor = lambda u: torch.from_numpy(u).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    np.testing.assert_allclose(lpips_per_image(a, list(b), model=model),
                               lpips_per_image(as_tensor(a), as_tensor(b), model=model), rtol=0, atol=1e-7)


def test_gradients_flow(model):
    x0 = images(1, 5).requires_grad_(True)
    model(x0, images(1, 6)).sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all() and x0.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- weights
def test_load_from_files(model, tmp_path):
    sd = model.state_dict()
    alex = {k: v for k, v in sd.items() if k.startswith("features.")}
    alex["classifier.1.weight"] = torch.zeros(4, 4)                         # torchvision's file has a classifier
    torch.save(alex, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save({k: v for k, v in sd.items() if k.startswith("lin")}, tmp_path / "alex.pth")
    loaded = LPIPS.from_files(tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x0, x1 = images(2, 7), images(2, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x0, x1), model(x0, x1))
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in alex.items()}, str(tmp_path / "alexnet.safetensors"))
    loaded.load_alexnet(tmp_path / "alexnet.safetensors")


def test_missing_files_name_what_to_get(tmp_path, model):
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("lin")}, tmp_path / "alex.pth")
    with pytest.raises(FileNotFoundError, match=r"alexnet-owt-7be5be79\.pth.*download\.pytorch\.org"):
        LPIPS.from_files(tmp_path / "missing.pth", tmp_path / "alex.pth")
    with pytest.raises(FileNotFoundError, match=r"weights/v0\.1/alex\.pth.*pip install lpips.*PerceptualSimilarity"):
        LPIPS().load_heads(tmp_path / "missing_heads.pth")


def test_wrong_layouts_raise(tmp_path):
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match=r"(?s)LPIPS linear heads.*Missing key.*lin4\.model\.1\.weight"):
        LPIPS().load_heads(tmp_path / "partial.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "vggish.pth")
    with pytest.raises(RuntimeError, match=r"(?s)LPIPS AlexNet weights.*size mismatch"):
        LPIPS().load_alexnet(tmp_path / "vggish.pth")


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_inputs(model):
    x = images(2, 9)
    with pytest.raises(ValueError, match=r"pred and target: expected the same shape"):
        model(x, x[:1])
    with pytest.raises(ValueError, match=r"pred: LPIPS \(AlexNet\) needs images of at least 32"):
        model(images(1, 0, size=16), images(1, 1, size=16))
    with pytest.raises(ValueError, match=r"target: expected a float tensor \(B, 3, H, W\)"):
        model(x, x[:, :1])
    with pytest.raises(ValueError, match=r"pred and target: .*2 predictions and 1 targets"):
        lpips_per_image(x, x[:1], model=model)
    with pytest.raises(TypeError, match="model"):
        lpips_per_image(x, x, model=None)
    with pytest.raises(ValueError, match="batch_size"):
        lpips_per_image(x, x, model=model, batch_size=0)
