"""Many (source, pose) pairs through one pipeline: ``rpfm generate --pairs pairs.csv`` or a folder of sources x a
folder of poses, resumable, with a progress bar.

* **Jobs.** A pairs file is a CSV with a header ``source,pose`` (optionally ``out``, the output file name), one
  pair per row; relative paths are relative to the CSV's folder. Two folders give every source with every pose.
  Poses are rendered skeleton images or keypoint files (``.json``, ``.npy``, PIDM ``.txt``).
* **Names and seeds.** Each output is ``<source stem>__<pose stem>.png`` (or the row's ``out``), and its noise
  comes from its own generator seeded by (``seed``, output name): an image depends neither on the batch it was in,
  nor on the order of the jobs, nor on resumption.
* **Resuming.** Outputs already on disk are skipped, so an interrupted run continues where it stopped; files are
  written atomically, so a killed run never leaves a half-written PNG.
"""
from __future__ import annotations

import csv
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .progress import ProgressBar

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
KEYPOINT_EXTENSIONS = (".json", ".npy", ".txt")


@dataclass(frozen=True)
class Job:
    """One pair: the source photo, the target pose file, and the output file name (inside the output folder)."""

    source: Path
    pose: Path
    out_name: str


def _stem(path: Path) -> str:
    return path.stem.replace("__", "_")


def default_name(source: Path, pose: Path) -> str:
    return f"{_stem(source)}__{_stem(pose)}.png"


def jobs_from_pairs_file(path: str | os.PathLike) -> list[Job]:
    """Read a ``source,pose[,out]`` CSV (header required); relative paths are taken from the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--pairs: no file at '{path}'. Write a CSV with a header 'source,pose' and one pair "
                                "per row.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        header = rows[0].keys() if rows else []
    if not rows:
        raise ValueError(f"--pairs: '{path}' has no pairs. Write a header 'source,pose' and one pair per row.")
    if not {"source", "pose"} <= set(header):
        raise ValueError(f"--pairs: '{path}' needs the columns 'source' and 'pose' (optionally 'out'), got "
                         f"{sorted(k for k in header if k)}. The first line is the header.")
    jobs, names = [], {}
    for i, row in enumerate(rows, start=2):
        src, pose = (Path(row[k].strip()) for k in ("source", "pose"))
        src, pose = (p if p.is_absolute() else path.parent / p for p in (src, pose))
        name = (row.get("out") or "").strip() or default_name(src, pose)
        if not name.lower().endswith(".png"):
            name += ".png"
        if name in names:
            raise ValueError(f"--pairs: line {i} writes '{name}', as line {names[name]} does. Give each pair its own "
                             "output name (column 'out').")
        names[name] = i
        jobs.append(Job(src, pose, name))
    return jobs


def _files(folder: Path, extensions: tuple[str, ...], flag: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag}: no folder at '{folder}'.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{flag}: '{folder}' holds no {'/'.join(extensions)} files.")
    return files


def jobs_from_folders(sources: str | os.PathLike, poses: str | os.PathLike) -> list[Job]:
    """Every source image in ``sources`` with every pose (image or keypoint file) in ``poses``."""
    srcs = _files(Path(sources), IMAGE_EXTENSIONS, "--source")
    pose_files = _files(Path(poses), IMAGE_EXTENSIONS + KEYPOINT_EXTENSIONS, "--pose")
    return [Job(s, p, default_name(s, p)) for s in srcs for p in pose_files]


def load_pose(path: str | os.PathLike, image_size: int) -> Any:
    """A pose file as the pipeline takes it: keypoint files -> ``Keypoints``; images -> the path itself.

    OpenPose / rpfm JSON without a frame and ``.npy`` coordinates are taken as pixels of an image_size x image_size
    image; PIDM ``.txt`` files carry their own frame.
    """
    path = Path(path)
    if path.suffix.lower() not in KEYPOINT_EXTENSIONS:
        return path
    from .pose.formats import load_keypoints

    return load_keypoints(path, None if path.suffix.lower() == ".txt" else (image_size, image_size))


def pair_seed(seed: int, name: str) -> int:
    """The noise seed of one output: stable across batching, job order and resumption."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63)


def generate_batch(pipe, jobs: list[Job], out_dir: str | os.PathLike, *, batch_size: int = 8, seed: int = 0,
                   progress: bool = True, **call_kwargs: Any) -> tuple[int, int]:
    """Generate every job not yet in ``out_dir``; returns (made, skipped). ``call_kwargs`` go to ``pipe(...)``
    (num_inference_steps, guidance_scale, solver, resize, ...)."""
    from .cli_support import save_png
    from .pose.keypoints import Keypoints

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size: expected an int >= 1, got {batch_size!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not (out_dir / j.out_name).is_file()]
    skipped = len(jobs) - len(todo)
    saved_config = dict(pipe._progress_config)
    pipe.set_progress_bar_config(disable=True)          # one bar over pairs, not one per batch
    made = 0
    try:
        with ProgressBar(len(todo), desc="generate", unit="image", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                poses = [load_pose(j.pose, pipe.config.image_size) for j in chunk]
                # Keypoints and skeleton images go in separate calls (a call takes one kind of pose).
                for is_kp in (True, False):
                    part = [(j, p) for j, p in zip(chunk, poses) if isinstance(p, Keypoints) == is_kp]
                    if not part:
                        continue
                    generators = [torch.Generator().manual_seed(pair_seed(seed, j.out_name)) for j, _ in part]
                    out = pipe([str(j.source) for j, _ in part], [p if is_kp else str(p) for _, p in part],
                               generator=generators, output_type="pil", **call_kwargs)
                    for (j, _), image in zip(part, out.images):
                        save_png(image, out_dir / j.out_name)
                        made += 1
                bar.update(len(chunk))
    finally:
        pipe._progress_config = saved_config
    return made, skipped


__all__ = ["Job", "jobs_from_pairs_file", "jobs_from_folders", "load_pose", "pair_seed", "generate_batch",
           "default_name"]
