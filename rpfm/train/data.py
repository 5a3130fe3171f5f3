"""Training data: the item contract, a dataset registry, and the seeded, resumable batch order.

**Item contract.** A ``torch.utils.data.Dataset`` whose items are dicts::

    {"source":      (3, H, W) float in [-1, 1],   # the person photo
     "target":      (3, H, W) float in [-1, 1],   # the same person in the target pose (ground truth)
     "target_pose": (3, H, W) float in [0, 1]}    # the rendered skeleton of the target

**Registry.** ``build_dataset({"name": ..., **options})`` calls the factory registered under ``name``;
other modules add theirs with ``register_dataset("folder", factory)``. Built in: ``tensors`` (a safetensors file
with ``source`` / ``target`` / ``target_pose`` stacks) and ``stick_figures`` (small synthetic pairs drawn in code,
so the example config runs without any files).

**Batch order.** Every epoch is one ``DistributedSampler`` permutation seeded with (seed, epoch) (``set_epoch``),
with ``drop_last``; rank r takes every W-th index, so the W per-rank batches of micro-step k together hold exactly
the global batch k of a single-process run (rank r holds global positions r, r + W, ...). The position is just a
count of consumed global batches, so a resumed run continues mid-epoch exactly. Datasets with random augmentation
should derive it from the index and an epoch (the trainer calls ``dataset.set_epoch(epoch)`` when it exists) to
keep resume exact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from ..fileio import load_tensors, save_tensors

ITEM_KEYS = ("source", "target", "target_pose")
DatasetFactory = Callable[..., Dataset]
DATASETS: dict[str, DatasetFactory] = {}
PATH_OPTIONS = ("path", "root")   # options naming files or folders; checked for existence before the factory runs


def register_dataset(name: str, factory: DatasetFactory | None = None):
    """Register ``factory(**options) -> Dataset`` under ``name``; usable as a decorator."""
    def wrap(fn: DatasetFactory) -> DatasetFactory:
        DATASETS[name] = fn
        return fn

    return wrap(factory) if factory is not None else wrap


def build_dataset(spec: dict[str, Any]) -> Dataset:
    """``{"name": registered name, ...options}`` -> Dataset. Path options must exist."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f'dataset: expected a dict with a "name", got {spec!r}.')
    options = dict(spec)
    name = options.pop("name")
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown name {name!r}. Registered datasets: {sorted(DATASETS)} (a module adds "
                         f"one with rpfm.train.data.register_dataset).")
    for key in PATH_OPTIONS:
        if key in options and not Path(options[key]).exists():
            raise FileNotFoundError(f"dataset {name!r}: {key} '{options[key]}' does not exist. Check the path in "
                                    f"the config (relative paths are resolved from the working directory "
                                    f"'{os.getcwd()}').")
    try:
        return DATASETS[name](**options)
    except TypeError as e:
        raise ValueError(f"dataset {name!r}: bad options {sorted(options)} ({e}).") from e


def check_dataset(dataset: Dataset, *, batch_size: int, image_size: int) -> None:
    """Non-empty, at least one global batch long, and items that follow the contract at the model's size."""
    try:
        n = len(dataset)
    except TypeError as e:
        raise ValueError(f"dataset: {type(dataset).__name__} has no len(); the trainer needs a map-style "
                         f"Dataset.") from e
    if n == 0:
        raise ValueError("dataset: it is empty. Check the dataset path and its pair list.")
    if batch_size > n:
        raise ValueError(f"batch_size: {batch_size} is larger than the dataset ({n} items). Lower batch_size to "
                         f"at most {n} or add data.")
    item = dataset[0]
    if not isinstance(item, dict) or any(k not in item for k in ITEM_KEYS):
        got = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"dataset: items must be dicts with keys {list(ITEM_KEYS)}, got {got}.")
    for key in ITEM_KEYS:
        x = item[key]
        if not isinstance(x, Tensor) or not x.is_floating_point() or tuple(x.shape) != (3, image_size, image_size):
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"dataset: item[{key!r}] must be a float tensor (3, {image_size}, {image_size}) (the "
                             f"model's image_size), got {got}.")


