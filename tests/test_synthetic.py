"""The synthetic pose-transfer benchmark: layout, determinism, split, annotations, appearance, CLI."""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpfm.data import generate_synthetic
from rpfm.data.cli import add_cli
from rpfm.data.synthetic import (BACKGROUND, generate_sample, identity_appearance, render_person,
                                 sample_pose)
from rpfm.pose import read_cfld_annotations

N_ID, K = 40, 4


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    t0 = time.perf_counter()
    summary = generate_synthetic(out, identities=N_ID, images_per_identity=K, size=64, seed=0)
    return out, summary, time.perf_counter() - t0


def _split(out: Path, part: str):
    ann = read_cfld_annotations(out / f"fasion-resize-annotation-{part}.csv",
                                image_size=tuple(json.loads((out / "meta.json").read_text())["keypoint_frame"]))
    with open(out / f"fasion-resize-pairs-{part}.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    return ann, pairs


def test_layout_counts_split_and_runtime(synth):
    out, summary, seconds = synth
    assert seconds < 15  # ~1 s on one CPU core: the benchmark is generated in seconds
    meta = json.loads((out / "meta.json").read_text())
    assert meta["image_size"] == [64, 64] and meta["seed"] == 0 and meta["identities"] == N_ID
    train, test = set(meta["train_identities"]), set(meta["test_identities"])
    assert not train & test and train | test == set(range(N_ID)) and len(test) == round(0.2 * N_ID)
    for part, ids in (("train", train), ("test", test)):
        files = sorted(p.name for p in (out / f"{part}_highres").iterdir())
        assert len(files) == len(ids) * K == meta["images"][part] == summary["images"][part]
        assert {int(f[2:7]) for f in files} == ids  # identity in the name; none in both splits
        ann, pairs = _split(out, part)
        assert sorted(ann) == files
        assert len(pairs) == len(ids) * K * (K - 1) == meta["pairs"][part]
        assert all(p["from"] != p["to"] and p["from"][:7] == p["to"][:7] and p["from"] in ann and p["to"] in ann
                   for p in pairs)
    assert (out / "fasion-resize-pairs-test.csv").read_text().startswith("from,to\n")
    assert not list(out.parent.glob(".ds.*"))  # the temporary folder was renamed away


def test_keypoints_inside_and_on_the_person(synth):
    out, _, _ = synth
    backs = sides = 0
    for part in ("train", "test"):
        ann, _ = _split(out, part)
        for name, kp in ann.items():
            img = np.asarray(Image.open(out / f"{part}_highres" / name))
            assert img.shape == (64, 64, 3) and kp.image_size == (64, 64)
            vis = kp.visible_mask()
            assert (kp.inside_mask() == vis).all() and (kp.xy == np.floor(kp.xy)).all()
            assert vis[[1, 2, 5, 8, 11]].all()  # neck, shoulders and hips are always annotated
            for j in (1, 8, 11):  # the person's pixels surround the neck and the hips
                x, y = kp.xy[j].astype(int)
                assert tuple(img[y, x]) != BACKGROUND, (name, j)
            assert tuple(img[0, 0]) == BACKGROUND and tuple(img[0, 63]) == BACKGROUND
            if name.endswith("_front.png"):
                assert vis[0] and vis[[14, 15]].any(), name  # the face is seen
            if name.endswith("_back.png"):
                assert not vis[[0, 14, 15]].any(), name  # no face from behind
                backs += 1
            if name.endswith("_side.png"):
                sides += 1
    assert backs > 0 and sides > 0


def _torso_mean(img: np.ndarray, kp) -> np.ndarray:
    neck, hips = kp.xy[1], (kp.xy[8] + kp.xy[11]) / 2
    c, r = neck + 0.6 * (hips - neck), 0.25 * np.linalg.norm(hips - neck)
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    return img[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r].mean(0)


def test_appearance_is_fixed_per_identity_and_differs_between_identities():
    # two standing front views of one identity agree on the shirt; another identity differs
    means = {}
    for ident in (0, 1):
        app = identity_appearance(0, ident)
        for k in (0, 1):
            rng = np.random.default_rng(k)
            pose = sample_pose(rng, "front")
            pose.update(kind="stand", arm={s: [10.0 + 5 * k, 0.0, 10.0, 0.0] for s in "lr"})
            means[ident, k] = _torso_mean(*render_person(app, pose, 128, rng))
    assert identity_appearance(0, 0) == identity_appearance(0, 0) != identity_appearance(0, 1)
    assert np.linalg.norm(means[0, 0] - means[0, 1]) < 15
    assert np.linalg.norm(means[1, 0] - means[1, 1]) < 15
    assert np.linalg.norm(means[0, 0] - means[1, 0]) > 40


def test_identity_is_recognisable_across_poses():
    # over 40 identities, another image's torso colour finds its own identity's first image far above chance (1/40)
    first = np.array([_torso_mean(*generate_sample(0, i, 0, 64)[:2]) for i in range(N_ID)])
    hits = [int(np.argmin(np.linalg.norm(first - _torso_mean(*generate_sample(0, i, k, 64)[:2]), axis=1)) == i)
            for i in range(N_ID) for k in (1, 2)]
    assert np.mean(hits) > 0.6  # measured 0.78; misses are occlusions (crossed arms, long hair from behind)


def test_deterministic_from_seed(tmp_path):
    a = generate_synthetic(tmp_path / "a", identities=3, images_per_identity=2, size=64, seed=7)
    generate_synthetic(tmp_path / "b", identities=3, images_per_identity=2, size=64, seed=7)
    generate_synthetic(tmp_path / "c", identities=3, images_per_identity=2, size=64, seed=8)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 + 5
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    img_a = sorted((tmp_path / "a" / "train_highres").iterdir())[0].read_bytes()
    img_c = sorted((tmp_path / "c" / "train_highres").iterdir())[0].read_bytes()
    assert img_a != img_c and a["seed"] == 7


@pytest.mark.parametrize("size", [128, 256])
def test_other_sizes(tmp_path, size):
    img, kp, view = generate_sample(0, 5, 1, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8 and kp.image_size == (size, size)
    assert view in ("front", "side", "back")
    small, kp64, _ = generate_sample(0, 5, 1, 64)
    np.testing.assert_allclose(kp.xy[kp.visible_mask()] * 64 / size, kp64.xy[kp.visible_mask()], atol=1.0)


def test_argument_errors_and_overwrite(tmp_path):
    with pytest.raises(ValueError, match=r"size: expected one of \(64, 128, 256\), got 100"):
        generate_synthetic(tmp_path / "x", identities=4, size=100)
    with pytest.raises(ValueError, match="identities"):
        generate_synthetic(tmp_path / "x", identities=1)
    with pytest.raises(ValueError, match="images_per_identity"):
        generate_synthetic(tmp_path / "x", identities=4, images_per_identity=1)
    with pytest.raises(ValueError, match="test_fraction"):
        generate_synthetic(tmp_path / "x", identities=4, test_fraction=1.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        generate_synthetic(tmp_path / "file", identities=2, images_per_identity=2)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty.*overwrite=True"):
        generate_synthetic(full, identities=2, images_per_identity=2)
    assert (full / "keep.txt").exists()
    generate_synthetic(full, identities=2, images_per_identity=2, overwrite=True)
    assert not (full / "keep.txt").exists() and (full / "meta.json").exists()
    (tmp_path / "empty").mkdir()
    generate_synthetic(tmp_path / "empty", identities=2, images_per_identity=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "full"]  # no temporary leftovers


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="rpfm")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "synth", "--out", str(tmp_path / "s"), "--identities", "3", "--size", "64",
                              "--images-per-identity", "2", "--seed", "3"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["seed"] == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "synth", "--out", "x", "--identities", "3", "--size", "100"])
