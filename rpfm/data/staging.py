"""Write a whole dataset folder atomically: build it in a temporary sibling, rename it into place at the end.

The staging folder ``.OUT.tmp-XXXXXXXX`` is locked (``flock``) while its writer runs. A killed writer leaves it
unlocked: the next run into the same ``out`` removes it (and a ``.OUT.old-*`` folder left by a swap that was cut
short) -- or, when it was made for the same work (``resume_key``), continues in it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..fileio import remove_stale_temporaries, try_lock

RESUME_FILE = ".rpfm-staging.json"


def check_out_dir(out: Path, *, overwrite: bool, arg: str = "out") -> None:
    """``out`` must be a new or empty folder, or any folder when ``overwrite`` (it will be replaced)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{arg}: '{out}' exists and is a file. Choose a folder path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{arg}: '{out}' exists and is not empty. Choose a new folder, or pass overwrite=True "
                         "(--overwrite) to replace it.")


def _resumable(out: Path, key: dict[str, Any]) -> tuple[Path, int] | None:
    """A staging folder of ``out`` that a killed run left for the same ``key``, with its lock taken, or None."""
    for tmp in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        marker = tmp / RESUME_FILE
        if not marker.is_file():
            continue
        fd = try_lock(tmp)
        if fd is None:
            continue
        try:
            same = json.loads(marker.read_text()) == key
        except (OSError, ValueError):
            same = False
        if same:
            return tmp, fd
        os.close(fd)
    return None


@contextlib.contextmanager
def staged_folder(out: Path, *, resume_key: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on an error it is removed.

    Call :func:`check_out_dir` first. An interrupted run leaves ``out`` as it was (the old folder, if any, is only
    removed once the new one is in place). Stale staging folders of ``out`` from killed runs are removed first,
    except that with ``resume_key`` (a JSON-able dict describing the work) one made for the same key is yielded
    again, with what it holds, so the caller can skip what is done; it is also kept when the run is interrupted
    (Ctrl-C), for the next run to continue.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    found = _resumable(out, resume_key) if resume_key is not None else None
    if found is not None:
        tmp, fd = found
    else:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        fd = try_lock(tmp)
    remove_stale_temporaries(out.parent, [out.name])       # other runs' leftovers (ours is locked)
    try:
        if resume_key is not None:
            (tmp / RESUME_FILE).write_text(json.dumps(resume_key, sort_keys=True))
        yield tmp
        (tmp / RESUME_FILE).unlink(missing_ok=True)
        move_into_place(tmp, out)
    except KeyboardInterrupt:
        if resume_key is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is set aside first and removed last."""
    old = None
    if out.exists():  # empty, or overwrite=True: keep it aside until the new folder is in place
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
