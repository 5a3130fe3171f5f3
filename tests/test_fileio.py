"""Atomic writes: the file appears whole or not at all, with the permissions a plain open() would give it."""
import os
import stat

import pytest

from rpfm.fileio import atomic_path, atomic_write_bytes


def test_atomic_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = atomic_write_bytes(tmp_path / "a.bin", b"x")
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(out.stat().st_mode) & 0o044 == 0o044   # readable by group and others


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]
