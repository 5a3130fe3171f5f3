"""Latent codecs: a tiny random AutoencoderKL behind SDVAECodec, and the weight-free PixelCodec."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

from rpfm.codec import CODEC_CONFIG_NAME, LatentCodec, PixelCodec, SDVAECodec, load_codec  # noqa: E402


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         sample_size=32)


@pytest.fixture(scope="module")
def codec() -> SDVAECodec:
    return SDVAECodec(tiny_vae())


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---------------------------------------------------------------------------------------------------- SD-VAE
def test_attributes(codec):
    assert isinstance(codec, LatentCodec)
    assert (codec.latent_channels, codec.downsample, codec.scaling_factor) == (4, 2, 0.18215)
    assert not any(p.requires_grad for p in codec.parameters())
    codec.train()
    assert not codec.training and not codec.vae.training


def test_encode_decode_shapes(codec, images):
    latents = codec.encode(images)
    assert latents.shape == (2, 4, 16, 16) and latents.dtype == torch.float32
    decoded = codec.decode(latents)
    assert decoded.shape == (2, 3, 32, 32)
    assert not latents.requires_grad and not decoded.requires_grad


def test_mode_is_deterministic_and_scaled(codec, images):
    torch.testing.assert_close(codec.encode(images), codec.encode(images), rtol=0, atol=0)
    with torch.no_grad():
        posterior = codec.vae.encode(images).latent_dist
        expected = posterior.mode() * 0.18215
    torch.testing.assert_close(codec.encode(images), expected)


def test_sample_is_seeded_and_differs_from_mode(codec, images):
    a = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(7))
    b = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(7))
    c = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, codec.encode(images))
    with torch.no_grad():
        posterior = codec.vae.encode(images).latent_dist
        expected = posterior.sample(torch.Generator().manual_seed(7)) * 0.18215
    torch.testing.assert_close(a, expected)


def test_decode_divides_scaling_factor(codec):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = codec.vae.decode(latents / 0.18215).sample
    torch.testing.assert_close(codec.decode(latents), expected)


def test_custom_scaling_factor(images):
    vae = tiny_vae()
    one, half = SDVAECodec(vae, scaling_factor=1.0), SDVAECodec(vae, scaling_factor=0.5)
    torch.testing.assert_close(half.encode(images), one.encode(images) * 0.5)


def test_save_load_round_trip(codec, images, tmp_path, monkeypatch):
    codec.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / CODEC_CONFIG_NAME).read_text())["type"] == "sd-vae"
    latents = codec.encode(images)
    # bitwise with diffusers' class on both sides; rpfm's native twin (the default) to float rounding
    for backend, tol in (("diffusers", 0.0), ("auto", 1e-5)):
        monkeypatch.setenv("RPFM_VAE_BACKEND", backend)
        loaded = load_codec(tmp_path)
        assert isinstance(loaded, SDVAECodec) and loaded.config_dict() == codec.config_dict()
        torch.testing.assert_close(loaded.encode(images), latents, rtol=0, atol=tol)
        torch.testing.assert_close(loaded.decode(latents), codec.decode(latents), rtol=0, atol=tol)
    # A plain diffusers VAE folder (no codec_config.json) also loads, as does a config dict with a path.
    (tmp_path / CODEC_CONFIG_NAME).unlink()
    assert isinstance(load_codec(tmp_path), SDVAECodec)
    assert isinstance(load_codec({"type": "sd-vae", "path": str(tmp_path)}), SDVAECodec)
    torch.testing.assert_close(SDVAECodec.from_pretrained(tmp_path).encode(images), latents, rtol=0, atol=0)


def test_missing_weights_say_what_to_download(tmp_path):
    missing = tmp_path / "sd-vae-ft-mse"
    with pytest.raises(FileNotFoundError, match=r"stabilityai/sd-vae-ft-mse.*config\.json.*safetensors"):
        SDVAECodec.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="sd-vae-ft-mse"):
        load_codec(missing)
    missing.mkdir()
    (missing / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no diffusion_pytorch_model.safetensors"):
        SDVAECodec.from_pretrained(missing)
    with pytest.raises(ValueError, match="needs weights"):
        load_codec({"type": "sd-vae"})


@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(2, 4, 32, 32), ValueError, r"images: expected shape \(B, 3, H, W\).*\(2, 4, 32, 32\)"),
    (torch.zeros(3, 32, 32), ValueError, r"images: expected shape.*x\[None\]"),
    (torch.zeros(1, 3, 31, 32), ValueError, r"images: .*divisible by .* 2, got 31x32"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, r"images: expected a floating tensor.*uint8"),
    ([[0.0]], TypeError, r"images: expected a torch.Tensor.*list"),
])
def test_encode_rejects_bad_images(codec, bad, error, match):
    with pytest.raises(error, match=match):
        codec.encode(bad)


def test_decode_rejects_wrong_channels(codec):
    with pytest.raises(ValueError, match=r"latents: expected shape \(B, 4, H, W\)"):
        codec.decode(torch.zeros(1, 3, 16, 16))


def test_constructor_errors():
    with pytest.raises(TypeError, match="AutoencoderKL"):
        SDVAECodec(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="scaling_factor"):
        SDVAECodec(tiny_vae(), scaling_factor=0)
    with pytest.raises(ValueError, match="downsample"):
        PixelCodec(downsample=0)


# ---------------------------------------------------------------------------------------------------- pixels
def test_pixel_codec_is_exact_inverse(images):
    codec = PixelCodec(downsample=4)
    assert (codec.latent_channels, codec.downsample, codec.scaling_factor) == (48, 4, 1.0)
    latents = codec.encode(images, sample=True, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 48, 8, 8)
    assert torch.equal(latents, F.pixel_unshuffle(images, 4))
    # Layout: latent channel k*f*f + i*f + j = image channel k at offset (i, j) of each 4x4 block.
    assert torch.equal(latents[:, 1 * 16 + 2 * 4 + 3], images[:, 1, 2::4, 3::4])
    assert torch.equal(codec.decode(latents), images)


def test_pixel_codec_round_trip_and_errors(tmp_path, images):
    codec = PixelCodec(downsample=2)
    codec.save_pretrained(tmp_path)
    loaded = load_codec(tmp_path)
    assert isinstance(loaded, PixelCodec) and loaded.config_dict() == {"type": "pixel", "downsample": 2, "channels": 3}
    assert torch.equal(loaded.encode(images), codec.encode(images))
    assert isinstance(load_codec(codec.config_dict()), PixelCodec)
    with pytest.raises(ValueError, match=r"divisible by .* 4"):
        PixelCodec(4).encode(torch.zeros(1, 3, 6, 8))
    with pytest.raises(ValueError, match=r"latents: expected shape \(B, 12, H, W\)"):
        codec.decode(torch.zeros(1, 4, 8, 8))


def test_load_codec_config_errors():
    with pytest.raises(ValueError, match=r"'type' must be one of \['pixel', 'sd-vae'\]"):
        load_codec({"type": "vqgan"})
    with pytest.raises(ValueError, match=r"unknown keys \['foo'\]"):
        load_codec({"type": "pixel", "foo": 1})
    with pytest.raises(ValueError, match="latent_channels"):
        load_codec({"type": "pixel", "downsample": 2, "latent_channels": 4})
    with pytest.raises(TypeError, match="folder path or a config dict"):
        load_codec(3)
