"""Image files in and out: decode any reasonable file to 8-bit RGB (or refuse with the reason), and write by extension.

Reading (:func:`read_rgb`, :func:`to_rgb`), so nothing arrives silently wrong:

* the decoded size is capped before any pixel is decoded: ``RPFM_MAX_IMAGE_PIXELS`` (default 8192 x 8192 =
  67,108,864 pixels, about 200 MB of RGB) -- a 140 KB PNG can decode to 12000 x 12000 (4.6 GB). Raise it with the
  environment variable (``RPFM_MAX_IMAGE_PIXELS=200000000``) or resize the image first;
* truncated or corrupt files and decompression bombs raise ValueError naming the file (never PIL's OSError);
* 16-bit images (PNG ``I;16`` / ``I`` grayscale; 16-bit RGB(A) PNGs, which PIL reduces to their high byte) keep
  their brightness: 0..65535 maps to 0..255 (PIL's own ``convert("RGB")`` clips them to white);
* CMYK, YCbCr, 1-bit, grayscale, palette and alpha images convert as PIL's ``convert("RGB")`` does (alpha is
  dropped); 32-bit float images are refused (their value range is not recorded in the file);
* the EXIF orientation is applied, so a phone photo comes out the way every viewer shows it.

Writing (:func:`save_image`): the format follows the extension (``IMAGE_SUFFIXES``), atomically.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS_ENV = "RPFM_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 8192 * 8192
# extension -> (PIL format, save options)
IMAGE_FORMATS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
                 ".webp": ("WEBP", {"lossless": True}), ".bmp": ("BMP", {}), ".tif": ("TIFF", {}),
                 ".tiff": ("TIFF", {})}
IMAGE_SUFFIXES = tuple(IMAGE_FORMATS)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


def max_image_pixels() -> int:
    """The decoded-size cap in pixels: ``RPFM_MAX_IMAGE_PIXELS`` when set (a positive int), else the default."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is None or not text.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV}: expected a positive number of pixels, got {text!r}.")
    return value


def _check_size(width: int, height: int, where: str) -> None:
    limit = max_image_pixels()
    if width * height > limit:
        raise ValueError(f"{where} decodes to {width}x{height} = {width * height:,} pixels, above the limit of "
                         f"{limit:,} pixels. Resize the image first, or raise the limit with the environment "
                         f"variable {MAX_PIXELS_ENV} (e.g. {MAX_PIXELS_ENV}={max(width * height, 2 * limit)}).")


def read_rgb(source: str | os.PathLike | bytes, name: str = "image") -> Image.Image:
    """Decode an image file (a path, or its bytes) to a loaded 8-bit RGB PIL image; see the module docstring.

    Raises FileNotFoundError for a missing file and ValueError (naming ``name`` and the file) for anything that
    cannot be decoded correctly.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        where, opener = f"{name}: the image", (lambda: io.BytesIO(bytes(source)))
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no image file at '{path}'" + (" (it is a folder)" if path.is_dir()
                                    else "") + ". Check the path.")
        where, opener = f"{name}: '{path}'", (lambda: open(path, "rb"))
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the cap below is ours
            Image.MAX_IMAGE_PIXELS = None
            with opener() as fh, Image.open(fh) as im:
                _check_size(im.width, im.height, where)
                im.load()
                return to_rgb(ImageOps.exif_transpose(im), name=name, where=where)
    except UnidentifiedImageError:
        raise ValueError(f"{where} is not an image file PIL can read. Pass a PNG or JPEG.") from None
    except _DECODE_ERRORS as e:
        raise ValueError(f"{where} is truncated or corrupt ({e}). Re-export or re-copy it.") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit



def to_rgb(im: Image.Image, *, name: str = "image", where: str | None = None) -> Image.Image:
    """Any PIL image -> 8-bit RGB, keeping the brightness of 16-bit images (see the module docstring)."""
    where = where or name
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"{where}: a 32-bit integer image with values outside 0..65535; convert it to an "
                             "8-bit RGB PNG first.")
        gray = ((a * 255 + 32767) // 65535).astype(np.uint8)                  # 0..65535 -> 0..255, rounded
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), "RGB")
    if mode == "F":
        raise ValueError(f"{where}: a 32-bit float image (mode F) has no defined value range. Convert it to an "
                         "8-bit RGB PNG first.")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise ValueError(f"{where}: PIL cannot convert mode {mode!r} to RGB ({e}). Save it as an RGB PNG or "
                         "JPEG first.") from None


def save_image(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image atomically in the format of ``path``'s extension (:data:`IMAGE_SUFFIXES`)."""
    from .fileio import atomic_write_bytes

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_FORMATS:
        raise ValueError(f"out: cannot write '{path}': unknown image extension {ext or '(none)'!r}. Use one of "
                         f"{', '.join(IMAGE_SUFFIXES)}.")
    fmt, options = IMAGE_FORMATS[ext]
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt, **options)
    return atomic_write_bytes(path, buf.getvalue())
