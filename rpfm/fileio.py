"""Atomic writes, stale-temporary clean-up, output-path checks and safe weight loading. Nothing here unpickles:
weights are safetensors only.

A file is written to a temporary sibling (``.NAME.XXXXXXXX.tmp``) and moved into place with ``os.replace`` (atomic on
POSIX), so a crash or a full disk never leaves a half-written checkpoint where a good one was. While it is being
written the temporary is held under an advisory lock (``flock``); a temporary nobody holds was left by a killed run,
and :func:`remove_stale_temporaries` deletes it (only rpfm's own temporary-name patterns, never other files).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; a temporary then counts as stale after a day
    fcntl = None

# What a third-party loader (diffusers, transformers, safetensors) raises for a file it cannot read.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError)

# mkstemp creates 0600 files; finished outputs get the permissions open() would give them (0666 minus the umask).
_UMASK = os.umask(0)
os.umask(_UMASK)


# The names rpfm's writers give their temporaries: mkstemp/mkdtemp add 8 characters from this alphabet.
_RANDOM = r"[a-z0-9_]{8}"
_TEMP_FILE = re.compile(rf"^\.(?P<name>.+)\.{_RANDOM}\.tmp$")                  # atomic_path: .NAME.XXXXXXXX.tmp
_TEMP_DIR = re.compile(rf"^\.(?P<name>.+)\.(?P<kind>tmp|old)-{_RANDOM}$")      # staged folders: .NAME.tmp-XXXXXXXX
_STALE_WITHOUT_FLOCK_S = 24 * 3600


def try_lock(path: str | os.PathLike) -> int | None:
    """Open ``path`` (a file or a folder) and take its exclusive advisory lock without waiting: the open descriptor
    (close it to release), or None when another process holds the lock or the path is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    if fcntl is None:  # pragma: no cover
        if time.time() - os.fstat(fd).st_mtime > _STALE_WITHOUT_FLOCK_S:
            return fd
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _hold(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def remove_stale_temporaries(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporaries a killed rpfm run left in ``folder``: ``.NAME.XXXXXXXX.tmp`` files (atomic writes) and
    ``.NAME.tmp-XXXXXXXX`` / ``.NAME.old-XXXXXXXX`` folders (staged dataset folders) whose lock nobody holds, for
    NAME in ``names`` (every NAME when None). A live writer's temporaries are locked and left alone; so is a
    ``.NAME.old-*`` folder while NAME itself is missing (it then holds the only copy). Returns what was removed."""
    folder = Path(folder)
    wanted = None if names is None else set(names)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_FILE.match(entry.name) or _TEMP_DIR.match(entry.name)
        if m is None or (wanted is not None and m.group("name") not in wanted):
            continue
        is_dir = m.re is _TEMP_DIR
        if is_dir != entry.is_dir():
            continue
        if is_dir and m.group("kind") == "old" and not (folder / m.group("name")).exists():
            continue                                # the swap was cut short: this is the only copy
        fd = try_lock(entry)
        if fd is None:
            continue
        try:
            if is_dir:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success fsync it and move it over ``path``. The temporary
    is locked while it exists, so :func:`remove_stale_temporaries` never takes it for a killed run's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _hold(fd)
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def check_output_file(path: str | os.PathLike, flag: str, *, suffixes: Iterable[str] | None = None) -> Path:
    """Check, before any work, that a file can be written at ``path``: a known suffix (when ``suffixes`` is
    given), not a folder, in an existing folder where a file can be created (probed with a real temporary file, so a
    read-only folder or file system is caught). Stale temporaries of ``path`` from killed runs are removed.
    Errors name ``flag`` (the CLI flag or argument) and say what to do."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag}: '{path}' is a folder. Give a file name inside it.")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag}: cannot write '{path}': unknown extension {path.suffix or '(none)'!r}. Use one "
                         f"of {', '.join(sorted(suffixes))}.")
    if not path.parent.exists():
        raise ValueError(f"{flag}: the folder '{path.parent}' does not exist. Create it first.")
    check_output_folder(path.parent, flag)
    remove_stale_temporaries(path.parent, [path.name])
    return path


def check_output_folder(folder: str | os.PathLike, flag: str) -> Path:
    """Check, before any work, that files can be written in ``folder``: it is not a file, and it (or, when it does
    not exist yet, its nearest existing parent, where it will be created) is a writable folder -- probed with a real
    temporary file, so a read-only folder or file system is caught. Nothing is created. Errors name ``flag``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag}: '{folder}' is a file, expected a folder. Choose another path.")
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{flag}: cannot create '{folder}': '{base}' is a file.")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".rpfm-write-probe.", suffix=".tmp")
    except OSError as e:
        raise ValueError(f"{flag}: cannot write in '{base}' ({e.strerror or e}). Choose a writable folder.") \
            from None
    os.close(fd)
    os.unlink(probe)
    return folder


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (tensors made contiguous and detached)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file raises with the path and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no file at '{path}'. Save the model with save_pretrained() or copy the "
                                f"release folder completely.")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"weights: '{path}' is truncated or not a valid safetensors file ({e}). Re-save or "
                         f"re-copy it; checkpoints are only ever read as safetensors (never pickle).") from e


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file ({} when it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"weights: '{path}' is truncated or not a valid safetensors file ({e}).") from e


def check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights whose dtype kind differs from the module's (e.g. int64 for a float parameter) or that hold
    NaN/Inf, naming the tensors. ``expected`` is the module's state dict (shapes are checked by the caller)."""
    def head(items: list[str]) -> str:
        return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

    wrong = sorted(f"{k}: {v.dtype}" for k, v in state.items()
                   if k in expected and v.is_floating_point() != expected[k].is_floating_point())
    if wrong:
        raise ValueError(f"{what}: tensors of the wrong dtype ({head(wrong)}; the model's are "
                         f"{expected[wrong[0].split(':')[0]].dtype}). The file was not written for this model; "
                         "re-save it with save_pretrained() or convert it with `rpfm convert`.")
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise ValueError(f"{what}: NaN or Inf values in {head(bad)}. The weights are corrupted (or training "
                         "diverged): use an earlier checkpoint.")


def check_module_weights(module: torch.nn.Module, what: str) -> None:
    """Refuse a loaded module whose weights hold NaN or Inf (a corrupted file), naming the tensors."""
    state = module.state_dict()
    check_tensors(state, state, what)


def read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at '{path}'.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: '{path}' is not valid JSON ({e}).") from e
