"""The per-image feature cache on disk, so a resumed run or a second run on the same data and encoders skips the
encoding pass (on the 2-core CPU: ~8 minutes for the 3,840 images of the 128×128 benchmark, every start).

A cache file is ``<feature_cache_dir>/<key>.safetensors`` (tensors ``z``, ``z_pose``, ``f_pose``, ``f_src``,
``pairs``; safetensors, never pickle), written atomically. Its key is the sha256 of everything its values depend
on, so a file is reused only when rebuilding would give the same tensors:

- the encoder inputs: the bytes of every image and pose tensor the dataset yields, in the cache's name order;
- the codec and both global encoders: class names and the bytes of every weight and buffer (and the codec's
  scaling factor);
- the posterior-sampling generator's seed, the encode batch size (it decides how the random stream is split) and
  which tensors are cached (the model's branches), and a format version.

Shapes: N images, C latent channels, h x w latent grid, T tokens, C' feature channels, P pairs.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor

from ..fileio import load_tensors, save_tensors

logger = logging.getLogger("rpfm.train")

FORMAT = 1


def _update_tensor(h, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes directly
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def module_digest(module: torch.nn.Module | None) -> str:
    """sha256 over a module's class, and every parameter and buffer by name (None -> "none")."""
    if module is None:
        return "none"
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        _update_tensor(h, t)
    for attr in ("scaling_factor", "shift_factor"):                   # a codec's latent normalisation
        h.update(f"{attr}={getattr(module, attr, None)}".encode())
    return h.hexdigest()


def cache_key(inputs: Iterable[tuple[Tensor, Tensor]], *, codec: torch.nn.Module,
              pose_encoder: torch.nn.Module | None, source_encoder: torch.nn.Module | None, seed: int,
              batch: int, keys: tuple[str, ...]) -> str:
    """The sha256 naming the cache file; ``inputs`` yields (image, pose) per cached image, in cache order."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "seed": seed, "batch": batch, "keys": list(keys)}).encode())
    for module in (codec, pose_encoder, source_encoder):
        h.update(module_digest(module).encode())
    n = 0
    for image, pose in inputs:
        _update_tensor(h, image)
        _update_tensor(h, pose)
        n += 1
    h.update(f"images={n}".encode())
    return h.hexdigest()


def cache_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / f"{key}.safetensors"


def load(folder: str | Path, key: str) -> tuple[dict[str, Tensor], Tensor] | None:
    """The cached (images, pairs) for ``key``, or None when there is no file. A damaged file is ignored with a
    warning (the caller rebuilds and overwrites it)."""
    path = cache_path(folder, key)
    if not path.is_file():
        return None
    try:
        tensors = load_tensors(path)
    except ValueError as e:
        logger.warning("feature cache: ignoring '%s' (%s); encoding again.", path, e)
        return None
    pairs = tensors.pop("pairs", None)
    if pairs is None or "z" not in tensors:
        logger.warning("feature cache: ignoring '%s' (no 'pairs' or 'z' tensor); encoding again.", path)
        return None
    return tensors, pairs


def save(folder: str | Path, key: str, images: dict[str, Tensor], pairs: Tensor) -> Path:
    """Write the cache atomically (a killed run never leaves a half-written file under the final name)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return save_tensors({**images, "pairs": pairs}, cache_path(folder, key),
                        metadata={"format": str(FORMAT), "what": "rpfm per-image feature cache"})
