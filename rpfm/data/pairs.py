"""Source/target pair datasets in the CFLD/GFLA folder layout (DeepFashion, and rpfm's synthetic benchmark).

Layout under ``root`` (spec §4.4–4.6)::

    train_highres/, test_highres/             images (DeepFashion: 256 x 176 or larger; synthetic: square)
    fasion-resize-annotation-{train,test}.csv  name:keypoints_y:keypoints_x (CFLD spelling "fasion")
    fasion-resize-pairs-{train,test}.csv       header "from,to" (GFLA split: 101,966 train / 8,570 test)
    meta.json                                  optional; rpfm's synthetic set records "keypoint_frame" here

Items, the S x S stretch, the skeleton rendering and the X-MDPT training augmentation (``augment=True``, the default
for the train split) are shared with the LMDB layout: see ``rpfm.data.pair_base``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

from ..imagefile import read_rgb
from ..pose.formats import DEEPFASHION_SIZE, read_cfld_annotations
from ..pose.keypoints import Keypoints
from .pair_base import SPLITS, PairDatasetBase

__all__ = ["SPLITS", "PairFolderDataset", "read_meta", "read_pairs"]


def read_meta(root: Path) -> dict:
    """``root/meta.json`` as a dict ({} when absent): rpfm's synthetic set records its keypoint frame there."""
    return json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else {}


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """``from,to`` rows of a CFLD pairs CSV (a leading index column, as pandas writes it, is accepted)."""
    if not path.is_file():
        raise FileNotFoundError(f"pairs: no file at '{path}'. The CFLD layout needs fasion-resize-pairs-<split>.csv.")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"pairs: '{path}' is empty.")
    header = [h.strip() for h in rows[0]]
    if "from" not in header or "to" not in header:
        raise ValueError(f"pairs: '{path}' line 1 must name the columns 'from' and 'to', got {rows[0]}.")
    i_from, i_to = header.index("from"), header.index("to")
    pairs = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"pairs: '{path}' line {lineno} has {len(row)} fields, the header has {len(header)}.")
        pairs.append((row[i_from].strip(), row[i_to].strip()))
    return pairs


class PairFolderDataset(PairDatasetBase):
    """Pairs of one person in two poses, CFLD/GFLA layout (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int = 256, augment: bool | None = None,
                 seed: int = 0, keypoint_frame: tuple[int, int] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root: no folder at '{root}'. Generate the synthetic set with "
                                    f"`rpfm data synth --out {root}` or point to a DeepFashion CFLD-layout folder.")
        super().__init__(split, image_size=image_size, augment=augment, seed=seed)
        meta = read_meta(root)
        frame = tuple(keypoint_frame or meta.get("keypoint_frame") or DEEPFASHION_SIZE)
        self.root = root
        self.image_dir = root / meta.get("image_dirs", {}).get(split, f"{split}_highres")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"dataset: no image folder '{self.image_dir}'.")
        self.keypoints = read_cfld_annotations(root / f"fasion-resize-annotation-{split}.csv", image_size=frame)
        self.pairs = read_pairs(root / f"fasion-resize-pairs-{split}.csv")
        for lineno, (a, b) in enumerate(self.pairs, start=2):
            for name in (a, b):
                if name not in self.keypoints:
                    raise ValueError(f"pairs: fasion-resize-pairs-{split}.csv line {lineno} names {name!r}, which has "
                                     f"no row in fasion-resize-annotation-{split}.csv. Fix or drop the pair.")

    def _open_image(self, name: str) -> Image.Image:
        path = self.image_dir / name
        if not path.is_file():
            alt = path.with_suffix(".png")   # PIDM stores DeepFashion .jpg names as .png
            if not alt.is_file():
                raise FileNotFoundError(f"dataset: image '{name}' listed in the pairs is missing from "
                                        f"'{self.image_dir}'.")
            path = alt
        return read_rgb(path, "dataset")

    def _keypoints(self, name: str) -> Keypoints:
        return self.keypoints[name].resize((self.image_size, self.image_size))
