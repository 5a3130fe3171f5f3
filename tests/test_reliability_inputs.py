"""Bad input through the Python API (issue 14): image files in every mode (16-bit, alpha, EXIF, truncated, bombs),
weights checked for dtype, finiteness and the config they were saved with, and the tracebacks that became clear
errors or warnings (empty batches, absurd coordinates, solver tolerances, a missing CUDA, unknown config keys)."""
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from rpfm import RPFMPipeline
from rpfm.codec import PixelCodec, SDVAECodec
from rpfm.config import to_dict
from rpfm.demo import demo_config, demo_inputs
from rpfm.features import GlobalFeatureExtractor
from rpfm.fileio import read_metadata, save_tensors
from rpfm.imagefile import MAX_PIXELS_ENV, read_rgb, save_image, to_rgb
from rpfm.images import to_image_tensor
from rpfm.model import RPFM
from rpfm.pose.keypoints import Keypoints
from rpfm.samplers import sample

from .conftest import randomize, truncate


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (gray (H, W), RGB or RGBA (H, W, C)) written by hand: PIL cannot write 16-bit colour."""
    h, w = array.shape[:2]
    c = 1 if array.ndim == 2 else array.shape[2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def pipe():
    return RPFMPipeline(randomize(RPFM(demo_config())), PixelCodec(downsample=4))


# ---------------------------------------------------------------------------------------------------- image files
def test_16_bit_png_keeps_its_brightness(tmp_path):
    gray = np.full((64, 64), 32896, np.uint16)                        # 32896 / 65535 = 128 / 255
    (tmp_path / "g16.png").write_bytes(png16(gray))
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")                              # what PIL makes of it ...
        assert np.asarray(im.convert("RGB")).min() == 255           # ... and its own conversion: all white
    assert np.asarray(read_rgb(tmp_path / "g16.png")).tolist() == np.full((64, 64, 3), 128).tolist()
    x = to_image_tensor(tmp_path / "g16.png", value_range="[0,1]")
    assert torch.allclose(x, torch.full_like(x, 128 / 255))
    with Image.open(tmp_path / "g16.png") as im:                    # a PIL image in mode I;16 too
        assert torch.allclose(to_image_tensor(im, value_range="[0,1]"), x)
    rgb = np.zeros((8, 8, 3), np.uint16)
    rgb[..., 0], rgb[..., 1] = 65535, 25700                          # -> 255, 100
    (tmp_path / "c16.png").write_bytes(png16(rgb))
    assert np.asarray(read_rgb(tmp_path / "c16.png"))[0, 0].tolist() == [255, 100, 0]


def test_pose_and_source_as_16_bit_png_give_the_8_bit_result(pipe, tmp_path):
    src, pose = demo_inputs(64)
    (tmp_path / "pose16.png").write_bytes(png16(np.asarray(pose).astype(np.uint16) * 257))
    (tmp_path / "src16.png").write_bytes(png16(np.asarray(src).astype(np.uint16) * 257))
    a = pipe(src, pose, num_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    b = pipe(tmp_path / "src16.png", tmp_path / "pose16.png", num_steps=2,
             generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(a, b)


def test_other_modes_convert_or_are_refused(tmp_path):
    assert np.asarray(to_rgb(Image.new("LA", (2, 2), (90, 255))))[0, 0].tolist() == [90, 90, 90]
    assert np.asarray(to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(to_rgb(Image.new("1", (2, 2), 1)))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(to_rgb(Image.new("I", (2, 2), 65535)))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="outside 0..65535"):
        to_rgb(Image.new("I", (2, 2), -5))
    with pytest.raises(ValueError, match="mode F"):
        to_rgb(Image.new("F", (2, 2), 0.5))
    Image.new("F", (2, 2), 0.5).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float\.tif.*mode F"):
        to_image_tensor(tmp_path / "float.tif", name="source_image")


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6                                                # rotate 90 degrees clockwise to display
    im.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    out = read_rgb(tmp_path / "phone.jpg")
    assert out.size == (2, 4)                                       # stored 4x2, shown 2x4


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_a_clear_error(tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    truncate(path)
    with pytest.raises(ValueError, match=r"a\.(png|jpeg).*truncated or corrupt"):
        to_image_tensor(path, name="source_image")


def _huge_png(w: int, h: int) -> bytes:
    """A tiny file whose header claims w x h pixels (the pixel data is never reached)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    body = zlib.compress(b"\x00" * (w + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_decoded_size_is_capped(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(_huge_png(12000, 12000))       # 144 Mpx: PIL only warns, then decodes 4.6 GB
    (tmp_path / "bomb.png").write_bytes(_huge_png(20000, 20000))      # past PIL's own bomb limit
    for name in ("big.png", "bomb.png"):
        with pytest.raises(ValueError, match=rf"decodes to .* pixels, above the limit.*{MAX_PIXELS_ENV}"):
            read_rgb(tmp_path / name, "--source")
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "5000")                      # the limit is the user's to move
    with pytest.raises(ValueError, match=rf"100x100 = 10,000 pixels, above the limit of 5,000.*{MAX_PIXELS_ENV}="):
        read_rgb(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")
    assert read_rgb(tmp_path / "small.png").size == (100, 100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_PIXELS_ENV):
        read_rgb(tmp_path / "big.png")


def test_save_image_follows_the_extension(tmp_path):
    im = Image.new("RGB", (8, 8), (10, 200, 30))
    for ext, magic in ((".png", b"\x89PNG"), (".jpg", b"\xff\xd8"), (".webp", b"RIFF"), (".bmp", b"BM")):
        assert save_image(im, tmp_path / f"o{ext}").read_bytes().startswith(magic)
    with pytest.raises(ValueError, match="unknown image extension"):
        save_image(im, tmp_path / "o.xyz")


# ---------------------------------------------------------------------------------------------------- weights
def test_weights_are_checked_for_dtype_finiteness_and_config(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "m")
    weights = folder / "model.safetensors"
    meta = read_metadata(weights)
    assert "rpfm_config_sha256" in meta and "rpfm_config" in meta
    state = pipe.model.state_dict()

    save_tensors({k: v.to(torch.int64) for k, v in state.items()}, weights, metadata=meta)
    with pytest.raises(ValueError, match="wrong dtype.*torch.int64"):
        RPFMPipeline.from_pretrained(folder)

    bad = dict(state)
    name = next(k for k in bad if bad[k].is_floating_point())
    bad[name] = bad[name].clone()
    bad[name].view(-1)[0] = float("nan")
    save_tensors(bad, weights, metadata=meta)
    with pytest.raises(ValueError, match=f"NaN or Inf values in {name}"):
        RPFMPipeline.from_pretrained(folder)

    save_tensors(state, weights, metadata=meta)                     # good weights, but config.json edited:
    cfg = folder / "config.json"                                    # num_heads 2 -> 1 keeps every shape
    doc = json.loads(cfg.read_text())
    assert doc["model"]["num_heads"] == 2
    doc["model"]["num_heads"] = 1
    cfg.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"another model config.*num_heads: weights 2 vs config.json 1"):
        RPFMPipeline.from_pretrained(folder)

    save_tensors(state, weights, metadata={"format": "pt"})         # a file written before the fingerprint existed
    assert RPFMPipeline.from_pretrained(folder).config.num_heads == doc["model"]["num_heads"]


def test_unknown_top_level_config_key_warns(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "m")
    doc = json.loads((folder / "config.json").read_text())
    doc["sheduler"] = "euler"
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"unknown keys \['sheduler'\]"):
        RPFMPipeline.from_pretrained(folder)


def test_codec_and_dinov2_folders_without_their_weights_file(tmp_path):
    from .test_codec import tiny_vae
    from .test_features import tiny_dinov2

    SDVAECodec(tiny_vae()).save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "vae" / "weights.safetensors")
    with pytest.raises(FileNotFoundError, match="no diffusion_pytorch_model.safetensors"):
        SDVAECodec.from_pretrained(tmp_path / "vae")
    GlobalFeatureExtractor(tiny_dinov2()).save_pretrained(tmp_path / "dino")
    (tmp_path / "dino" / "model.safetensors").rename(tmp_path / "dino" / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        GlobalFeatureExtractor.from_pretrained(tmp_path / "dino")
    (tmp_path / "dino" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")   # not weights
    with pytest.raises(ValueError, match="could not be loaded as a transformers Dinov2Model"):
        GlobalFeatureExtractor.from_pretrained(tmp_path / "dino")


# ---------------------------------------------------------------------------------------------------- inputs
def test_empty_batch_is_a_clear_error(pipe):
    for empty in (torch.zeros(0, 3, 64, 64), np.zeros((0, 64, 64, 3), np.uint8), torch.zeros(1, 3, 0, 0)):
        with pytest.raises(ValueError, match="empty batch"):
            to_image_tensor(empty, name="source_image")
    with pytest.raises(ValueError, match="source_image: got an empty batch"):
        pipe(torch.zeros(0, 3, 64, 64), torch.zeros(0, 3, 64, 64), num_steps=1)


def test_absurd_coordinates_are_refused(pipe):
    xy = np.full((18, 2), 32.0)
    xy[3] = (1e30, 5.0)
    with pytest.raises(ValueError, match=r"right_elbow.*beyond"):
        Keypoints(xy, (64, 64))


def test_blank_skeleton_warns(pipe):
    src, _ = demo_inputs(64)
    off = Keypoints(np.full((18, 2), 500.0), (64, 64))               # every joint right of the frame
    for pose in (Keypoints.all_missing((64, 64)), off):
        with pytest.warns(UserWarning, match="blank skeleton"):
            pipe(src, pose, num_steps=1)


@pytest.mark.parametrize("tol", [0.0, -1e-5, float("nan"), float("inf")])
def test_dopri5_tolerances_are_checked(pipe, tol):
    f = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="atol: expected a finite number > 0"):
        sample(f, torch.ones(2), solver="dopri5", atol=tol)
    with pytest.raises(ValueError, match="rtol"):
        sample(f, torch.ones(2), solver="dopri5", rtol=tol)
    src, pose = demo_inputs(64)
    with pytest.raises(ValueError, match="atol"):
        pipe(src, pose, solver="dopri5", atol=tol)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_to_cuda_without_cuda_is_a_clear_error(pipe):
    with pytest.raises(RuntimeError, match="CUDA is not available on this machine"):
        pipe.to("cuda")
    with pytest.raises(ValueError, match="not a device name"):
        pipe.to("cuda0")
    assert pipe.device.type == "cpu"


def test_config_fingerprint_ignores_key_order(pipe):
    from rpfm.config import fingerprint, from_dict

    d = to_dict(pipe.config)
    assert fingerprint(from_dict(dict(reversed(list(d.items()))))) == fingerprint(pipe.config)
    assert fingerprint(pipe.config.replace(num_heads=1)) != fingerprint(pipe.config)


def test_read_rgb_of_bytes_and_garbage():
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buf, format="PNG")
    assert read_rgb(buf.getvalue()).size == (3, 2)
    with pytest.raises(ValueError, match="not an image file"):
        read_rgb(b"hello")
