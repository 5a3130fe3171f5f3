"""One entry point for every pair layout: ``open_dataset(root, split, image_size)`` detects which one ``root`` is.

=========  ==================================================  =================================================
layout     recognised by                                        dataset
=========  ==================================================  =================================================
folder     ``fasion-resize-pairs-<split>.csv``                  ``rpfm.data.pairs.PairFolderDataset`` (CFLD/GFLA
                                                                DeepFashion, ``rpfm data synth`` output)
lmdb       ``<split>_pairs.txt`` (and an ``N-N/`` LMDB folder)  ``rpfm.data.lmdb_pairs.PairLMDBDataset``
                                                                (PIDM/X-MDPT DeepFashion, ``rpfm data to-lmdb``)
=========  ==================================================  =================================================

Both yield the same items (``rpfm.data.pair_base``) and have ``pairs``, so training configs (dataset name ``auto``)
and ``rpfm eval --data`` take either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .pair_base import check_split

LAYOUTS = ("auto", "folder", "lmdb")


def detect_layout(root: str | Path, split: str = "train") -> str:
    """``"folder"`` or ``"lmdb"`` for the dataset at ``root`` (see the module docstring); raises if neither."""
    root, split = Path(root), check_split(split)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root: no folder at '{root}'. Generate the synthetic set with "
                                f"`rpfm data synth --out {root}`, or point to a DeepFashion folder (CFLD/GFLA or "
                                "PIDM/X-MDPT LMDB layout).")
    if (root / f"fasion-resize-pairs-{split}.csv").is_file():
        return "folder"
    if (root / f"{split}_pairs.txt").is_file():
        return "lmdb"
    listing = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    raise FileNotFoundError(f"dataset: '{root}' is in no known layout for split {split!r}: expected "
                            f"fasion-resize-pairs-{split}.csv (CFLD/GFLA folders, e.g. from `rpfm data synth`) or "
                            f"{split}_pairs.txt beside an LMDB folder such as 256-256/ (PIDM/X-MDPT), found "
                            f"{listing[:20] or 'an empty folder'}.")


def open_dataset(root: str | Path, split: str = "train", image_size: int = 256, *, layout: str = "auto",
                 **options: Any) -> Dataset:
    """The pair dataset at ``root`` in either layout; ``options`` (augment, seed, ...) go to its constructor."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}.")
    if layout == "auto":
        layout = detect_layout(root, split)
    if layout == "folder":
        from .pairs import PairFolderDataset

        return PairFolderDataset(root, split, image_size=image_size, **options)
    from .lmdb_pairs import PairLMDBDataset

    return PairLMDBDataset(root, split, image_size=image_size, **options)
