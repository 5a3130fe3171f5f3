"""rpfm eval under torchrun (2 CPU ranks, gloo): the sharded run writes the same images as one process, bit for bit,
and rank 0 computes the metrics once, only after every rank's images are written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rpfm import RPFMPipeline
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.data.pairs import PairFolderDataset
from rpfm.data.synthetic import generate_synthetic
from rpfm.demo import demo_config
from rpfm.model import RPFM

from .conftest import randomize

# Rank 1 starts generating 3 s late: without a barrier, rank 0 would read the folder before rank 1's images exist
# and fail with "missing" images. Otherwise this is `python -m rpfm.cli eval ...`.
CHILD = """
import os, sys, time
import rpfm.evaluate as ev
from rpfm.cli import main
original = ev.generate_pairs
def late(*args, **kwargs):
    if kwargs.get("rank") == 1:
        time.sleep(3)
    return original(*args, **kwargs)
ev.generate_pairs = late
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_ranks_write_the_same_images_as_one(tmp_path):
    generate_synthetic(tmp_path / "data", identities=6, images_per_identity=3, size=64, seed=3)
    RPFMPipeline(randomize(RPFM(demo_config()), std=0.02), PixelCodec(downsample=4)).save_pretrained(tmp_path / "m")
    n_pairs = len(PairFolderDataset(tmp_path / "data", "test", image_size=64))
    assert n_pairs >= 4

    def args(out):
        return ["eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "data"), "--out", str(out),
                "--steps", "2", "--device", "cpu", "--fid", "off", "--batch-size", "2"]

    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "child.py"), *args(tmp_path / "sharded")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("| model |") == 1                          # only rank 0 reports

    assert main(args(tmp_path / "single")) == 0
    sharded = {p.name: p.read_bytes() for p in (tmp_path / "sharded" / "images").glob("*.png")}
    single = {p.name: p.read_bytes() for p in (tmp_path / "single" / "images").glob("*.png")}
    assert len(single) == n_pairs and sharded.keys() == single.keys()
    assert all(sharded[k] == single[k] for k in single), "per-pair seeds: sharding must not change any image"

    files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert files == ["generation.json", "grid.png", "images", "metrics.json", "metrics.md"]   # no leftovers
    m = json.loads((tmp_path / "sharded" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["pairs"] == n_pairs
    assert m["generated_now"] == (n_pairs + 1) // 2                      # rank 0's share: pairs 0, 2, 4, ...
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert m["rows"] == one["rows"]
