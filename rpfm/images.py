"""User images in and out of the pipeline: anything reasonable -> (B, 3, H, W) tensor, and back.

``to_image_tensor`` accepts PIL images, file paths, numpy arrays, torch tensors and lists of those, and returns a
float (B, 3, H, W) tensor in the requested value range ("[-1,1]" for photos fed to the codec, "[0,1]" for rendered
poses). Conventions, so nothing is guessed silently:
  * PIL images, paths and uint8 arrays/tensors are 0..255 and get mapped to the requested range;
  * float numpy arrays are taken as [0, 1] (the usual image-array convention);
  * float tensors are taken as ALREADY in the requested range and only validated (with a small tolerance).
``to_output`` clamps decoded images (B, 3, H, W) in [-1, 1] and converts them to PIL / numpy / torch in [0, 1].

Validation and the device: both functions take ``checks`` (an ``rpfm.checks.Checks``). Without it every check runs
at once, as on the CPU. With it, the finite/range check of a device tensor is deferred (statistics reduced on the
device, read when ``checks.resolve()`` is called; same error messages), so validating a CUDA input does not make
the host wait for the device; ``to_output`` resolves ``checks`` itself once the images are on the host.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .checks import Checks, check_values
from .imagefile import read_rgb, to_rgb

VALUE_RANGES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0)}
OUTPUT_TYPES = ("pil", "np", "pt")
RANGE_TOLERANCE = 1e-2  # float inputs may overshoot their range this much (e.g. after a user's bicubic resize)
_ACCEPTED = ("a PIL.Image, a file path (str / pathlib.Path), a numpy array (H, W, 3) or (B, H, W, 3) "
             "[uint8 0..255 or float 0..1], a torch tensor (3, H, W) or (B, 3, H, W) [float in the value range, "
             "or uint8], or a list of those")


# ---------------------------------------------------------------------------------------------------- input
def to_image_tensor(image: Any, *, name: str = "image", size: int | tuple[int, int] | None = None,
                    value_range: str = "[-1,1]", resize: bool | str = False, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32, box: Any = None, checks: Checks | None = None) -> Tensor:
    """Convert user input to a (B, 3, H, W) ``dtype`` tensor on ``device`` with values in ``value_range``.

    Args:
        image: see the module docstring (PIL, path, array, tensor, or a list of them; lists are stacked).
        name: the argument name used in error messages (e.g. "source_image").
        size: required (H, W) (an int means square). None accepts any size (list items must still agree).
        value_range: "[-1,1]" or "[0,1]".
        resize: when the size differs: False raises ValueError; "stretch" (or True), "crop" or "fit" bring the
            image to ``size`` (``rpfm.framing``: "crop" and "fit" keep the aspect; bicubic with antialias).
        box: the person's (x1, y1, x2, y2) in pixels, for resize="crop" (None: the middle of the image); for a list
            of images, a list with one box (or None) per image.
        checks: where to defer the value checks of device tensors (see the module docstring); None checks now.
    """
    from .framing import check_resize

    resize = check_resize(resize)
    if value_range not in VALUE_RANGES:
        raise ValueError(f"{name}: value_range must be one of {list(VALUE_RANGES)}, got {value_range!r}.")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name}: dtype must be a floating torch.dtype, got {dtype!r}. Use e.g. torch.float32.")
    target = _parse_size(size, name)
    if isinstance(image, (list, tuple)):
        if len(image) == 0:
            raise ValueError(f"{name}: got an empty {type(image).__name__}. Pass at least one image.")
        boxes = box if isinstance(box, list) else [box] * len(image)    # one box per item, or one for all
        parts = [_one(item, f"{name}[{i}]", target, value_range, resize, nested=True, box=boxes[i], checks=checks)
                 for i, item in enumerate(image)]
        sizes = sorted({tuple(p.shape[-2:]) for p in parts})
        if len(sizes) > 1:
            raise ValueError(f"{name}: all images in a list must share one size, got sizes {sizes}. Resize them "
                             "first, or pass size=... with resize=True.")
        devices = {p.device for p in parts}
        x = torch.cat([p.to(next(iter(devices))) for p in parts]) if len(devices) > 1 else torch.cat(parts)
    else:
        x = _one(image, name, target, value_range, resize, nested=False, box=box, checks=checks)
    return to_device(x, device, dtype)


def to_device(x: Tensor, device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
    """``x.to(device, dtype)``; host data bound for a CUDA device goes through pinned memory without blocking (a
    copy from pageable memory would wait for all the work already queued on the device)."""
    if device is not None and x.device.type == "cpu" and torch.device(device).type == "cuda":
        return x.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return x.to(device=device, dtype=dtype)


def _parse_size(size: Any, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (size, size)
    if (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"{name}: size must be None, a positive int or an (H, W) pair of positive ints, got {size!r}.")


def _one(image: Any, name: str, target: tuple[int, int] | None, value_range: str, resize: str | None,
         nested: bool, box: Any = None, checks: Checks | None = None) -> Tensor:
    """One input (anything but a list) -> float32 (B, 3, H, W) in ``value_range``, sized to ``target``."""
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, name)
    if isinstance(image, Image.Image):
        x, in_range = _from_array(np.asarray(to_rgb(image, name=name)), name), "[0,1]"
    elif isinstance(image, np.ndarray):
        x, in_range = _from_array(image, name), "[0,1]"
    elif isinstance(image, Tensor):
        x, in_range = _from_tensor(image, name, value_range, checks)
    else:
        what = "a list of images" if nested and isinstance(image, (list, tuple)) else type(image).__name__
        raise TypeError(f"{name}: unsupported type {what}. Accepted: {_ACCEPTED}.")
    if x.numel() == 0:
        raise ValueError(f"{name}: got an empty batch or image of shape {tuple(x.shape)} (B, 3, H, W). Pass at "
                         "least one image of at least 1x1 pixels.")

    if target is not None and tuple(x.shape[-2:]) != target:
        got = "x".join(map(str, x.shape[-2:]))
        want = "x".join(map(str, target))
        if not resize:
            raise ValueError(f"{name}: expected a {want} image, got {got}. Resize it to {want} first, or pass "
                             "resize='crop' (square around the person), 'fit' (pad) or 'stretch'.")
        from .framing import resize_square

        # Poses are drawn on black: pad them with black; photos repeat their edge pixels.
        x = resize_square(x, target, resize, box=box, pad="zeros" if value_range == "[0,1]" else "replicate",
                          value_range=VALUE_RANGES[in_range])
    if in_range != value_range:  # only ever [0, 1] -> [-1, 1]: float tensors arrive in value_range already
        x = x * 2 - 1
    return x


def _open(path: str | os.PathLike, name: str) -> Image.Image:
    return read_rgb(path, name)  # 8-bit RGB, size-capped; 16-bit and alpha handled (rpfm.imagefile)


def _from_array(array: np.ndarray, name: str) -> Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 0..255 / float 0..1 -> float32 (B, 3, H, W) in [0, 1]."""
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        hint = "Pass an RGB array of shape (H, W, 3) or (B, H, W, 3)"
        if array.ndim == 2 or (array.ndim in (3, 4) and array.shape[-1] == 1):
            hint = "Grayscale: repeat it to 3 channels, e.g. np.repeat(a[..., None] if a.ndim == 2 else a, 3, -1)"
        elif array.ndim in (3, 4) and array.shape[-1] == 4:
            hint = "Drop the alpha channel with a[..., :3]"
        elif array.ndim in (3, 4) and array.shape[-3] == 3:
            hint = "It looks channels-first: move channels last with np.moveaxis(a, -3, -1)"
        raise ValueError(f"{name}: expected a numpy array of shape (H, W, 3) or (B, H, W, 3), got "
                         f"{array.shape}. {hint}.")
    if array.dtype == np.uint8:
        x = torch.from_numpy(array.astype(np.float32)) / 255  # astype copies: PIL-backed arrays are read-only
    elif np.issubdtype(array.dtype, np.floating):
        x = torch.from_numpy(array.astype(np.float32))
        _check_range(x, name, "[0,1]", "float numpy arrays are taken as [0, 1]")
    else:
        raise TypeError(f"{name}: numpy dtype {array.dtype} is not supported; expected uint8 (0..255) or float "
                        "(0..1). Convert with a.astype(np.uint8) or a.astype(np.float32) / 255.")
    if x.ndim == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2).contiguous()  # (B, H, W, 3) -> (B, 3, H, W)


