"""PairLMDBDataset (PIDM/X-MDPT LMDB layout), the layout detection, the `rpfm data to-lmdb` converter, errors."""
from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import lmdb  # the lmdb extra; the dev install has it, so CI runs these tests
import numpy as np
import pytest
import torch
from PIL import Image

from rpfm.cli import main as rpfm_main
from rpfm.data import detect_layout, open_dataset
from rpfm.data.lmdb_convert import convert_to_lmdb
from rpfm.data.lmdb_pairs import PairLMDBDataset, find_lmdb_dir, open_env
from rpfm.data.pairs import PairFolderDataset
from rpfm.data.synthetic import generate_synthetic
from rpfm.train.data import build_dataset, check_dataset

KEYS = ("source", "target", "target_pose")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("lmdb")
    generate_synthetic(base / "synth", identities=4, images_per_identity=3, size=64, seed=2)
    convert_to_lmdb(base / "synth", base / "lmdb")
    return base / "synth", base / "lmdb"


def assert_same_items(a, b, n=None):
    assert a.pairs == b.pairs
    for i in range(len(a) if n is None else n):
        x, y = a[i], b[i]
        for k in KEYS:
            assert torch.equal(x[k], y[k]), (i, k)
        assert (x["source_name"], x["target_name"]) == (y["source_name"], y["target_name"])


# ---------------------------------------------------------------------------------------------------- conversion
def test_converted_set_yields_the_folder_items_exactly(roots):
    synth, root = roots
    assert sorted(p.name for p in root.iterdir()) == ["64-64", "meta.json", "pose", "test_pairs.txt",
                                                      "train_pairs.txt"]
    for split in ("test", "train"):
        folder = PairFolderDataset(synth, split, image_size=64, augment=False)
        ds = PairLMDBDataset(root, split, image_size=64)
        assert len(ds) == len(folder) > 0 and ds.augment == (split == "train")
        assert_same_items(folder, PairLMDBDataset(root, split, image_size=64, augment=False))
    check_dataset(ds, batch_size=2, image_size=64)
    # the stored images are the folder's PNGs, decoded byte for byte; the LMDB also holds PIDM's "length" key
    with open_env(root / "64-64").begin() as txn:        # the process's handle (LMDB allows one per process)
        name = folder.pairs[0][0]
        stored = np.asarray(Image.open(io.BytesIO(txn.get(name.encode()))))
        assert int(txn.get(b"length")) == 12
    np.testing.assert_array_equal(stored, np.asarray(Image.open(synth / "train_highres" / name).convert("RGB")))
    # pairs file: target first, then the source
    first = (root / "test_pairs.txt").read_text().splitlines()[0].split(",")
    assert (first[1], first[0]) == PairFolderDataset(synth, "test").pairs[0]


def test_augmentation_matches_the_folder_loader_and_is_seeded(roots):
    synth, root = roots
    ds = PairLMDBDataset(root, "train", image_size=64, seed=5)
    assert_same_items(PairFolderDataset(synth, "train", image_size=64, seed=5), ds, n=8)
    a = [ds[i]["target"] for i in range(6)]
    assert all(torch.equal(x, ds[i]["target"]) for i, x in enumerate(a))            # a function of the index
    ds.set_epoch(1)
    assert any(not torch.equal(x, ds[i]["target"]) for i, x in enumerate(a))        # and of the epoch
    swapped = [(ds[i]["source_name"], ds[i]["target_name"]) == ds.pairs[i][::-1] for i in range(len(ds))]
    assert 0.2 < np.mean(swapped) < 0.8


def test_other_image_size_reads_the_existing_lmdb(roots):
    _, root = roots
    ds = PairLMDBDataset(root, "test", image_size=32)
    assert ds.lmdb_dir.name == "64-64"
    check_dataset(ds, batch_size=2, image_size=32)


