"""The command line under bad input and interrupted work (issue 14): one error format (``rpfm CMD: error: ...``, exit
2) for every failure, OS errors included, flags named as typed, outputs checked before the work, the image format
taken from the extension, and a killed run's temporaries cleaned (or, for ``rpfm data synth``, resumed)."""
import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rpfm import RPFMPipeline
from rpfm import animate as animate_mod
from rpfm.cli import main, run
from rpfm.codec import PixelCodec
from rpfm.data import synthetic
from rpfm.data.synthetic import generate_synthetic
from rpfm.demo import demo_config, demo_inputs
from rpfm.fileio import remove_stale_temporaries
from rpfm.model import RPFM
from rpfm.train import checkpoint as ckpt_mod

from .conftest import hold_lock, randomize


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-reliability")
    RPFMPipeline(randomize(RPFM(demo_config())), PixelCodec(downsample=4)).save_pretrained(tmp / "model")
    src, pose = demo_inputs(64)
    src.save(tmp / "src.png")
    pose.save(tmp / "pose.png")
    src.resize((32, 32)).save(tmp / "small.png")
    (tmp / "blank.json").write_text(json.dumps({"image_size": [64, 64], "keypoints": [[-1, -1]] * 18}))
    return tmp


def _generate(files, out, *extra):
    return main(["generate", "--model", str(files / "model"), "--source", str(files / "src.png"), "--pose",
                 str(files / "pose.png"), "--out", str(out), "--steps", "2", "--device", "cpu", *extra])


