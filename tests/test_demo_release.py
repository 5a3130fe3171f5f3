"""rpfm.demo.build_release: a training run becomes a loadable demo release at the run's own image size, with one
held-out pair per test identity, the run's config and its metrics; and the grid upscales to about 256 px."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from rpfm.data.synthetic import generate_synthetic
from rpfm.demo import GRID_LABELS, build_release, grid, load_release
from rpfm.labels import LABEL_HEIGHT
from rpfm.train.trainer import train

TINY_64 = dict(image_size=64, latent_channels=48, latent_downsample=4, patch_size=2, hidden_size=32, depth=1,
               num_heads=2, branches=["local_source", "local_pose"])


def test_build_release_at_the_runs_image_size(tmp_path):
    data = tmp_path / "data"
    generate_synthetic(data, identities=6, images_per_identity=2, size=64, seed=3, test_fraction=0.5)
    run = tmp_path / "run"
    train({"model": TINY_64, "codec": {"type": "pixel", "downsample": 4},
           "dataset": {"name": "folder", "root": str(data), "split": "train", "image_size": 64, "augment": False},
           "out_dir": str(run), "batch_size": 2, "steps": 2, "ckpt_every": 2, "progress": False})
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"pairs": 3}))
    out = build_release(run, data, tmp_path / "release", num_pairs=2, metrics=metrics)

    pipe, pairs = load_release(out)
    assert pipe.config.image_size == 64
    assert len(pairs) == 2 and {p[0] for p in pairs} <= {f.name.split("_")[0] for f in (data / "test_highres").iterdir()}
    assert all(im.size == (64, 64) for _, *ims in pairs for im in ims)
    assert json.loads((out / "train_config.json").read_text())["model"]["image_size"] == 64
    assert json.loads((out / "metrics.json").read_text()) == {"pairs": 3}
    # the held-out target is the test image itself (not re-encoded or resized)
    name, _, _, target = pairs[0]
    first = sorted((data / "test_highres").glob(f"{name}_*.png"))
    assert any(np.array_equal(np.asarray(target), np.asarray(Image.open(f).convert("RGB"))) for f in first)


def test_grid_scales_small_frames_to_about_256px():
    for size, panel in ((32, 256), (64, 256), (128, 256), (100, 200), (300, 300)):
        rows = [[Image.new("RGB", (size, size), (i * 40, 0, 0)) for i in range(4)]]
        im = grid(rows, labels=GRID_LABELS)
        assert im.size == (4 * panel, LABEL_HEIGHT + panel)
