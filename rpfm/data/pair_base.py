"""The part every source/target pair dataset shares: the item contract, the image stretch, and X-MDPT's augmentation.

A layout (``rpfm.data.pairs`` for the CFLD/GFLA folders, ``rpfm.data.lmdb_pairs`` for the PIDM/X-MDPT LMDB)
subclasses :class:`PairDatasetBase`, fills ``self.pairs`` with (source name, target name) tuples and implements two
look-ups: ``_open_image(name)`` -> a PIL image, and ``_keypoints(name)`` -> that image's :class:`Keypoints` in the
stretched S x S frame. Everything else lives here, so both layouts yield identical items for identical data.

Items (the trainer's contract, ``rpfm.train.data``)::

    {"source": (3, S, S) float32 in [-1, 1], "target": (3, S, S) float32 in [-1, 1],
     "target_pose": (3, S, S) float32 in [0, 1], "source_name": str, "target_name": str}

Images are stretched to S x S (bicubic, no padding: spec §4.5). The skeleton is rendered with the X-MDPT renderer in
a 256 x 256 frame and resized to S (``render_pose_tensor``). Training augmentation (spec §4.5), from
(seed, epoch, index) only: swap source and target with p = 0.5 (the pose then comes from the new target), up-scale
by 1 + U(0, 0.05) and crop back at a random offset, horizontal flip with p = 0.5 (images and skeleton together, no
left/right relabelling).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..pose.keypoints import Keypoints
from ..pose.render import render_pose_tensor

SPLITS = ("train", "test")


def stretch_rgb(im: Image.Image, size: int) -> Image.Image:
    """RGB, stretched to size x size with bicubic, no padding (spec §4.5; DeepFashion's 176 -> 256 stretch)."""
    im = im.convert("RGB")
    return im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)


def image_to_tensor(im: Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) float32 in [0, 1] (``stretch_rgb``, then /255)."""
    arr = np.asarray(stretch_rgb(im, size), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}.")
    return split


class PairDatasetBase(Dataset):
    """Pairs of one person in two poses; subclasses provide ``pairs``, ``_open_image`` and ``_keypoints``."""

    pairs: list[tuple[str, str]]

    def __init__(self, split: str, *, image_size: int, augment: bool | None, seed: int):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
            raise ValueError(f"image_size: expected a positive int (the model's square size), got {image_size!r}.")
        self.split, self.image_size, self.seed = check_split(split), int(image_size), int(seed)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ per-layout look-ups
    def _open_image(self, name: str) -> Image.Image:
        """The image called ``name`` in the pairs, decoded (any mode and size)."""
        raise NotImplementedError

    def _keypoints(self, name: str) -> Keypoints:
        """The keypoints of image ``name`` in the stretched (S, S) frame."""
        raise NotImplementedError

    # ------------------------------------------------------------------ items
    def _image(self, name: str) -> torch.Tensor:
        im = self._open_image(name)
        try:
            return image_to_tensor(im, self.image_size)                            # (3, S, S) in [0, 1]
        finally:
            im.close()

    def image_and_pose(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One image without augmentation: (3, S, S) in [-1, 1] and its rendered skeleton (3, S, S) in [0, 1]. An
        un-augmented item is ``{source: image(s), target: image(t), target_pose: pose(t)}`` of its pair (s, t), which
        lets a feature cache encode each image once instead of once per pair."""
        S = self.image_size
        return self._image(name) * 2 - 1, render_pose_tensor(self._keypoints(name), S)

    def __getitem__(self, index: int) -> dict:
        src_name, tgt_name = self.pairs[index]
        S = self.image_size
        src, tgt = self._image(src_name), self._image(tgt_name)
        if not self.augment:
            kp_tgt = self._keypoints(tgt_name)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < 0.5:                                                    # swap roles (X-MDPT)
                src, tgt = tgt, src
                src_name, tgt_name = tgt_name, src_name
            kp_tgt = self._keypoints(tgt_name)
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