def _from_tensor(tensor: Tensor, name: str, value_range: str, checks: Checks | None = None) -> tuple[Tensor, str]:
    """(3, H, W) / (B, 3, H, W): uint8 -> [0, 1]; float -> validated, left in ``value_range``."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        hint = "Pass (3, H, W) or (B, 3, H, W)"
        if tensor.ndim in (3, 4) and tensor.shape[-1] == 3:
            hint = "It looks channels-last: use x.permute(2, 0, 1) (or x.permute(0, 3, 1, 2) for a batch)"
        elif tensor.ndim in (3, 4) and tensor.shape[-3] == 4:
            hint = "Drop the alpha channel with x[..., :3, :, :]"
        elif tensor.ndim in (3, 4) and tensor.shape[-3] == 1:
            hint = "Grayscale: repeat it to 3 channels with x.expand(..., 3, H, W) / x.repeat_interleave(3, -3)"
        raise ValueError(f"{name}: expected a tensor of shape (3, H, W) or (B, 3, H, W), got "
                         f"{tuple(tensor.shape)}. {hint}.")
    x = tensor.detach()
    x = x[None] if x.ndim == 3 else x
    if x.dtype == torch.uint8:
        return x.float() / 255, "[0,1]"
    if not x.is_floating_point():
        raise TypeError(f"{name}: tensor dtype {tensor.dtype} is not supported; expected a float tensor in "
                        f"{value_range} or a uint8 tensor (0..255). Convert with x.float() or x.to(torch.uint8).")
    x = x.float()
    _check_range(x, name, value_range, "float tensors are taken as already in the requested range", checks)
    return x, value_range


def _check_range(x: Tensor, name: str, value_range: str, convention: str, checks: Checks | None = None) -> None:
    check_values(x, functools.partial(_judge_range, name, value_range, convention), checks)


_NOT_FINITE = "{name}: contains NaN or Inf values. Pass a finite image."


def _judge_range(name: str, value_range: str, convention: str, mn: float, mx: float) -> None:
    """Raise the range error for an image whose extremes are (mn, mx); a non-finite extreme means NaN or Inf."""
    if not (math.isfinite(mn) and math.isfinite(mx)):
        raise ValueError(_NOT_FINITE.format(name=name))
    lo, hi = VALUE_RANGES[value_range]
    if mn >= lo - RANGE_TOLERANCE and mx <= hi + RANGE_TOLERANCE:
        return
    if mx > 1.5:
        fix = "It looks like 0..255 values: divide by 255" + (" and map with x * 2 - 1" if lo < 0 else "") + \
              ", or pass uint8 data."
    elif value_range == "[0,1]" and mn < 0:
        fix = "It looks like [-1, 1] values: map them with (x + 1) / 2."
    else:
        fix = f"Rescale the data to {value_range}."
    raise ValueError(f"{name}: expected values in {value_range} ({convention}), got min {mn:.4g}, max {mx:.4g}. "
                     f"{fix}")


# ---------------------------------------------------------------------------------------------------- output
def to_output(images: Tensor, output_type: str = "pil",
              checks: Checks | None = None) -> list[Image.Image] | np.ndarray | Tensor:
    """Decoded images (B, 3, H, W) in [-1, 1] -> clamp, map to [0, 1], then convert.

    ``checks``: the call's pending checks. The NaN/Inf check of device images joins them; for "pil" and "np" they
    are all resolved here, after the copy to the host (which waits for the device anyway) and before a value is
    converted. For "pt" on a device the caller resolves them (the pipeline does before it returns).

    Returns:
        "pil": a list of B RGB PIL images; "np": float32 array (B, H, W, 3) in [0, 1];
        "pt": float32 tensor (B, 3, H, W) in [0, 1] on the input's device.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type: unknown value {output_type!r}. Choose one of {list(OUTPUT_TYPES)}.")
    if not isinstance(images, Tensor):
        raise TypeError(f"images: expected a torch.Tensor (B, 3, H, W) in [-1, 1], got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images: expected a float tensor of shape (B, 3, H, W) in [-1, 1], got shape "
                         f"{tuple(images.shape)} dtype {images.dtype}. Pass the codec's decode() output.")
    x = images.detach().float()
    check_values(x, _judge_decoded, checks)
    x = (x.clamp(-1, 1) + 1) / 2                                              # (B, 3, H, W) in [0, 1]
    if output_type == "pt":
        return x
    array = x.permute(0, 2, 3, 1).cpu().numpy()                               # (B, H, W, 3)
    if checks is not None:
        checks.resolve()                           # the copy above waited for the device: nothing left to wait for
    if output_type == "np":
        return np.ascontiguousarray(array)
    return [Image.fromarray(a) for a in (array * 255).round().astype(np.uint8)]


def _judge_decoded(mn: float, mx: float) -> None:
    if not (math.isfinite(mn) and math.isfinite(mx)):
        raise ValueError("images: the decoded images contain NaN or Inf (often a float16 overflow in the decoder). "
                         "Run the codec in float32 or bfloat16.")
