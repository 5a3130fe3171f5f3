"""Source/target pair datasets in the CFLD/GFLA folder layout (DeepFashion, and rpfm's synthetic benchmark).

Layout under ``root`` (spec §4.4–4.6)::

    train_highres/, test_highres/             images (DeepFashion: 256 x 176 or larger; synthetic: square)
    fasion-resize-annotation-{train,test}.csv  name:keypoints_y:keypoints_x (CFLD spelling "fasion")
    fasion-resize-pairs-{train,test}.csv       header "from,to" (GFLA split: 101,966 train / 8,570 test)
    meta.json                                  optional; rpfm's synthetic set records "keypoint_frame" here

Items follow the trainer's contract: ``{"source": (3, S, S) in [-1, 1], "target": (3, S, S) in [-1, 1],
"target_pose": (3, S, S) in [0, 1]}`` plus ``"source_name"``/``"target_name"``. Images are stretched to S x S
(bicubic, no padding: spec §4.5); keypoints follow. The skeleton is rendered with the X-MDPT renderer in a 256 x 256
frame (the scale its radius-4 joints and width-4 limbs were designed for) and resized to S when S != 256, so small
models see the same drawing, only smaller.

Training augmentation (``augment=True``, the default for the train split; spec §4.5): up-scale by 1 + U(0, 0.05)
and crop back at a random offset, horizontal flip with p = 0.5 (images and skeletons together, no left/right
relabelling), and a source/target swap with p = 0.5 (the pose then comes from the new target). Randomness comes
from (seed, epoch, index) only, so a resumed or distributed run sees the same items (call ``set_epoch``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..pose.formats import DEEPFASHION_SIZE, read_cfld_annotations
from ..pose.keypoints import Keypoints
from ..pose.render import render_pose_tensor

SPLITS = ("train", "test")


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


class PairFolderDataset(Dataset):
    """Pairs of one person in two poses, CFLD/GFLA layout (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int = 256, augment: bool | None = None,
                 seed: int = 0, keypoint_frame: tuple[int, int] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root: no folder at '{root}'. Generate the synthetic set with "
                                    f"`rpfm data synth --out {root}` or point to a DeepFashion CFLD-layout folder.")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}.")
        meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else {}
        frame = tuple(keypoint_frame or meta.get("keypoint_frame") or DEEPFASHION_SIZE)
        self.root, self.split, self.image_size, self.seed = root, split, int(image_size), int(seed)
        self.augment = (split == "train") if augment is None else bool(augment)
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
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ loading
    def _image(self, name: str) -> torch.Tensor:
        path = self.image_dir / name
        if not path.is_file():
            alt = path.with_suffix(".png")   # PIDM stores DeepFashion .jpg names as .png
            if not alt.is_file():
                raise FileNotFoundError(f"dataset: image '{name}' listed in the pairs is missing from "
                                        f"'{self.image_dir}'.")
            path = alt
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (self.image_size, self.image_size):
                im = im.resize((self.image_size, self.image_size), Image.BICUBIC)    # the 176 -> 256 stretch
            arr = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()                 # (3, S, S) in [0, 1]

    def __getitem__(self, index: int) -> dict:
        src_name, tgt_name = self.pairs[index]
        S = self.image_size
        src, tgt = self._image(src_name), self._image(tgt_name)
        kp_src = self.keypoints[src_name].resize((S, S))
        kp_tgt = self.keypoints[tgt_name].resize((S, S))
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < 0.5:                                                    # swap roles (X-MDPT)
                src, tgt, kp_src, kp_tgt = tgt, src, kp_tgt, kp_src
                src_name, tgt_name = tgt_name, src_name
            scale = 1.0 + rng.uniform(0.0, 0.05)
            big = int(round(S * scale))
            top, left = (int(rng.integers(0, big - S + 1)) for _ in range(2))
            flip = rng.random() < 0.5
            src, tgt = (self._scale_crop(x, big, top, left, flip) for x in (src, tgt))
            kp_tgt = kp_tgt.resize((big, big)).crop(top, left, (S, S))
            if flip:
                kp_tgt = kp_tgt.hflip()
        return {"source": src * 2 - 1, "target": tgt * 2 - 1, "target_pose": render_pose_tensor(kp_tgt, S),
                "source_name": src_name, "target_name": tgt_name}

    @staticmethod
    def _scale_crop(x: torch.Tensor, big: int, top: int, left: int, flip: bool) -> torch.Tensor:
        S = x.shape[-1]
        x = F.interpolate(x[None], size=(big, big), mode="bilinear", align_corners=False)[0]
        x = x[:, top:top + S, left:left + S].clamp(0, 1)
        return x.flip(-1) if flip else x

