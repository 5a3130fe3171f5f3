"""What every ``rpfm`` subcommand shares: the device and dtype flags, writing a PNG, and the error handler.

It sits below every command module (``rpfm.cli`` registers the commands; ``rpfm.animate``, ``rpfm.train.cli`` and
the others import only from here), so no command module imports the module that imports it.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# Python argument names in library messages -> the CLI flags that set them, so CLI users read flag names.
FLAG_NAMES = {"source_image": "--source", "target_pose": "--pose", "num_inference_steps": "--steps",
              "num_steps": "--steps", "guidance_scale": "--guidance", "output_type": "--out"}


def device(name: str):
    """``--device`` value -> torch.device ("auto": CUDA when available, else CPU)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine. Use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device: {name!r} is not a device ({e}). Use auto, cpu, cuda or cuda:N.") from None


def save_png(image, path: Path, flag: str = "--out") -> None:
    """Write a PIL image as PNG atomically; the folder must exist."""
    from .fileio import atomic_write_bytes

    path = Path(path)
    if not path.parent.exists():
        raise SystemExit(f"{flag}: the folder '{path.parent}' does not exist. Create it first.")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def flag_message(message: str) -> str:
    """Replace Python argument names at the start of a message ("source_image: ...") with the CLI flag."""
    return re.sub(r"^([a-z_]+)(\[\d+\])?:", lambda m: f"{FLAG_NAMES.get(m.group(1), m.group(1))}{m.group(2) or ''}:"
                  if m.group(1) in FLAG_NAMES else m.group(0), message)


def plain(text: str | None) -> str | None:
    """A docstring as --help text: reST roles and literals (``x``, :func:`x`) become plain words."""
    if text is None:
        return None
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; errors meant for users print one line and exit 2 instead of a traceback."""
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        print(f"rpfm {args.command}: error: {flag_message(str(e))}", file=sys.stderr)
        return 2


__all__ = ["DTYPES", "FLAG_NAMES", "device", "save_png", "flag_message", "plain", "run"]
