"""GlobalFeatureExtractor: a tiny random Dinov2Model, X-MDPT preprocessing, persistence and errors."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import Dinov2Config, Dinov2Model  # noqa: E402

from rpfm.features import FEATURES_CONFIG_NAME, GlobalFeatureExtractor, load_feature_extractor  # noqa: E402


def tiny_dinov2() -> Dinov2Model:
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=224, patch_size=14)
    return Dinov2Model(config)


@pytest.fixture(scope="module")
def extractor() -> GlobalFeatureExtractor:
    return GlobalFeatureExtractor(tiny_dinov2())


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_shape_and_properties(extractor, images):
    out = extractor(images)
    assert out.shape == (2, 257, 32) and out.dtype == torch.float32
    assert (extractor.feature_dim, extractor.num_tokens) == (32, 257)
    assert extractor(images[:1]).shape == (1, 257, 32)


def test_matches_dinov2_on_resized_input(extractor, images):
    resized = F.interpolate(images, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        expected = extractor.model(pixel_values=resized).last_hidden_state
    torch.testing.assert_close(extractor(images), expected)
    # 224 input: no resize at all.
    with torch.no_grad():
        direct = extractor.model(pixel_values=resized).last_hidden_state
    torch.testing.assert_close(extractor(resized), direct)


def test_antialias_and_imagenet_options(images):
    model = tiny_dinov2()
    plain = GlobalFeatureExtractor(model, antialias=False)
    resized = F.interpolate(images, size=(224, 224), mode="bicubic", align_corners=False, antialias=False)
    torch.testing.assert_close(plain.preprocess(images), resized)

    imagenet = GlobalFeatureExtractor(model, normalize="imagenet")
    unit = (images + 1) / 2
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (F.interpolate(unit, size=(224, 224), mode="bicubic", align_corners=False, antialias=True) - mean) / std
    torch.testing.assert_close(imagenet.preprocess(unit), expected)


def test_frozen_and_no_grad(extractor, images):
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training and not extractor.model.training
    out = extractor(images.requires_grad_(True))
    assert not out.requires_grad


def test_save_load_round_trip(images, tmp_path):
    extractor = GlobalFeatureExtractor(tiny_dinov2(), antialias=False)
    extractor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads((tmp_path / FEATURES_CONFIG_NAME).read_text())
    assert config == {"type": "dinov2", "antialias": False, "normalize": "none", "feature_dim": 32, "num_tokens": 257}
    loaded = load_feature_extractor(tmp_path)
    assert loaded.config_dict() == extractor.config_dict()
    torch.testing.assert_close(loaded(images), extractor(images), rtol=0, atol=0)
    # A plain DINOv2 folder (no features_config.json) loads with default options.
    (tmp_path / FEATURES_CONFIG_NAME).unlink()
    plain = load_feature_extractor(tmp_path)
    assert plain.antialias is True and plain.normalize == "none"


def test_missing_weights_say_what_to_download(tmp_path):
    missing = tmp_path / "dinov2-base"
    with pytest.raises(FileNotFoundError, match=r"facebook/dinov2-base.*facebook/dinov2-giant.*model\.safetensors"):
        GlobalFeatureExtractor.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="no DINOv2 weights"):
        load_feature_extractor(missing)
    missing.mkdir()
    (missing / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        GlobalFeatureExtractor.from_pretrained(missing)


def test_bad_config_file(tmp_path):
    tiny_dinov2().save_pretrained(tmp_path)
    (tmp_path / FEATURES_CONFIG_NAME).write_text(json.dumps({"type": "clip"}))
    with pytest.raises(ValueError, match="only 'dinov2'"):
        load_feature_extractor(tmp_path)
    (tmp_path / FEATURES_CONFIG_NAME).write_text(json.dumps({"type": "dinov2", "feature_dim": 768}))
    with pytest.raises(ValueError, match="feature_dim=768"):
        load_feature_extractor(tmp_path)


@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(1, 4, 256, 256), ValueError, r"images: expected shape \(B, 3, H, W\), got \(1, 4, 256, 256\)"),
    (torch.zeros(3, 256, 256), ValueError, r"x\[None\]"),
    (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), TypeError, r"floating tensor, got dtype torch.uint8"),
    ("pose.png", TypeError, r"images: expected a torch.Tensor.*str"),
])
def test_rejects_bad_images(extractor, bad, error, match):
    with pytest.raises(error, match=match):
        extractor(bad)


def test_constructor_errors():
    with pytest.raises(TypeError, match="Dinov2Model"):
        GlobalFeatureExtractor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"normalize=.*\('none', 'imagenet'\)"):
        GlobalFeatureExtractor(tiny_dinov2(), normalize="clip")
