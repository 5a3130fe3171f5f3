"""The embedded default for ``rpfm demo``: the trained demo model and held-out test pairs shipped with rpfm.

``rpfm/assets/demo-synth128/`` is a pipeline folder (the paper's model at small scale: RPFM with input
concatenation and all four condition branches, trained on rpfm's synthetic benchmark at 128 x 128 in the latent
space of an ``AutoencoderKL`` the project trained, global branches on a frozen ImageNet EfficientNet-Lite0; see its
``train_config.json`` and ``metrics.json``) plus ``pairs/``: a few pairs of *held-out identities* (never seen in
training): source, rendered target pose and ground truth. Rebuild it with :func:`build_release` after training
(README, "What the demo shows").

:func:`demo_config` is NOT the release's architecture: it is a tiny local-branch config with the weight-free pixel
codec that tests and examples build in code (random init).

The small drawing helpers below (a stick figure and a flat-shaded person) serve the ``stick_figures`` training
dataset and tests that need an image without files.
"""
from __future__ import annotations

import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .codec import PixelCodec
from .config import RPFMConfig
from .model import RPFM

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "demo-synth128"

# OpenPose COCO-18 limbs (0-based) and colours, enough to draw a recognisable stick figure for the demo.
_LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
          (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
_COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
# A standing pose and a walking pose in a unit square (x, y), COCO-18 order.
_STANDING = np.array([[.50, .14], [.50, .25], [.40, .25], [.36, .40], [.34, .54], [.60, .25], [.64, .40],
                      [.66, .54], [.44, .55], [.43, .73], [.43, .92], [.56, .55], [.57, .73], [.57, .92],
                      [.48, .12], [.52, .12], [.46, .13], [.54, .13]])
_WALKING = np.array([[.52, .14], [.50, .25], [.40, .25], [.33, .36], [.28, .46], [.60, .25], [.68, .36],
                     [.74, .44], [.44, .55], [.36, .72], [.30, .90], [.56, .55], [.62, .73], [.66, .91],
                     [.50, .12], [.54, .12], [.48, .13], [.56, .13]])


def demo_config() -> RPFMConfig:
    """A tiny test config (not the shipped release): 64x64 images, pixel codec (f = 4 -> 48 x 16 x 16 latents),
    2 blocks, D = 64, local branches only."""
    return RPFMConfig(image_size=64, latent_channels=48, latent_downsample=4, patch_size=2, hidden_size=64,
                      depth=2, num_heads=2, branches=("local_source", "local_pose"))


DEMO_NAME = "demo"
"""``RPFMPipeline.from_pretrained("demo")`` loads the shipped release (a local folder of that name wins)."""


def resolve_pretrained(path: str | os.PathLike) -> Path:
    """The folder ``from_pretrained(path)`` reads: ``path`` itself, or the shipped release for ``"demo"`` when no
    folder of that name exists here."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"from_pretrained: expected a folder path or {DEMO_NAME!r}, got {type(path).__name__}.")
    folder = Path(path)
    if os.fspath(path) == DEMO_NAME and not folder.exists():
        return ASSET_DIR
    return folder


def untrained_demo_pipeline(seed: int = 0):
    """An UNTRAINED pipeline of :func:`demo_config` (random init, for tests and benchmarks: adaLN-Zero makes it
    output noise). The trained demo model is ``RPFMPipeline.from_pretrained("demo")``."""
    from .pipeline import RPFMPipeline

    torch.manual_seed(seed)
    return RPFMPipeline(RPFM(demo_config()), PixelCodec(downsample=4))


def demo_pipeline(seed: int = 0):
    """Deprecated name of :func:`untrained_demo_pipeline` (it never was the trained demo model)."""
    warnings.warn("rpfm.demo.demo_pipeline() returns an UNTRAINED model and is renamed untrained_demo_pipeline(); "
                  "the trained demo model is RPFMPipeline.from_pretrained('demo').", FutureWarning, stacklevel=2)
    return untrained_demo_pipeline(seed)


def load_release(path: str | Path = ASSET_DIR):
    """The shipped demo pipeline and its held-out pairs: (pipeline, [(name, source, pose, target), ...])."""
    from .pipeline import RPFMPipeline

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"demo: no demo model at '{path}'. Reinstall rpfm, or rebuild it (README, 'The demo "
                                f"model').")
    pairs = []
    for src in sorted((path / "pairs").glob("*_source.png")):
        stem = src.name[: -len("_source.png")]
        pairs.append((stem, *(Image.open(path / "pairs" / f"{stem}_{kind}.png").convert("RGB")
                              for kind in ("source", "pose", "target"))))
    return RPFMPipeline.from_pretrained(path), pairs


def build_release(run_dir: str | Path, data_root: str | Path, out: str | Path = ASSET_DIR, *, num_pairs: int = 4,
                  metrics: str | Path | None = None) -> Path:
    """Export a training run's EMA weights as the demo release, with ``num_pairs`` held-out test pairs (one per test
    identity, first pair of each) and the run's training config and (optionally) eval metrics."""
    from .data.pairs import PairFolderDataset
    from .fileio import atomic_write_bytes
    from .train.checkpoint import export_pipeline

    out = Path(out)
    export_pipeline(run_dir, out)
    run_dir = Path(run_dir)   # a run's out_dir, or one of its checkpoints/step_N folders
    for candidate in (run_dir / "train_config.json", run_dir.parent.parent / "train_config.json"):
        if candidate.is_file():
            shutil.copyfile(candidate, out / "train_config.json")
            break
    if metrics is not None:
        shutil.copyfile(metrics, out / "metrics.json")
    from .fileio import read_json

    size = int(read_json(out / "config.json", "config.json")["model"]["image_size"])
    test = PairFolderDataset(data_root, "test", image_size=size, augment=False)
    (out / "pairs").mkdir(exist_ok=True)
    seen: set[str] = set()
    for i, (a, b) in enumerate(test.pairs):
        ident = a.split("_")[0]
        if ident in seen:
            continue
        seen.add(ident)
        item = test[i]
        for kind, x in (("source", (item["source"] + 1) / 2), ("pose", item["target_pose"]),
                        ("target", (item["target"] + 1) / 2)):
            arr = (x.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            atomic_write_bytes(out / "pairs" / f"{ident}_{kind}.png", buf.getvalue())
        if len(seen) == num_pairs:
            break
    return out


def draw_pose(keypoints: np.ndarray, size: int) -> Image.Image:
    """A simplified OpenPose-coloured stick figure (lines + joints) on black; keypoints in unit coordinates."""
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    pts = keypoints * size
    width = max(1, size // 32)
    for i, (a, b) in enumerate(_LIMBS):
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=_COLORS[i], width=width)
    for i, (x, y) in enumerate(pts):
        draw.ellipse([x - width, y - width, x + width, y + width], fill=_COLORS[i])
    return img


def draw_person(keypoints: np.ndarray, size: int) -> Image.Image:
    """A flat-shaded figure (skin, shirt, trousers) following the skeleton, on a light background."""
    img = Image.new("RGB", (size, size), (225, 222, 215))
    draw = ImageDraw.Draw(img)
    p = keypoints * size
    w = max(2, size // 12)
    for a, b, colour in [(8, 9, (40, 60, 120)), (9, 10, (40, 60, 120)), (11, 12, (40, 60, 120)),
                         (12, 13, (40, 60, 120)), (2, 3, (200, 60, 50)), (3, 4, (230, 190, 160)),
                         (5, 6, (200, 60, 50)), (6, 7, (230, 190, 160))]:
        draw.line([tuple(p[a]), tuple(p[b])], fill=colour, width=w)
    draw.polygon([tuple(p[2]), tuple(p[5]), tuple(p[11]), tuple(p[8])], fill=(200, 60, 50))
    r = size * 0.07
    draw.ellipse([p[0][0] - r, p[0][1] - r, p[0][0] + r, p[0][1] + r], fill=(230, 190, 160))
    return img


def demo_inputs(size: int = 64) -> tuple[Image.Image, Image.Image]:
    """(source person in a standing pose, target skeleton in a walking pose)."""
    return draw_person(_STANDING, size), draw_pose(_WALKING, size)


GRID_LABELS = ("source", "target pose", "generated", "ground truth")


def grid(rows: list[list[Image.Image]], scale: int | None = None,
         labels: list[str] | tuple[str, ...] | None = None) -> Image.Image:
    """Rows of equally sized images, upscaled by ``scale`` (nearest; default: to about 256 px high) so small
    outputs are visible; ``labels`` (one per column) are written above the columns."""
    from .labels import with_labels

    w, h = rows[0][0].size
    scale = max(1, 256 // h) if scale is None else scale
    columns = max(len(r) for r in rows)
    out = Image.new("RGB", (columns * w * scale, len(rows) * h * scale))
    for j, row in enumerate(rows):
        for i, im in enumerate(row):
            out.paste(im.resize((w * scale, h * scale), Image.NEAREST), (i * w * scale, j * h * scale))
    return with_labels(out, [w * scale] * columns, labels)
