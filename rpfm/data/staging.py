"""Write a whole dataset folder atomically: build it in a temporary sibling, rename it into place at the end."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator



def check_out_dir(out: Path, *, overwrite: bool, arg: str = "out") -> None:
    """``out`` must be a new or empty folder, or any folder when ``overwrite`` (it will be replaced)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{arg}: '{out}' exists and is a file. Choose a folder path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{arg}: '{out}' exists and is not empty. Choose a new folder, or pass overwrite=True "
                         "(--overwrite) to replace it.")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it replaces ``out``, on any error it is removed.

    Call :func:`check_out_dir` first. An interrupted run leaves ``out`` as it was (the old folder, if any, is only
    removed once the new one is in place).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is set aside first and removed last."""
    old = None
    if out.exists():  # empty, or overwrite=True: keep it aside until the new folder is in place
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
