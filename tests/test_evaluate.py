"""rpfm eval: resumable generation with stable names, metrics with baselines, report files, input checks."""
import json

import numpy as np
import pytest

from rpfm import RPFMPipeline
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.data.pairs import PairFolderDataset
from rpfm.data.synthetic import generate_synthetic
from rpfm.demo import demo_config
from rpfm.evaluate import compute_metrics
from rpfm.metrics import psnr_per_image
from rpfm.model import RPFM

from .conftest import randomize


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    generate_synthetic(tmp / "data", identities=10, images_per_identity=3, size=64, seed=2)
    RPFMPipeline(randomize(RPFM(demo_config()), std=0.02), PixelCodec(downsample=4)).save_pretrained(tmp / "model")
    return tmp


def _run(setup, out, *extra):
    return main(["eval", "--model", str(setup / "model"), "--data", str(setup / "data"), "--out", str(out),
                 "--steps", "2", "--device", "cpu", *extra])


def test_eval_writes_report_and_resumes(setup, tmp_path):
    out = tmp_path / "run"
    assert _run(setup, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    assert metrics["pairs"] == len(test) and metrics["generated_now"] == len(test)
    assert set(metrics["rows"]) == {"model", "baseline: copy source", "baseline: mean training image"}
    assert (out / "grid.png").is_file() and "SSIM" in (out / "metrics.md").read_text()
    # the copy-source baseline is what the metric gives on the sources (independent recomputation)
    src = np.stack([((test[i]["source"] + 1) / 2).permute(1, 2, 0).numpy() for i in range(len(test))])
    tgt = np.stack([((test[i]["target"] + 1) / 2).permute(1, 2, 0).numpy() for i in range(len(test))])
    assert metrics["rows"]["baseline: copy source"]["psnr"] == pytest.approx(float(np.mean(psnr_per_image(src, tgt))))
    # resume: delete one image, run again: only that one is generated
    victim = sorted((out / "images").glob("*.png"))[0]
    before = {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}
    victim.unlink()
    assert _run(setup, out) == 0
    assert json.loads((out / "metrics.json").read_text())["generated_now"] == 1
    assert (out / "images" / victim.name).read_bytes() == before[victim.name]    # seeded per pair: identical


def test_mismatched_image_folder_is_refused(setup, tmp_path):
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "3") == 0
    (out / "images" / "stranger__image.png").write_bytes(b"x")
    test = PairFolderDataset(setup / "data", "test", image_size=64)
    with pytest.raises(ValueError, match="match no pair.*stranger__image.png"):
        compute_metrics(test, out, limit=3)
    (out / "images" / "stranger__image.png").unlink()
    with pytest.raises(ValueError, match="missing from"):
        compute_metrics(test, out, limit=None)


def test_missing_lpips_weights_do_not_stop_other_metrics(setup, tmp_path):
    out = tmp_path / "run"
    assert _run(setup, out, "--limit", "2", "--lpips-alexnet", str(tmp_path / "no.pth"), "--lpips-heads",
                str(tmp_path / "no2.pth")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "lpips_error" in metrics and "ssim" in metrics["rows"]["model"]