@pytest.fixture
def sampled(monkeypatch):
    """Records every pipeline call: a check that belongs before the work must leave it empty."""
    calls = []
    original = RPFMPipeline.__call__
    monkeypatch.setattr(RPFMPipeline, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


def test_generate_checks_out_before_sampling(files, tmp_path, capsys, sampled, monkeypatch):
    cases = [(tmp_path / "missing" / "x.png", "does not exist"), (tmp_path, "is a folder"),
             (tmp_path / "x.xyz", "unknown extension '.xyz'")]
    for out, why in cases:
        assert _generate(files, out) == 2
        err = capsys.readouterr().err
        assert err.startswith("rpfm generate: error: --out:") and why in err, err
    # a read-only folder (simulated: the tests run as root, which writes anywhere)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and os.path.samefile(dir, ro):
            raise PermissionError(13, "Permission denied", str(ro))
        return real_mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert _generate(files, ro / "x.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("rpfm generate: error: --out: cannot write in") and "Permission denied" in err
    assert sampled == []


def test_main_commands_check_out_before_work(files, tmp_path, capsys, sampled, monkeypatch):
    """Commands that came with issue 15 and the codec trainer: an --out that cannot be written fails first, in the
    one error format (the inputs here would fail later, so an error naming them means the check came too late)."""
    afile = tmp_path / "a-file"
    afile.write_text("x")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"source,pose\n{files / 'src.png'},{files / 'pose.png'}\n")
    monkeypatch.setattr(RPFMPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model first"))
    cases = [(["generate", "--pairs", str(pairs), "--out", str(afile)], "rpfm generate"),
             (["assemble", "--codec", str(tmp_path / "no-codec"), "--out", str(afile)], "rpfm assemble"),
             (["codec", "export", "--checkpoint", str(tmp_path / "no-ckpt"), "--out", str(afile)],
              "rpfm codec export"),
             (["codec", "eval", "--codec", str(tmp_path / "no-codec"), "--data", str(tmp_path), "--out",
               str(tmp_path / "missing" / "r.json")], "rpfm codec eval")]
    for argv, label in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"{label}: error: --out:"), err
    assert sampled == []


def test_out_extension_is_honoured(files, tmp_path):
    assert _generate(files, tmp_path / "x.jpg") == 0
    assert (tmp_path / "x.jpg").read_bytes()[:2] == b"\xff\xd8"           # JPEG, not PNG bytes under a .jpg name
    with Image.open(tmp_path / "x.jpg") as im:
        assert im.format == "JPEG" and im.size == (64, 64)


def test_errors_name_cli_flags(files, tmp_path, capsys):
    rc = main(["generate", "--model", str(files / "model"), "--source", str(files / "small.png"), "--pose",
               str(files / "pose.png"), "--out", str(tmp_path / "x.png"), "--steps", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("rpfm generate: error: --source: expected a 64x64 image") and "--resize" in err
    assert "source_image" not in err and "resize=True" not in err
    for extra, flag in ((["--seed", str(2**70)], "--seed"), (["--steps", "0"], "--steps"),
                        (["--guidance", "nan"], "--guidance")):
        assert _generate(files, tmp_path / "x.png", *extra) == 2
        assert f"rpfm generate: error: argument {flag}:" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert _generate(files, tmp_path / "x.png", "--device", "cuda") == 2     # was SystemExit, exit code 1
        assert "rpfm generate: error: --device: 'cuda' was requested" in capsys.readouterr().err


@pytest.mark.filterwarnings("default::UserWarning")              # as outside pytest, which makes them errors
def test_warnings_print_in_the_cli_format(files, tmp_path, capsys):
    rc = main(["generate", "--model", str(files / "model"), "--source", str(files / "src.png"), "--pose",
               str(files / "blank.json"), "--out", str(tmp_path / "x.png"), "--steps", "1", "--device", "cpu"])
    assert rc == 0
    assert "rpfm generate: warning: target_pose: 1 of 1 poses" in capsys.readouterr().err


def test_os_errors_and_unexpected_ones_are_one_line(capsys, monkeypatch):
    def fail(exc):
        def func(args):
            raise exc
        return argparse.Namespace(command="data", data_command="synth", func=func)

    assert run(fail(PermissionError(13, "Permission denied", "/data/x.png"))) == 2
    assert capsys.readouterr().err == "rpfm data synth: error: Permission denied: '/data/x.png'\n"
    assert run(fail(IsADirectoryError(21, "Is a directory", "/tmp"))) == 2
    assert capsys.readouterr().err == "rpfm data synth: error: Is a directory: '/tmp'\n"
    assert run(fail(OSError(28, "No space left on device"))) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert run(fail(KeyError("x"))) == 2
    err = capsys.readouterr().err
    assert "rpfm data synth: error: unexpected KeyError" in err and "RPFM_DEBUG=1" in err
    monkeypatch.setenv("RPFM_DEBUG", "1")
    with pytest.raises(KeyError):
        run(fail(KeyError("x")))


def test_animate_checks_numbers_before_any_frame(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(animate_mod, "animate", lambda *a, **k: pytest.fail("frames were generated"))
    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    args = ["animate", "--source", str(tmp_path / "p.png"), "--driving", str(tmp_path), "--out",
            str(tmp_path / "a.gif"), "--device", "cpu"]
    for extra, flag in ((["--fps", "-5"], "--fps"), (["--fps", "0"], "--fps"), (["--max-frames", "0"], "--max-frames"),
                        (["--batch-size", "0"], "--batch-size"), (["--scale", "0"], "--scale")):
        assert main(args + extra) == 2
        assert f"rpfm animate: error: argument {flag}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_frames"):
        animate_mod.load_driving(tmp_path, max_frames=0)


def test_train_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    cfg = json.loads((Path(__file__).parents[1] / "examples" / "train_demo.json").read_text())
    cfg.update(out_dir=str(tmp_path / "elsewhere"), steps=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rpfm train: error: out_dir (--out-dir):") and "is a file" in err


# ---------------------------------------------------------------------------------------------------- debris
def test_stale_temporaries_are_removed_and_live_ones_kept(files, tmp_path):
    stale = tmp_path / ".x.png.abcd1234.tmp"
    stale.write_bytes(b"half an image")
    live = tmp_path / ".x.png.live0000.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / ".y.png.abcd1234.tmp"                          # another output's: not ours to judge now
    other.write_bytes(b"")
    with hold_lock(live):
        assert _generate(files, tmp_path / "x.png") == 0
    assert not stale.exists() and live.exists() and other.exists()
    # checkpoints: the temporaries of `latest` and the folders of a killed save, removed when training starts
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_00000004-123").mkdir(parents=True)
    (root / ".latest.q1w2e3r4.tmp").write_text("step_0000")
    (root / "step_00000002").mkdir()
    ckpt_mod.remove_stale(root)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002"]
    # a staged folder's .old copy is removed only once the new folder is in place
    (tmp_path / "ds").mkdir()
    (tmp_path / ".ds.old-abcdefgh").mkdir()
    (tmp_path / ".gone.old-abcdefgh").mkdir()                         # 'gone' is missing: this is the only copy
    removed = remove_stale_temporaries(tmp_path)
    assert tmp_path / ".ds.old-abcdefgh" in removed and (tmp_path / ".gone.old-abcdefgh").exists()


def test_data_synth_resumes_a_killed_run(tmp_path, monkeypatch, capsys):
    generate_synthetic(tmp_path / "fresh", identities=4, images_per_identity=3, size=64, seed=7)
    original, drawn = synthetic.generate_sample, []

    def killed_after_five(*a, **k):
        if len(drawn) == 5:
            raise KeyboardInterrupt                                      # as if the process stopped here
        drawn.append(a)
        return original(*a, **k)

    monkeypatch.setattr(synthetic, "generate_sample", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "ds", identities=4, images_per_identity=3, size=64, seed=7)
    assert not (tmp_path / "ds").exists() and len(list(tmp_path.glob(".ds.tmp-*"))) == 1
    monkeypatch.setattr(synthetic, "generate_sample", original)
    # other arguments: the killed run's folder is not theirs; it is removed, not reused
    generate_synthetic(tmp_path / "ds", identities=4, images_per_identity=3, size=64, seed=8)
    assert not list(tmp_path.glob(".ds.*"))
    # the same arguments: the finished images are kept, the rest drawn, and the result is byte-identical
    monkeypatch.setattr(synthetic, "generate_sample", killed_after_five)
    drawn.clear()
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "ds2", identities=4, images_per_identity=3, size=64, seed=7)
    monkeypatch.setattr(synthetic, "generate_sample", original)
    assert main(["data", "synth", "--out", str(tmp_path / "ds2"), "--identities", "4", "--images-per-identity", "3",
                 "--seed", "7"]) == 0
    assert "resumed a killed run: 5 images" in capsys.readouterr().out
    fresh = {p.relative_to(tmp_path / "fresh"): p.read_bytes() for p in (tmp_path / "fresh").rglob("*") if p.is_file()}
    again = {p.relative_to(tmp_path / "ds2"): p.read_bytes() for p in (tmp_path / "ds2").rglob("*") if p.is_file()}
    assert fresh == again and not list(tmp_path.glob(".ds2.*"))


def test_synth_staging_folder_of_a_live_run_is_left_alone(tmp_path):
    live = tmp_path / ".ds.tmp-abcdefgh"
    live.mkdir()
    with hold_lock(live):
        generate_synthetic(tmp_path / "ds", identities=2, images_per_identity=2, size=64, seed=1)
    assert live.exists() and (tmp_path / "ds" / "meta.json").is_file()
    assert np.asarray(Image.open(sorted((tmp_path / "ds" / "train_highres").glob("*.png"))[0])).shape == (64, 64, 3)