# ---------------------------------------------------------------------------------------------------- hand-written
COLOURS = {"img/WOMEN/Dresses/id_1/01_1_front.jpg": (0, 0, 255),     # target of line 1
           "img/WOMEN/Dresses/id_1/02_2_side.jpg": (255, 0, 0),
           "img/WOMEN/Dresses/id_1/03_4_full.jpg": (0, 255, 0)}


def write_pidm_root(root: Path, pairs_lines: str, poses: dict[str, str] | None = None) -> Path:
    """A PIDM layout written by hand: 16x16 solid-colour PNGs under .png keys in 256-256/, pairs, pose txts."""
    (root / "256-256").mkdir(parents=True)
    env = lmdb.open(str(root / "256-256"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for name, colour in COLOURS.items():
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
            txn.put(name.replace(".jpg", ".png").encode(), buf.getvalue())
    env.close()
    (root / "test_pairs.txt").write_text(pairs_lines)
    missing = "\n".join(["-1 -1"] * 18) + "\n"
    for name in COLOURS:
        path = root / name.replace("img/", "pose/").replace(".jpg", ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((poses or {}).get(name, missing))
    return root


def test_pairs_file_target_first_and_names_as_written(tmp_path):
    t, s1, s2 = COLOURS
    root = write_pidm_root(tmp_path / "p", f"{t},{s1},{s2}\n\n{s1},{t}\n")
    ds = PairLMDBDataset(root, "test", image_size=8)
    assert ds.pairs == [(s1, t), (s2, t), (t, s1)]
    item = ds[0]
    assert (item["source_name"], item["target_name"]) == (s1, t)
    red, blue = torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, -1, 1])
    torch.testing.assert_close(item["source"], red[:, None, None].expand(3, 8, 8))
    torch.testing.assert_close(item["target"], blue[:, None, None].expand(3, 8, 8))
    assert item["target_pose"].abs().sum() == 0                  # every joint missing: an empty skeleton
    assert detect_layout(root, "test") == "lmdb" and isinstance(open_dataset(root, "test", 8), PairLMDBDataset)


def test_pose_txt_keypoints_land_in_the_stretched_frame(tmp_path):
    # PIDM frame: the 176-px-wide person starts 40 px from the left; at 256 x 256, x' = (x - 40) * 256 / 176.
    # nose (joint 0) at x = 128, y = 100 -> (128, 100); left ankle (joint 13) at x = 62, y = 230 -> (32, 230).
    # No limb joins them (the ankle's limb needs the knee), so the skeleton is two radius-4 discs.
    rows = [[-1, -1]] * 18
    rows[0], rows[13] = [128, 100], [62, 230]
    t = next(iter(COLOURS))
    root = write_pidm_root(tmp_path / "p", f"{t},{list(COLOURS)[1]}\n",
                           poses={t: "".join(f"{x} {y}\n" for x, y in rows)})
    pose = PairLMDBDataset(root, "test", image_size=256)[0]["target_pose"].sum(0)          # (256, 256)
    for rows_, (cy, cx) in ((slice(0, 165), (100, 128)), (slice(165, 256), (230, 32))):
        ys, xs = torch.nonzero(pose[rows_] > 0, as_tuple=True)
        assert ys.float().mean() + rows_.start == cy and xs.float().mean() == cx           # disc centred there
        assert ys.max() - ys.min() == 8 and xs.max() - xs.min() == 8                        # radius 4
    assert (pose > 0).sum() == 2 * (pose[:165] > 0).sum()


# ---------------------------------------------------------------------------------------------------- errors
def test_errors_name_the_problem(roots, tmp_path):
    synth, root = roots
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    shutil.rmtree(bad / "64-64")
    with pytest.raises(FileNotFoundError, match=r"no LMDB folder.*'64-64/'.*found \['meta.json', 'pose/'"):
        PairLMDBDataset(bad, "test", image_size=64)
    shutil.copytree(root / "64-64", bad / "64-64")
    pairs = bad / "test_pairs.txt"
    good = pairs.read_text()
    pairs.write_text(good + "img/ghost.jpg," + good.split(",")[0] + "\n")
    with pytest.raises(ValueError, match=r"not in the LMDB.*'img/ghost.jpg'.*'img/ghost.png'"):
        PairLMDBDataset(bad, "test", image_size=64)
    pairs.write_text(good + "lonely.png\n")
    with pytest.raises(ValueError, match="line 7 must be 'target,source"):
        PairLMDBDataset(bad, "test", image_size=64)
    pairs.write_text(good)
    target = good.split(",")[0]
    txt = bad / "pose" / target.replace(".png", ".txt")
    txt.write_text("".join(txt.read_text().splitlines(keepends=True)[:17]))
    ds = PairLMDBDataset(bad, "test", image_size=64, augment=False)
    with pytest.raises(ValueError, match="expected 18 rows.*got 17 rows"):
        ds[0]
    txt.unlink()
    with pytest.raises(FileNotFoundError, match="no keypoint file.*" + target.replace(".png", ".txt")):
        PairLMDBDataset(bad, "test", image_size=64)
    with pytest.raises(FileNotFoundError, match="to-lmdb"):
        PairLMDBDataset(tmp_path / "none", "test")
    with pytest.raises(ValueError, match="split"):
        PairLMDBDataset(root, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no known layout.*fasion-resize-pairs-test.csv.*test_pairs.txt"):
        open_dataset(tmp_path / "empty", "test", 64)
    with pytest.raises(ValueError, match="not empty"):
        convert_to_lmdb(synth, root)


def test_lmdb_missing_names_the_extra(roots, monkeypatch, tmp_path, capsys):
    synth, root = roots
    monkeypatch.setitem(sys.modules, "lmdb", None)          # `import lmdb` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'rpfm\[lmdb\]'"):
        PairLMDBDataset(root, "test", image_size=64)
    assert rpfm_main(["data", "to-lmdb", "--data", str(synth), "--out", str(tmp_path / "o")]) == 2
    assert "rpfm[lmdb]" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_lmdb_folder_choice(tmp_path):
    for name in ("256-256", "512-512", "notes-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.mdb").touch()
    assert find_lmdb_dir(tmp_path, 256).name == "256-256"       # the matching one
    assert find_lmdb_dir(tmp_path, 64).name == "256-256"        # else the smallest larger one
    assert find_lmdb_dir(tmp_path, 1024).name == "512-512"      # else the largest


# ---------------------------------------------------------------------------------------------------- entry points
def test_registry_cli_and_detection(roots, tmp_path, capsys):
    synth, root = roots
    assert detect_layout(synth, "train") == "folder" and detect_layout(root, "train") == "lmdb"
    spec = {"root": str(root), "split": "test", "image_size": 64}
    assert isinstance(build_dataset({"name": "lmdb", **spec}), PairLMDBDataset)
    assert isinstance(build_dataset({"name": "auto", **spec}), PairLMDBDataset)
    assert isinstance(build_dataset({"name": "auto", **spec, "root": str(synth)}), PairFolderDataset)
    assert rpfm_main(["data", "to-lmdb", "--data", str(synth), "--out", str(tmp_path / "o"), "--size", "32"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "o" / "32-32" / "data.mdb").is_file()
    assert open_dataset(tmp_path / "o", "test", 32)[0]["source"].shape == (3, 32, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no temporary folder left


def test_a_training_config_on_the_lmdb_layout_trains(roots, tmp_path):
    from rpfm.train.config import TrainConfig
    from rpfm.train.logs import read_log
    from rpfm.train.trainer import train

    from .test_train_loop import TINY_MODEL

    _, root = roots
    cfg = TrainConfig(model=TINY_MODEL, codec={"type": "pixel", "downsample": 4},
                      dataset={"name": "auto", "root": str(root), "split": "train", "image_size": 32, "seed": 0},
                      out_dir=str(tmp_path / "run"), batch_size=4, steps=1, log_every=1, ckpt_every=10,
                      progress=False)
    result = train(cfg)
    assert result.step == 1 and np.isfinite(read_log(Path(cfg.out_dir) / "log.jsonl")[0]["loss"])