# ---------------------------------------------------------------------------------------------------- datasets
class TensorPairDataset(Dataset):
    """In-memory pairs: sources, targets (N, 3, H, W) in [-1, 1] and poses (N, 3, H, W) in [0, 1]."""

    def __init__(self, sources: Tensor, targets: Tensor, poses: Tensor):
        for name, x, lo in (("sources", sources, -1.0), ("targets", targets, -1.0), ("poses", poses, 0.0)):
            if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
                got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"TensorPairDataset: {name} must be a float tensor (N, 3, H, W), got {got}.")
            if x.numel() and (x.min() < lo - 1e-4 or x.max() > 1 + 1e-4):
                raise ValueError(f"TensorPairDataset: {name} must lie in [{lo:g}, 1], got "
                                 f"[{x.min():.3g}, {x.max():.3g}].")
        if not sources.shape == targets.shape == poses.shape:
            raise ValueError(f"TensorPairDataset: shapes differ: sources {tuple(sources.shape)}, targets "
                             f"{tuple(targets.shape)}, poses {tuple(poses.shape)}.")
        self.sources, self.targets, self.poses = sources, targets, poses

    def __len__(self) -> int:
        return self.sources.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"source": self.sources[i], "target": self.targets[i], "target_pose": self.poses[i]}

    def save(self, path: str | os.PathLike) -> Path:
        return save_tensors({"source": self.sources, "target": self.targets, "target_pose": self.poses}, path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TensorPairDataset":
        tensors = load_tensors(path)
        missing = [k for k in ITEM_KEYS if k not in tensors]
        if missing:
            raise ValueError(f"dataset 'tensors': '{path}' lacks tensors {missing} (it has {sorted(tensors)}).")
        return cls(tensors["source"], tensors["target"], tensors["target_pose"])


@register_dataset("tensors")
def _tensors(path: str) -> TensorPairDataset:
    return TensorPairDataset.from_file(path)


@register_dataset("folder")
def _folder(**options) -> Dataset:
    """The CFLD/GFLA folder layout (DeepFashion, rpfm's synthetic benchmark): see rpfm.data.pairs."""
    from ..data.pairs import PairFolderDataset

    return PairFolderDataset(**options)


@register_dataset("lmdb")
def _lmdb(**options) -> Dataset:
    """The PIDM/X-MDPT LMDB layout (DeepFashion, ``rpfm data to-lmdb`` output): see rpfm.data.lmdb_pairs."""
    from ..data.lmdb_pairs import PairLMDBDataset

    return PairLMDBDataset(**options)


@register_dataset("auto")
def _auto(**options) -> Dataset:
    """Either layout, detected from ``root`` (rpfm.data.layouts.open_dataset)."""
    from ..data.layouts import open_dataset

    return open_dataset(**options)


@register_dataset("stick_figures")
def stick_figures(size: int = 256, image_size: int = 64, seed: int = 0) -> TensorPairDataset:
    """Synthetic pairs drawn with ``rpfm.demo``: one flat-shaded figure, poses interpolated between standing and
    walking with jitter and a horizontal shift. A stand-in so the example config runs anywhere; the data issue's
    synthetic benchmark (many identities, occlusions) is the real one."""
    import numpy as np

    from ..demo import _STANDING, _WALKING, draw_person, draw_pose

    rng = np.random.default_rng(seed)

    def pose() -> np.ndarray:
        a = rng.uniform(0, 1)
        kp = (1 - a) * _STANDING + a * _WALKING + rng.normal(0, 0.01, _STANDING.shape)
        return kp + np.array([rng.uniform(-0.12, 0.12), 0.0])

    def tensor(img) -> Tensor:
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

    src, tgt, pos = [], [], []
    for _ in range(size):
        p_s, p_t = pose(), pose()
        src.append(tensor(draw_person(p_s, image_size)) * 2 - 1)
        tgt.append(tensor(draw_person(p_t, image_size)) * 2 - 1)
        pos.append(tensor(draw_pose(p_t, image_size)))
    return TensorPairDataset(torch.stack(src), torch.stack(tgt), torch.stack(pos))


class CachedFeatures(Dataset):
    """Precomputed per-item features (z0, z_s, z_p and optionally f_pose, f_src), one row per dataset item."""

    def __init__(self, features: dict[str, Tensor]):
        lengths = {k: v.shape[0] for k, v in features.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"CachedFeatures: feature tensors have different lengths {lengths}.")
        self.features = features

    def __len__(self) -> int:
        return next(iter(self.features.values())).shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.features.items()}


class CachedImageFeatures(Dataset):
    """A feature cache stored per image rather than per pair: item i of pair (s, t) is
    ``{z0: z[t], z_s: z[s], z_p: z_pose[t], f_pose: f_pose[t], f_src: f_src[s]}`` (those present).

    ``images`` maps "z", "z_pose" and optionally "f_pose", "f_src" to (N_images, ...) tensors; ``pairs`` is (P, 2)
    int64 (source row, target row). A dataset of P pairs over N images costs N encodes instead of 3P.
    """

    _TARGET = {"z0": "z", "z_p": "z_pose", "f_pose": "f_pose"}
    _SOURCE = {"z_s": "z", "f_src": "f_src"}

    def __init__(self, images: dict[str, Tensor], pairs: Tensor):
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype != torch.int64:
            raise ValueError(f"CachedImageFeatures: pairs must be int64 (P, 2), got {pairs.dtype} "
                             f"{tuple(pairs.shape)}.")
        self.images, self.pairs = images, pairs

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        s, t = self.pairs[i].tolist()
        out = {k: self.images[v][t] for k, v in self._TARGET.items() if v in self.images}
        out.update({k: self.images[v][s] for k, v in self._SOURCE.items() if v in self.images})
        return out


# ---------------------------------------------------------------------------------------------------- order
class EpochBatchSampler:
    """This rank's batches of one epoch, starting at batch ``start`` (for resume).

    Wraps ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` with ``set_epoch(epoch)`` and cuts its
    index list into batches of ``batch_size // world_size``; see the module docstring for why this makes the
    union of the ranks' batches equal to a single process's global batch.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, rank: int, world_size: int, seed: int, epoch: int,
                 start: int = 0):
        if batch_size % world_size:
            raise ValueError(f"batch_size: {batch_size} is not divisible by the number of processes {world_size}; "
                             f"batch_size is the global batch, split evenly across ranks.")
        self.per_rank = batch_size // world_size
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.sampler.set_epoch(epoch)
        self.start = start

    @staticmethod
    def batches_per_epoch(num_items: int, batch_size: int) -> int:
        return num_items // batch_size        # == (num_items // W) // (batch_size // W) for W | batch_size

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        for b in range(self.start, len(indices) // self.per_rank):
            yield indices[b * self.per_rank:(b + 1) * self.per_rank]

    def __len__(self) -> int:
        return max(0, len(self.sampler) // self.per_rank - self.start)
