"""``rpfm data to-lmdb``: write a CFLD/GFLA-layout dataset (DeepFashion, rpfm's synthetic set) in the PIDM LMDB layout.

What is written under ``out`` (read back by ``rpfm.data.lmdb_pairs.PairLMDBDataset``)::

    <N>-<N>/data.mdb, lock.mdb    every image named in either split's pairs, stretched to N x N (bicubic, as the
                                  folder loader does), PNG; key = name with extension ``.png``; plus PIDM's
                                  ``length`` key (the image count, zero-padded to 5 digits)
    train_pairs.txt, test_pairs.txt
                                  one line ``target,source`` per CFLD pair, in the CFLD order
    pose/<name>.txt               the keypoints in the PIDM frame (18 rows ``x y``, -1 missing)
    meta.json                     what was converted from where

Coordinates are written so that the reader's X-MDPT arithmetic (``Keypoints.pidm_to_image``) maps them back to the
folder loader's coordinates at N x N bit for bit where a float64 allows it (each value is the shortest decimal that
reads back as the chosen float). Measured: exact for integer annotations from DeepFashion's 256 x 176 frame at any
N, and from square frames at power-of-two N; elsewhere a coordinate can be an ulp off, which moves a drawn joint by
a pixel only when it sits exactly on a pixel boundary. So the LMDB dataset at image_size N yields the folder
dataset's items exactly for the synthetic set and DeepFashion. Everything is built in a temporary folder beside
``out`` and renamed into place at the end (``rpfm.data.staging``).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..pose.keypoints import PIDM_FRAME, Keypoints
from .lmdb_pairs import lmdb_key, pose_path, require_lmdb
from .pair_base import SPLITS, stretch_rgb
from .pairs import PairFolderDataset, read_meta
from .staging import check_out_dir, staged_folder

DEFAULT_SIZE = 256
COMMIT_EVERY = 256          # images per LMDB write transaction


def pidm_keypoints(kp: Keypoints) -> Keypoints:
    """``kp`` (an (S, S) frame) -> the PIDM frame, chosen so that ``pidm_to_image((S, S))`` returns ``kp`` exactly.

    Starts from ``kp.image_to_pidm()`` and moves a coordinate by up to 8 ulps where that is needed (and possible).
    """
    size = kp.image_size
    base = kp.image_to_pidm().xy

    def back(xy: np.ndarray) -> np.ndarray:
        return Keypoints(xy, PIDM_FRAME).pidm_to_image(size).xy

    best = base.copy()
    ok = back(best) == kp.xy
    for direction in (np.inf, -np.inf):
        cand = base.copy()
        for _ in range(8):
            if ok.all():
                break
            cand = np.where(ok, cand, np.nextafter(cand, direction))
            hit = ~ok & (back(np.where(ok, best, cand)) == kp.xy)
            best[hit], ok = cand[hit], ok | hit
    return Keypoints(best, PIDM_FRAME)


def format_pidm_txt(kp: Keypoints) -> str:
    """18 lines ``x y``, each number the shortest decimal that reads back as the same float64."""
    fmt = lambda v: np.format_float_positional(v, unique=True, trim="-")   # noqa: E731
    return "".join(f"{fmt(x)} {fmt(y)}\n" for x, y in kp.xy)


def convert_to_lmdb(data: str | os.PathLike, out: str | os.PathLike, *, size: int | None = None,
                    overwrite: bool = False) -> dict:
    """Convert the CFLD-layout dataset at ``data`` into the PIDM LMDB layout at ``out``; returns a summary dict.

    ``size``: the stored square size N (the LMDB folder is ``N-N``); default: the source's square image size from
    its meta.json (rpfm's synthetic set), else 256. ``out`` must not exist or be empty unless ``overwrite``.
    """
    lmdb = require_lmdb()
    data, out = Path(data), Path(out)
    meta = read_meta(data) if data.is_dir() else {}
    if size is None:
        h, w = meta.get("image_size", [DEFAULT_SIZE, DEFAULT_SIZE])
        size = h if h == w else DEFAULT_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size: expected a positive int (the stored square size, e.g. 256), got {size!r}.")
    check_out_dir(out, overwrite=overwrite)
    if out.resolve() == data.resolve():
        raise ValueError(f"out: must differ from data ('{data}').")
    splits = {s: PairFolderDataset(data, s, image_size=size, augment=False) for s in SPLITS}
    t0 = time.perf_counter()
    with staged_folder(out) as tmp:
        written: dict[bytes, tuple[str, bytes]] = {}
        env = lmdb.open(str(tmp / f"{size}-{size}"), map_size=_map_size(splits, size), subdir=True)
        try:
            txn = env.begin(write=True)
            for split, ds in splits.items():
                for name in dict.fromkeys(n for pair in ds.pairs for n in pair):
                    key = lmdb_key(name)
                    png = _png(ds, name, size)
                    digest = hashlib.sha256(png).digest()
                    if key in written:
                        if written[key][1] != digest:
                            raise ValueError(f"data: {name!r} ({split}) and {written[key][0]!r} map to the same "
                                             f"LMDB key {key.decode()!r} but are different images.")
                        continue
                    txn.put(key, png)
                    written[key] = (name, digest)
                    path = pose_path(tmp, name)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(format_pidm_txt(pidm_keypoints(ds._keypoints(name))))
                    if len(written) % COMMIT_EVERY == 0:
                        txn.commit()
                        txn = env.begin(write=True)
                (tmp / f"{split}_pairs.txt").write_text("".join(f"{t},{s}\n" for s, t in ds.pairs))
            txn.put(b"length", str(len(written)).zfill(5).encode())
            txn.commit()
        finally:
            env.close()
        summary = {"generator": "rpfm.data.lmdb_convert", "layout": "pidm-lmdb", "source": str(data),
                   "image_size": [size, size], "images": len(written),
                   "pairs": {s: len(ds.pairs) for s, ds in splits.items()}}
        (tmp / "meta.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return {**summary, "out_dir": str(out), "seconds": round(time.perf_counter() - t0, 3)}


def _png(ds: PairFolderDataset, name: str, size: int) -> bytes:
    buf = io.BytesIO()
    with ds._open_image(name) as im:
        stretch_rgb(im, size).save(buf, format="PNG")
    return buf.getvalue()


def _map_size(splits: dict[str, PairFolderDataset], size: int) -> int:
    """An upper bound on the environment size: twice the raw RGB bytes of every image, plus 64 MiB."""
    n = len({n for ds in splits.values() for pair in ds.pairs for n in pair})
    return 2 * n * size * size * 3 + (64 << 20)


# ============================================================================================ CLI
def add_cli(sub: Any) -> None:
    """Register ``to-lmdb`` on the ``rpfm data`` sub-command group."""
    p = sub.add_parser("to-lmdb", help="convert a CFLD-layout dataset to the PIDM/X-MDPT LMDB layout",
                       description="Write the images of a CFLD/GFLA-layout dataset (DeepFashion, or `rpfm data "
                       "synth` output) into an LMDB (N-N/), with train_pairs.txt / test_pairs.txt (target first) and "
                       "PIDM pose/*.txt keypoints.",
                       epilog="example: rpfm data to-lmdb --data data/synth64 --out data/synth64_lmdb")
    p.add_argument("--data", required=True, help="CFLD-layout dataset root")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --overwrite)")
    p.add_argument("--size", type=int, default=None,
                   help="stored square image size N (default: the source's square size, else 256)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=_cmd_to_lmdb)


def _cmd_to_lmdb(args: argparse.Namespace) -> int:
    s = convert_to_lmdb(args.data, args.out, size=args.size, overwrite=args.overwrite)
    print(f"wrote {s['out_dir']}: {s['images']} images at {s['image_size'][0]}x{s['image_size'][1]}, "
          f"{s['pairs']['train']} train / {s['pairs']['test']} test pairs, in {s['seconds']:.2f} s")
    return 0
