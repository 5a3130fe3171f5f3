"""to_image_tensor / to_output: every accepted input kind and every error path."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from rpfm.images import to_image_tensor, to_output  # noqa: E402


def rgb(h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def expected_unit(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


# ---------------------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("value_range", ["[-1,1]", "[0,1]"])
def test_pil_rgb(value_range):
    array = rgb()
    x = to_image_tensor(Image.fromarray(array), name="img", size=8, value_range=value_range)
    unit = expected_unit(array)
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x, unit * 2 - 1 if value_range == "[-1,1]" else unit)


def test_pil_modes_are_converted_to_rgb():
    array = rgb()
    rgba = Image.fromarray(np.concatenate([array, np.full((8, 8, 1), 7, np.uint8)], -1))
    torch.testing.assert_close(to_image_tensor(rgba, value_range="[0,1]"), expected_unit(array))
    gray = Image.fromarray(array[..., 0])
    x = to_image_tensor(gray, value_range="[0,1]")
    assert x.shape == (1, 3, 8, 8)
    torch.testing.assert_close(x[0, 0], x[0, 2])
    torch.testing.assert_close(x[0, 0], torch.from_numpy(array[..., 0]).float() / 255)


def test_list_of_pil_and_paths(tmp_path):
    a, b = rgb(seed=1), rgb(seed=2)
    Image.fromarray(b).save(tmp_path / "b.png")
    x = to_image_tensor([Image.fromarray(a), tmp_path / "b.png", str(tmp_path / "b.png")], value_range="[0,1]")
    assert x.shape == (3, 3, 8, 8)
    torch.testing.assert_close(x[:1], expected_unit(a))
    torch.testing.assert_close(x[1:2], expected_unit(b))
    torch.testing.assert_close(x[2:], expected_unit(b))


def test_numpy_uint8_and_float():
    a = rgb()
    torch.testing.assert_close(to_image_tensor(a, value_range="[0,1]"), expected_unit(a))
    batch = np.stack([a, rgb(seed=3)])
    assert to_image_tensor(batch).shape == (2, 3, 8, 8)
    as_float = a.astype(np.float64) / 255
    torch.testing.assert_close(to_image_tensor(as_float, value_range="[-1,1]"), expected_unit(a) * 2 - 1)


def test_tensor_float_is_kept_as_given():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out = to_image_tensor(x, value_range="[-1,1]", size=(8, 8))
    assert torch.equal(out, x)
    single = to_image_tensor(x[0], value_range="[-1,1]")
    assert single.shape == (1, 3, 8, 8) and torch.equal(single[0], x[0])
    unit = torch.rand(3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(to_image_tensor(unit, value_range="[0,1]")[0], unit.float())


def test_tensor_uint8():
    a = rgb()
    t = torch.from_numpy(a).permute(2, 0, 1).contiguous()
    torch.testing.assert_close(to_image_tensor(t, value_range="[-1,1]"), expected_unit(a) * 2 - 1)
    assert to_image_tensor(t[None].expand(2, -1, -1, -1)).shape == (2, 3, 8, 8)


def test_device_and_dtype():
    x = to_image_tensor(rgb(), device="cpu", dtype=torch.bfloat16)
    assert x.dtype == torch.bfloat16 and x.device.type == "cpu"
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        to_image_tensor(rgb(), dtype=torch.int64)


def test_resize_when_asked():
    a = rgb(16, 12)
    with pytest.raises(ValueError, match=r"img: expected a 8x8 image, got 16x12\. Resize it to 8x8 first, or pass "
                                         r"resize='crop' \(square around the person\), 'fit' \(pad\) or 'stretch'"):
        to_image_tensor(a, name="img", size=8)
    x = to_image_tensor(a, name="img", size=8, resize=True, value_range="[0,1]")
    expected = F.interpolate(expected_unit(a), size=(8, 8), mode="bicubic", align_corners=False,
                             antialias=True).clamp(0, 1)
    torch.testing.assert_close(x, expected)
    # Float tensors resize in their own range and stay within it.
    t = torch.rand(1, 3, 16, 16) * 2 - 1
    y = to_image_tensor(t, size=(8, 4), resize=True, value_range="[-1,1]")
    assert y.shape == (1, 3, 8, 4) and y.min() >= -1 and y.max() <= 1


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(1, 4, 8, 8), ValueError, r"pose: expected a tensor of shape \(3, H, W\).*\(1, 4, 8, 8\).*alpha"),
    (torch.zeros(8, 8, 3), ValueError, r"pose: .*channels-last.*permute"),
    (torch.zeros(1, 1, 8, 8), ValueError, r"pose: .*Grayscale"),
    (torch.zeros(8, 8), ValueError, r"pose: expected a tensor of shape"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), TypeError, r"pose: tensor dtype torch.int64 is not supported"),
    (torch.full((1, 3, 8, 8), 255.0), ValueError, r"pose: expected values in \[0,1\].*max 255.*divide by 255"),
    (torch.full((1, 3, 8, 8), -1.0), ValueError, r"pose: expected values in \[0,1\].*\(x \+ 1\) / 2"),
    (torch.full((1, 3, 8, 8), float("nan")), ValueError, r"pose: contains NaN"),
    (np.zeros((8, 8, 1), np.uint8), ValueError, r"pose: expected a numpy array .*\(8, 8, 1\).*Grayscale"),
    (np.zeros((8, 8), np.uint8), ValueError, r"pose: .*Grayscale"),
    (np.zeros((8, 8, 4), np.uint8), ValueError, r"pose: .*alpha"),
    (np.zeros((3, 8, 8), np.uint8), ValueError, r"pose: .*channels-first.*np.moveaxis"),
    (np.zeros((8, 8, 3), np.int32), TypeError, r"pose: numpy dtype int32 is not supported"),
    (np.full((8, 8, 3), 200.0), ValueError, r"pose: expected values in \[0,1\] \(float numpy arrays"),
    (12, TypeError, r"pose: unsupported type int\. Accepted: a PIL.Image, a file path"),
    ([], ValueError, r"pose: got an empty list"),
    ([[Image.new("RGB", (8, 8))]], TypeError, r"pose\[0\]: unsupported type a list of images"),
])
def test_bad_inputs(bad, error, match):
    with pytest.raises(error, match=match):
        to_image_tensor(bad, name="pose", value_range="[0,1]")


def test_float_tensor_out_of_range_for_minus_one_one():
    with pytest.raises(ValueError, match=r"source: expected values in \[-1,1\].*x \* 2 - 1"):
        to_image_tensor(torch.full((3, 8, 8), 255.0), name="source", value_range="[-1,1]")
    # Within tolerance is accepted.
    x = torch.full((3, 8, 8), 1.005)
    assert to_image_tensor(x, name="source", value_range="[-1,1]").shape == (1, 3, 8, 8)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"source: no image file at '.*nope\.png'"):
        to_image_tensor(tmp_path / "nope.png", name="source")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="source: '.*text.png' is not an image file"):
        to_image_tensor(str(tmp_path / "text.png"), name="source")


def test_list_sizes_must_agree_and_bad_arguments():
    with pytest.raises(ValueError, match=r"src: all images in a list must share one size.*\(4, 4\), \(8, 8\)"):
        to_image_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4))], name="src")
    with pytest.raises(ValueError, match=r"src\[1\]: expected a 8x8 image, got 4x4"):
        to_image_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4))], name="src", size=8)
    with pytest.raises(ValueError, match=r"src: value_range must be one of \['\[-1,1\]', '\[0,1\]'\]"):
        to_image_tensor(rgb(), name="src", value_range="[0,255]")
    with pytest.raises(ValueError, match=r"src: size must be None, a positive int or an \(H, W\) pair"):
        to_image_tensor(rgb(), name="src", size=(8, 8, 8))


# ---------------------------------------------------------------------------------------------------- outputs
def test_to_output_all_types():
    images = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(2, 3, 4, 5).contiguous()
    pt = to_output(images, "pt")
    assert pt.shape == (2, 3, 4, 5) and pt.dtype == torch.float32
    torch.testing.assert_close(pt[0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    arr = to_output(images, "np")
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 4, 5, 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[0, 0, :, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    pil = to_output(images.to(torch.bfloat16))
    assert isinstance(pil, list) and len(pil) == 2 and pil[0].size == (5, 4) and pil[0].mode == "RGB"
    assert list(np.asarray(pil[0])[0, :, 0]) == [0, 0, 128, 255, 255]


def test_to_output_round_trips_with_to_image_tensor():
    a = rgb()
    x = to_image_tensor(Image.fromarray(a), value_range="[-1,1]")
    assert np.array_equal(np.asarray(to_output(x, "pil")[0]), a)


@pytest.mark.parametrize("images, output_type, error, match", [
    (torch.zeros(1, 3, 4, 4), "latent", ValueError, r"output_type: unknown value 'latent'.*\['pil', 'np', 'pt'\]"),
    (np.zeros((1, 3, 4, 4)), "pil", TypeError, r"images: expected a torch.Tensor"),
    (torch.zeros(3, 4, 4), "pil", ValueError, r"images: expected a float tensor of shape \(B, 3, H, W\)"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "np", ValueError, r"dtype torch.uint8"),
    (torch.full((1, 3, 4, 4), float("nan")), "pil", ValueError, r"NaN or Inf"),
])
def test_to_output_errors(images, output_type, error, match):
    with pytest.raises(error, match=match):
        to_output(images, output_type)
