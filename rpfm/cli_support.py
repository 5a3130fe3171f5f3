"""What every ``rpfm`` subcommand shares: the device and dtype flags, writing a PNG, and the error handler.

It sits below every command module (``rpfm.cli`` registers the commands; ``rpfm.animate``, ``rpfm.train.cli`` and
the others import only from here), so no command module imports the module that imports it.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import re
import sys
import warnings
from pathlib import Path

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SEED_MAX = 2**64 - 1                     # torch.Generator.manual_seed takes seeds up to this

# Python argument names in library messages -> the CLI flags that set them, so CLI users read flag names.
FLAG_NAMES = {"source_image": "--source", "target_pose": "--pose", "num_inference_steps": "--steps",
              "num_steps": "--steps", "guidance_scale": "--guidance", "output_type": "--out",
              "batch_size": "--batch-size", "max_frames": "--max-frames", "out_dir": "--out", "fps": "--fps",
              "seed": "--seed"}


def device(name: str):
    """``--device`` value -> torch.device ("auto": CUDA when available, else CPU; others checked)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .pipeline import check_device

    return check_device(name, name="--device")


def check_out_image(path: str) -> Path:
    """--out of an image command: checked (extension, folder, writable) before any work."""
    from .fileio import check_output_file
    from .imagefile import IMAGE_SUFFIXES

    return check_output_file(path, "--out", suffixes=IMAGE_SUFFIXES)


def save_image(image, path: Path) -> None:
    """Write a PIL image atomically in the format of the extension (see :func:`rpfm.imagefile.save_image`)."""
    from .imagefile import save_image as _save_image

    _save_image(image, path)


def save_png(image, path: Path, flag: str = "--out") -> None:
    """Write a PIL image as PNG atomically; the folder must exist."""
    from .fileio import atomic_write_bytes

    path = Path(path)
    if not path.parent.exists():
        raise ValueError(f"{flag}: the folder '{path.parent}' does not exist. Create it first.")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------- argument types
# argparse types: a bad value stops the command at parsing ("rpfm CMD: error: argument --flag: ..."), before any work.
def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def float_in(lo: float | None = None, *, lo_open: bool = False):
    """A finite float, at least ``lo`` (greater than ``lo`` when ``lo_open``) when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)):
            bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo:g}"
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}")
        return value

    return parse


def seed_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed in 0 .. 2**64 - 1, got {value}")
    return value


positive_int = int_at_least(1)


def flag_names(message: str, names: dict[str, str] | None = None) -> str:
    """Rewrite Python argument names at the start of an error message (``num_steps: ...``, ``source_image[0]: ...``)
    and ``resize=True`` hints into the CLI flags the user typed."""
    names = {**FLAG_NAMES, **(names or {})}
    message = message.replace("pass resize=True", "pass --resize")
    message = re.sub(r"\bresize='(\w+)'", r"--resize \1", message)     # "pass resize='crop'" -> "--resize crop"
    m = re.match(r"^(\w+)(?=[\[:])", message)
    if m and m.group(1) in names:
        message = names[m.group(1)] + message[m.end():]
    return message


flag_message = flag_names


def plain(text: str | None) -> str | None:
    """A docstring as --help text: reST roles and literals (``x``, :func:`x`) become plain words."""
    if text is None:
        return None
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


# ---------------------------------------------------------------------------------------------------- errors
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError, ImportError)
DEBUG_ENV = "RPFM_DEBUG"


def command_label(args: argparse.Namespace) -> str:
    """'generate', 'data synth', ...: the words the user typed to pick the command."""
    words = [args.command] + [v for k, v in sorted(vars(args).items()) if k.endswith("_command") and
                              k != "command" and isinstance(v, str)]
    return " ".join(words)


def _describe(e: BaseException) -> str:
    """The message; an OS error raised by the system (errno set) as "Permission denied: 'path'"."""
    if isinstance(e, OSError) and e.strerror:
        files = "".join(f" '{f}'" for f in (e.filename, e.filename2) if f)
        return f"{e.strerror}:{files}" if files else e.strerror
    return str(e) or type(e).__name__


def run(args: argparse.Namespace) -> int:
    """Run a parsed command. Errors meant for users (bad values, missing or unreadable files, OS errors) print one
    line ``rpfm COMMAND: error: ...`` and return 2; warnings print as ``rpfm COMMAND: warning: ...``. Anything else
    is reported the same way as an unexpected error (set RPFM_DEBUG=1 for the traceback)."""
    label = command_label(args)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"rpfm {label}: warning: {message}", file=sys.stderr, flush=True)

    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"rpfm {label}: interrupted", file=sys.stderr)
            return 130
        except USER_ERRORS as e:
            if debug:
                raise
            print(f"rpfm {label}: error: {flag_names(_describe(e), getattr(args, '_flag_names', None))}",
                  file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 -- the last line of defence against a raw traceback
            if debug:
                raise
            print(f"rpfm {label}: error: unexpected {type(e).__name__}: {str(e).rstrip('.')}. This is a bug in "
                  f"rpfm; run again with {DEBUG_ENV}=1 for the traceback and report it.", file=sys.stderr)
            return 2


__all__ = ["DTYPES", "FLAG_NAMES", "SEED_MAX", "USER_ERRORS", "DEBUG_ENV", "device", "check_out_image", "save_image",
           "save_png", "int_at_least", "float_in", "seed_arg", "positive_int", "flag_names", "flag_message", "plain",
           "command_label", "run"]
