"""PairFolderDataset on the CFLD layout written by the synthetic generator: items, augmentation, errors."""
import numpy as np
import pytest
import torch

from rpfm.data.pairs import PairFolderDataset
from rpfm.data.synthetic import generate_synthetic
from rpfm.pose.formats import read_cfld_annotations
from rpfm.pose.render import render_pose
from rpfm.train.data import build_dataset, check_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "s"
    generate_synthetic(out, identities=6, images_per_identity=3, size=64, seed=1)
    return out


def test_items_follow_the_trainer_contract(root):
    ds = PairFolderDataset(root, "test", image_size=64)
    check_dataset(ds, batch_size=2, image_size=64)
    item = ds[0]
    assert -1 <= item["source"].min() and item["source"].max() <= 1 and item["target_pose"].max() == 1
    # test split: no augmentation, the pose is the target's skeleton rendered at 256 and reduced to 64
    kp = read_cfld_annotations(root / "fasion-resize-annotation-test.csv", image_size=(64, 64))[item["target_name"]]
    rendered = torch.from_numpy(render_pose(kp.resize((256, 256)))).permute(2, 0, 1)
    reduced = torch.nn.functional.avg_pool2d(rendered[None], 4)[0]
    torch.testing.assert_close(item["target_pose"], reduced / reduced.max(), rtol=1e-5, atol=1e-5)
    assert torch.equal(ds[0]["source"], ds[0]["source"])   # deterministic


def test_augmentation_is_a_function_of_seed_epoch_index(root):
    ds = PairFolderDataset(root, "train", image_size=64, seed=3)
    a = [ds[i]["source"] for i in range(8)]
    assert all(torch.equal(x, ds[i]["source"]) for i, x in enumerate(a))
    ds.set_epoch(1)
    b = [ds[i]["source"] for i in range(8)]
    assert any(not torch.equal(x, y) for x, y in zip(a, b))
    swapped = [(ds[i]["source_name"], ds[i]["target_name"]) == ds.pairs[i][::-1] for i in range(len(ds))]
    assert 0.2 < np.mean(swapped) < 0.8          # roles swapped with p = 0.5
    assert not any((PairFolderDataset(root, "train", augment=False)[i]["source_name"], ) == (ds.pairs[i][1],)
                   for i in range(4))             # and never without augmentation


def test_registered_for_training_configs(root):
    ds = build_dataset({"name": "folder", "root": str(root), "split": "test", "image_size": 64})
    assert isinstance(ds, PairFolderDataset) and len(ds) > 0


def test_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="rpfm data synth"):
        PairFolderDataset(tmp_path / "none")
    with pytest.raises(ValueError, match="split"):
        PairFolderDataset(root, "val")
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(root, bad)
    pairs = bad / "fasion-resize-pairs-test.csv"
    pairs.write_text(pairs.read_text() + "ghost.png,also_ghost.png\n")
    with pytest.raises(ValueError, match="names 'ghost.png'.*no row in"):
        PairFolderDataset(bad, "test")
    pairs.write_text("from,to\n" + ",".join(PairFolderDataset(root, "test").pairs[0]) + "\n")
    name = PairFolderDataset(root, "test").pairs[0][0]
    (bad / "test_highres" / name).unlink()
    with pytest.raises(FileNotFoundError, match="missing from"):
        PairFolderDataset(bad, "test")[0]
    np.testing.assert_equal(len(PairFolderDataset(bad, "test")), 1)
