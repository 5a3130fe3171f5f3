"""rpfm generate in batches: a pairs CSV or folders, stable names and seeds, resuming, and the default model."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rpfm import RPFMPipeline
from rpfm.batch import generate_batch, jobs_from_folders, jobs_from_pairs_file, pair_seed
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config, demo_inputs
from rpfm.model import RPFM

from .conftest import randomize


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    pipe = RPFMPipeline(randomize(RPFM(demo_config()), std=0.03), PixelCodec(downsample=4))
    pipe.save_pretrained(root / "model")
    (root / "src").mkdir()
    (root / "poses").mkdir()
    for i in range(2):
        src, pose = demo_inputs(64)
        Image.fromarray(np.roll(np.asarray(src), 4 * i, axis=1)).save(root / "src" / f"person{i}.png")
        Image.fromarray(np.roll(np.asarray(pose), 3 * i, axis=0)).save(root / "poses" / f"pose{i}.png")
    return root, pipe


def _read(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _args(root, *extra):
    return ["generate", "--model", str(root / "model"), "--steps", "2", "--device", "cpu", "--no-progress", *extra]


def test_folders_give_every_source_with_every_pose_and_resume(setup, tmp_path, capsys):
    root, _ = setup
    out = tmp_path / "out"
    assert main(_args(root, "--source", str(root / "src"), "--pose", str(root / "poses"), "--out", str(out),
                      "--batch-size", "3")) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["person0__pose0.png", "person0__pose1.png", "person1__pose0.png", "person1__pose1.png"]
    first = {n: _read(out / n) for n in names}
    (out / names[1]).unlink()                                           # an interrupted run
    capsys.readouterr()
    assert main(_args(root, "--source", str(root / "src"), "--pose", str(root / "poses"), "--out", str(out),
                      "--batch-size", "1")) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 images" in printed and "3 already there, skipped" in printed
    for n in names:                                   # the same image whatever the batching and resumption
        np.testing.assert_array_equal(_read(out / n), first[n])


def test_pairs_file_and_its_errors(setup, tmp_path, capsys):
    root, pipe = setup
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"source,pose,out\n{root}/src/person0.png,{root}/poses/pose1.png,a\n"
                   f"{root}/src/person1.png,{root}/poses/pose0.png,\n")
    jobs = jobs_from_pairs_file(csv)
    assert [j.out_name for j in jobs] == ["a.png", "person1__pose0.png"]
    assert main(_args(root, "--pairs", str(csv), "--out", str(tmp_path / "o"))) == 0
    one = pipe(str(root / "src" / "person0.png"), str(root / "poses" / "pose1.png"), num_inference_steps=2,
               generator=torch.Generator().manual_seed(pair_seed(0, "a.png")))
    np.testing.assert_array_equal(_read(tmp_path / "o" / "a.png"), np.asarray(one.images[0]))
    bad = tmp_path / "bad.csv"
    bad.write_text("from,to\nx,y\n")
    assert main(_args(root, "--pairs", str(bad), "--out", str(tmp_path / "o"))) == 2
    assert "--pairs: " in capsys.readouterr().err and "needs the columns 'source' and 'pose'" in jobs_err(bad)
    assert main(_args(root, "--out", str(tmp_path / "x.png"))) == 2
    assert "--source and --pose: give both" in capsys.readouterr().err


def jobs_err(path):
    with pytest.raises(ValueError) as e:
        jobs_from_pairs_file(path)
    return str(e.value)


def test_generate_defaults_to_the_demo_model(tmp_path, capsys):
    from rpfm.demo import load_release

    _, pairs = load_release()
    name, src, pose, _ = pairs[0]
    src.save(tmp_path / "s.png")
    pose.save(tmp_path / "p.png")
    assert main(["generate", "--source", str(tmp_path / "s.png"), "--pose", str(tmp_path / "p.png"), "--out",
                 str(tmp_path / "o.png"), "--steps", "2", "--device", "cpu", "--no-progress"]) == 0
    assert _read(tmp_path / "o.png").shape[:2] == src.size[::-1]


def test_generate_batch_keeps_the_pipeline_progress_config(setup, tmp_path):
    root, pipe = setup
    pipe.set_progress_bar_config(desc="mine")
    made, skipped = generate_batch(pipe, jobs_from_folders(root / "src", root / "poses")[:1], tmp_path,
                                   num_inference_steps=1, progress=False)
    assert (made, skipped) == (1, 0) and pipe._progress_config == {"desc": "mine"}


# --------------------------------------------------------------------------------------------- import cycles
REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Modules of the package a file imports, at any depth of the file (function-level imports included)."""
    pkg = path.relative_to(REPO).with_suffix("").parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg[:-node.level]) if path.name != "__init__.py" else list(pkg[:len(pkg) - node.level])
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod + "." + a.name for a in node.names]
            out |= {m for m in [mod, *names] if (REPO / (m.replace(".", "/") + ".py")).is_file()}
    return out


@pytest.mark.parametrize("group", [("rpfm.cli", "rpfm.animate", "rpfm.train.cli"),
                                   ("rpfm.data.staging", "rpfm.data.synthetic", "rpfm.data.lmdb_convert"),
                                   ("rpfm.pose.estimate", "rpfm.pose.blazepose", "rpfm.pose.onnx_pose")])
def test_no_import_circles(group):
    graph = {m: _imports(REPO / (m.replace(".", "/") + ".py")) for m in group}
    for a in group:
        for b in group:
            assert not (b in graph[a] and a in graph[b]), f"{a} and {b} import each other"
