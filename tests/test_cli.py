"""The command line: help texts, demo, generate and convert on tiny models, and clean errors."""
import re
import subprocess
import sys

import numpy as np

import pytest
import torch

from rpfm import RPFMPipeline
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.config import to_json
from rpfm.demo import demo_config, demo_inputs
from rpfm.model import RPFM

from .conftest import randomize


@pytest.mark.parametrize("command", ["demo", "generate", "convert", "assemble", "pose", "train", "export", "eval",
                                     "bench", "animate", "env", "data synth", "data to-lmdb"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: rpfm " + command in text
    assert "``" not in text and not re.search(r":(func|class|mod|meth):", text), text   # plain text, no reST


def test_demo_writes_png(tmp_path):
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--steps", "2", "--device", "cpu"]) == 0
    from PIL import Image

    from rpfm.demo import load_release

    _, pairs = load_release()
    from rpfm.labels import LABEL_HEIGHT

    size = pairs[0][1].size[0]
    panel = size * (256 // size)     # panels are upscaled to about 256 px
    with Image.open(out) as im:      # a label strip, then source | pose | generated | ground truth per pair
        assert im.size == (4 * panel, LABEL_HEIGHT + len(pairs) * panel)
        grid = np.asarray(im.convert("RGB"), dtype=np.float32)[LABEL_HEIGHT:] / 255
    # the generated panel is closer to the ground truth than pure noise would be (a learned model, not noise)
    gen, gt = grid[:panel, 2 * panel:3 * panel], grid[:panel, 3 * panel:4 * panel]
    noise = np.random.default_rng(0).random(gen.shape, dtype=np.float32)
    assert np.abs(gen - gt).mean() < 0.5 * np.abs(noise - gt).mean()


def test_generate_and_errors(tmp_path, capsys):
    pipe = RPFMPipeline(randomize(RPFM(demo_config())), PixelCodec(downsample=4))
    pipe.save_pretrained(tmp_path / "model")
    src, pose = demo_inputs(64)
    src.save(tmp_path / "src.png")
    pose.save(tmp_path / "pose.png")
    args = ["generate", "--model", str(tmp_path / "model"), "--source", str(tmp_path / "src.png"), "--pose",
            str(tmp_path / "pose.png"), "--steps", "2", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").is_file()
    assert main(args + ["--out", str(tmp_path / "out.png"), "--guidance", "-1"]) == 2
    err = capsys.readouterr().err
    assert "argument --guidance" in err and "expected a finite number >= 0" in err   # the flag, not the kwarg
    assert main(args + ["--out", str(tmp_path / "missing" / "out.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_rpfm_checkpoint(tmp_path, capsys):
    cfg = demo_config()
    model = randomize(RPFM(cfg))
    torch.save({"ema": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ckpt.pt")
    PixelCodec(downsample=4).save_pretrained(tmp_path / "codec")
    (tmp_path / "cfg.json").write_text(to_json(cfg))
    assert main(["convert", "--checkpoint", str(tmp_path / "ckpt.pt"), "--config", str(tmp_path / "cfg.json"),
                 "--codec", str(tmp_path / "codec"), "--out", str(tmp_path / "pipe")]) == 0
    loaded = RPFMPipeline.from_pretrained(tmp_path / "pipe")
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert "rpfm: " in capsys.readouterr().out


def test_console_entry_point():
    res = subprocess.run([sys.executable, "-m", "rpfm.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "generate" in res.stdout
