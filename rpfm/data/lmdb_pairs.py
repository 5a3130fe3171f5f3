"""Source/target pair datasets in the PIDM/X-MDPT LMDB layout (DeepFashion as PIDM's ``prepare_data.py`` writes it).

Layout under ``root`` (spec §4.4–4.6)::

    256-256/ (and/or 512-512/)   an LMDB environment (data.mdb): key = image path with the extension replaced by
                                 ``.png`` (UTF-8), value = the image stretched to N x N, PNG (JPEG also accepted);
                                 PIDM also stores a ``length`` key, which is ignored
    train_pairs.txt, test_pairs.txt
                                 comma separated, no header; the FIRST field is the target, every further field a
                                 source of that target, e.g. ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg,...``
    pose/<path>.txt              per-image keypoints: ``img/`` -> ``pose/`` (a path without ``img/`` goes under
                                 ``pose/``), extension -> ``.txt``; 18 rows ``x y`` in the PIDM frame (256 x 256,
                                 the 176-px-wide person 40 px from the left; -1 missing)
    fasion-resize-annotation-<split>.csv
                                 used instead of pose/ when there is no pose/ folder (CFLD format, names as in the
                                 pairs file; frame from meta.json ``keypoint_frame``, else 256 x 176)

The LMDB folder is ``root/<S>-<S>`` for ``image_size`` S; when that one is absent, the only ``N-N`` folder there, or
(several) the smallest one larger than S, else the largest; ``lmdb_dir`` picks one explicitly.

Pairs: every (source, target) combination of a line is one item, in file order, so a line ``t,s1,s2`` gives the
items (s1, t) and (s2, t). PIDM instead draws one source per line at random on every access; expanding keeps items
deterministic and makes ``len()`` the number of pairs, as in the CFLD layout. ``pairs`` and item names are the
names as written in the pairs file (DeepFashion's ``.jpg``), the LMDB key is derived from them.

Items, the stretch, the skeleton rendering and the training augmentation are those of ``PairFolderDataset``
(``rpfm.data.pair_base``). Needs the ``lmdb`` package: ``pip install 'rpfm[lmdb]'``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from PIL import Image

from ..imagefile import read_rgb
from ..pose.formats import DEEPFASHION_SIZE, read_cfld_annotations, read_pidm_txt
from ..pose.keypoints import Keypoints
from .pair_base import PairDatasetBase, check_split
from .pairs import read_meta

LMDB_DIR_PATTERN = re.compile(r"(\d+)-(\d+)")


class OptionalDependencyError(ImportError, RuntimeError):
    """An optional package is missing (a RuntimeError too, so the CLI prints it as a one-line error)."""


def require_lmdb() -> Any:
    """Import the ``lmdb`` package, or raise naming the extra that installs it."""
    try:
        import lmdb
    except ImportError:
        raise OptionalDependencyError("the PIDM/X-MDPT LMDB dataset layout needs the 'lmdb' package. Install it with "
                                      "`pip install 'rpfm[lmdb]'` (or `pip install lmdb`).") from None
    return lmdb


def lmdb_key(name: str) -> bytes:
    """The LMDB key of an image named ``name`` in a pairs file: the path with its extension replaced by ``.png``."""
    return (os.path.splitext(name)[0] + ".png").encode("utf-8")


def pose_path(root: Path, name: str) -> Path:
    """``root/pose/...txt`` for the image ``name`` (``img/`` -> ``pose/``, extension -> ``.txt``)."""
    rel = name[len("img/"):] if name.startswith("img/") else name
    return root / "pose" / (os.path.splitext(rel)[0] + ".txt")


def read_pidm_pairs(path: Path) -> list[tuple[str, str]]:
    """A PIDM ``<split>_pairs.txt`` -> [(source, target), ...]: target first on each line, then its sources."""
    if not path.is_file():
        raise FileNotFoundError(f"pairs: no file at '{path}'. The PIDM/X-MDPT layout needs train_pairs.txt and "
                                "test_pairs.txt beside the LMDB folder.")
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or not all(fields):
            raise ValueError(f"pairs: '{path}' line {lineno} must be 'target,source[,source...]' (comma separated, "
                             f"target first), got {line[:120]!r}.")
        pairs += [(src, fields[0]) for src in fields[1:]]
    if not pairs:
        raise ValueError(f"pairs: '{path}' holds no pairs.")
    return pairs


def find_lmdb_dir(root: Path, image_size: int) -> Path:
    """The LMDB folder to read for ``image_size`` (rules in the module docstring)."""
    preferred = root / f"{image_size}-{image_size}"
    if (preferred / "data.mdb").is_file():
        return preferred
    found = sorted((int(m.group(1)), p) for p in root.iterdir()
                   if p.is_dir() and (m := LMDB_DIR_PATTERN.fullmatch(p.name)) and (p / "data.mdb").is_file())
    if not found:
        listing = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        raise FileNotFoundError(f"dataset: no LMDB folder in '{root}': expected '{preferred.name}/' (or another "
                                f"'N-N/') holding data.mdb, found {listing[:20] or 'an empty folder'}. Convert a "
                                "CFLD-layout dataset with `rpfm data to-lmdb`, or run PIDM's prepare_data.py.")
    larger = [p for n, p in found if n > image_size]
    return larger[0] if larger else found[-1][1]


_ENVS: dict[tuple[str, int], Any] = {}


def open_env(path: Path) -> Any:
    """A read-only LMDB environment for ``path``, one per process and data file (shared by every dataset object).

    LMDB refuses to open one environment twice in a process, so datasets never open their own. The handle holds
    no lock (read-only, ``lock=False``), so DataLoader workers forked after the first read keep using it; a
    spawned worker opens its own (the cache is per process). Keyed by the data file's inode too, so an LMDB
    rebuilt at the same path is opened afresh.
    """
    data = Path(path) / "data.mdb"
    key = (str(data.resolve()), data.stat().st_ino)
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = require_lmdb().open(str(path), readonly=True, lock=False, readahead=False,
                                               meminit=False, max_readers=256)
    return env


class PairLMDBDataset(PairDatasetBase):
    """Pairs of one person in two poses, PIDM/X-MDPT LMDB layout (see the module docstring).

    Args:
        root: the folder holding ``256-256/`` (or ``512-512/``), ``<split>_pairs.txt`` and ``pose/``.
        split: "train" or "test".
        image_size: the model's square size S; images are stretched to S x S, keypoints follow.
        augment: X-MDPT's training augmentation; default: on for "train", off for "test".
        seed: augmentation seed (with the epoch and the index).
        lmdb_dir: the LMDB folder, relative to ``root`` or absolute; default: chosen from ``image_size``.
        keypoint_frame: (H, W) of the CFLD annotation CSV when that is the keypoint source; default: meta.json's
            ``keypoint_frame``, else DeepFashion's (256, 176).
    """

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int = 256, augment: bool | None = None,
                 seed: int = 0, lmdb_dir: str | Path | None = None, keypoint_frame: tuple[int, int] | None = None):
        require_lmdb()
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root: no folder at '{root}'. Convert a CFLD-layout dataset with "
                                    f"`rpfm data to-lmdb --data CFLD_ROOT --out {root}` or point to a PIDM/X-MDPT "
                                    "DeepFashion folder.")
        super().__init__(check_split(split), image_size=image_size, augment=augment, seed=seed)
        self.root = root
        self.lmdb_dir = (root / lmdb_dir) if lmdb_dir is not None else find_lmdb_dir(root, self.image_size)
        if not (self.lmdb_dir / "data.mdb").is_file():
            raise FileNotFoundError(f"lmdb_dir: no LMDB environment (data.mdb) in '{self.lmdb_dir}'.")
        pairs_file = root / f"{split}_pairs.txt"
        self.pairs = read_pidm_pairs(pairs_file)
        names = list(dict.fromkeys(n for pair in self.pairs for n in pair))
        with open_env(self.lmdb_dir).begin() as txn:
            missing = [n for n in names if txn.get(lmdb_key(n)) is None]
        if missing:
            raise ValueError(f"pairs: {pairs_file.name} names {len(missing)} image(s) that are not in the LMDB "
                             f"'{self.lmdb_dir}', e.g. {missing[0]!r} (looked up as key "
                             f"{lmdb_key(missing[0]).decode()!r}). Fix the pairs file or rebuild the LMDB.")
        self.annotations: dict[str, Keypoints] | None = None
        csv_file = root / f"fasion-resize-annotation-{split}.csv"
        if (root / "pose").is_dir():
            absent = [n for n in names if not pose_path(root, n).is_file()]
            if absent:
                raise FileNotFoundError(f"dataset: no keypoint file for {len(absent)} image(s) of {pairs_file.name}, "
                                        f"e.g. '{pose_path(root, absent[0])}' for {absent[0]!r}.")
        elif csv_file.is_file():
            frame = tuple(keypoint_frame or read_meta(root).get("keypoint_frame") or DEEPFASHION_SIZE)
            self.annotations = read_cfld_annotations(csv_file, image_size=frame)
            absent = [n for n in names if n not in self.annotations]
            if absent:
                raise ValueError(f"pairs: {pairs_file.name} names {absent[0]!r}, which has no row in "
                                 f"{csv_file.name} ({len(absent)} such image(s)).")
        else:
            raise FileNotFoundError(f"dataset: no keypoints in '{root}': expected a pose/ folder of PIDM .txt files "
                                    f"or {csv_file.name}.")

    # ------------------------------------------------------------------ look-ups
    def _open_image(self, name: str) -> Image.Image:
        with open_env(self.lmdb_dir).begin() as txn:
            data = txn.get(lmdb_key(name))
        if data is None:
            raise FileNotFoundError(f"dataset: image {name!r} (key {lmdb_key(name).decode()!r}) is missing from the "
                                    f"LMDB '{self.lmdb_dir}'.")
        return read_rgb(data, f"dataset image {name!r} in the LMDB")

    def _keypoints(self, name: str) -> Keypoints:
        S = self.image_size
        if self.annotations is not None:
            return self.annotations[name].resize((S, S))
        return read_pidm_txt(pose_path(self.root, name)).pidm_to_image((S, S))
