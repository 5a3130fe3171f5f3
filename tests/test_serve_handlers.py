"""rpfm serve without a browser: the Generate / Animate / Live handlers and the upload checks, on a tiny pipeline.

The browser tests (test_serve_browser.py) drive the same functions through the page; these pin their behaviour and
every refusal message directly, fast.
"""
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpfm.cli import main
from rpfm.data.synthetic import generate_sample
from rpfm.demo import demo_pipeline
from rpfm.pose.formats import write_keypoints_json
from rpfm.serve.context import ServeContext, preset_poses, write_samples
from rpfm.serve.handlers import animate_clip, generate
from rpfm.serve.uploads import UploadError, centre_square, fit_square

from .conftest import run_python

pytest.importorskip("av")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    pipe = demo_pipeline()
    size = pipe.config.image_size
    people = [(f"p{i}", Image.fromarray(generate_sample(3, i, 0, size)[0])) for i in range(2)]
    c = ServeContext(pipe=pipe, workdir=work, samples=write_samples(people, work / "samples"),
                     presets=preset_poses(size), model_name="tiny")
    yield c
    c.close()


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height pixels (a decompression bomb's shape; almost no data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


# ============================================================================================ generate
def test_generate_preset_gives_three_panels_and_a_report(ctx):
    g = generate(ctx, ctx.samples[0][1], "preset", preset=2, steps=3, seed=1)
    size = ctx.image_size
    assert g.source.size == g.pose.size == g.result.size == (size * (256 // size),) * 2
    src, res = np.asarray(g.source, float), np.asarray(g.result, float)
    assert np.abs(src - res).mean() > 5                                  # a new image, not the input echoed
    assert np.asarray(g.pose).max() > 0                                   # the skeleton is drawn
    assert "3 model evaluations" in g.report and "seed 1" in g.report and "euler" in g.report


def test_generate_keypoint_file_equals_the_same_preset(ctx, tmp_path):
    path = write_keypoints_json(tmp_path / "pose.json", ctx.presets[4].keypoints)
    a = generate(ctx, ctx.samples[1][1], "preset", preset=4, steps=2, seed=5)
    b = generate(ctx, ctx.samples[1][1], "keypoints", pose_keypoints=str(path), steps=2, seed=5)
    np.testing.assert_array_equal(np.asarray(a.result), np.asarray(b.result))


def test_generate_pose_from_a_photo(ctx):
    photo = generate_sample(7, 2, 0, 256)[0]             # a synthetic person, front view, at 256 x 256
    g = generate(ctx, ctx.samples[0][1], "photo", pose_photo=Image.fromarray(photo), steps=2)
    assert "pose estimated in" in g.report


def test_fit_square_pads_without_stretching():
    img = Image.new("RGB", (40, 20), (10, 200, 30))
    sq = fit_square(img, 80)
    assert sq.size == (80, 80)
    arr = np.asarray(sq)
    assert (arr[40, 40] == (10, 200, 30)).all() and (arr[5, 40] == (10, 200, 30)).all()   # border colour fill
    assert centre_square(np.zeros((30, 50, 3), np.uint8)).shape == (30, 30, 3)


@pytest.mark.parametrize("case, message", [
    ("text", "is not an image"),
    ("huge", "megapixels"),
    ("truncated", "could not be read"),
    ("missing", "nothing uploaded"),
    ("no_person", "no person found"),
    ("bad_json", "does not hold keypoints"),
    ("wrong_kind", "is not a keypoint file"),
    ("steps", "steps: expected 1 to"),
    ("solver", "solver: unknown"),
])
def test_generate_refuses_bad_input_with_a_message(ctx, tmp_path, case, message):
    source, kwargs = ctx.samples[0][1], {"steps": 2}
    if case == "text":
        source = tmp_path / "notes.png"
        source.write_text("not a picture")
    elif case == "huge":
        source = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    elif case == "truncated":
        source = tmp_path / "cut.png"
        Image.new("RGB", (64, 64), (255, 0, 0)).save(source)
        source.write_bytes(source.read_bytes()[:60])
    elif case == "missing":
        source = None
    elif case == "no_person":
        kwargs.update(pose_source="photo", pose_photo=Image.new("RGB", (200, 200), (128, 128, 128)))
    elif case == "bad_json":
        (tmp_path / "kp.json").write_text(json.dumps({"hello": 1}))
        kwargs.update(pose_source="keypoints", pose_keypoints=str(tmp_path / "kp.json"))
    elif case == "wrong_kind":
        (tmp_path / "kp.csv").write_text("1,2")
        kwargs.update(pose_source="keypoints", pose_keypoints=str(tmp_path / "kp.csv"))
    elif case == "steps":
        kwargs["steps"] = 0
    elif case == "solver":
        kwargs["solver"] = "rk4"
    with pytest.raises(UploadError, match=message):
        generate(ctx, source, **kwargs)


# ============================================================================================ animate
def _sequence(tmp_path, ctx, n=5):
    poses = [generate_sample(5, 0, k, ctx.image_size)[1].to_dict() for k in range(n)]
    path = tmp_path / "seq.json"
    path.write_text(json.dumps(poses))
    return path


def test_animate_keypoint_sequence_writes_an_mp4_in_the_workdir(ctx, tmp_path):
    from rpfm.video import read_video

    calls = []
    path, report = animate_clip(ctx, ctx.samples[0][1], keypoint_files=[str(_sequence(tmp_path, ctx))], steps=2,
                                progress=lambda done, n: calls.append((done, n)))
    assert path.suffix == ".mp4" and ctx.workdir in path.parents
    video = read_video(path)
    assert len(video.frames) == 5 and calls[-1] == (5, 5)
    assert "5 frames from the keypoint sequence" in report and "frames/s" in report


def test_driving_video_poses_are_estimated_and_capped(ctx, tmp_path):
    from rpfm.serve.handlers import driving_poses
    from rpfm.video import write_video

    path = write_video(tmp_path / "dance.mp4", [generate_sample(8, 2, k, 128)[0] for k in range(4)], fps=5)
    driving, note = driving_poses(ctx, video=str(path), max_frames=3)
    assert len(driving) == 3 and note == " (first 3 frames used)" and driving.fps == 5
    assert all(kp.visible_mask().sum() >= 8 for kp in driving.poses)


def test_animate_refuses_corrupt_video_and_double_input(ctx, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(UploadError, match="not a readable video|could not be decoded|no video"):
        animate_clip(ctx, ctx.samples[0][1], video=str(bad), steps=1)
    with pytest.raises(UploadError, match="either a video or keypoint files"):
        animate_clip(ctx, ctx.samples[0][1], video=str(bad), keypoint_files=[str(_sequence(tmp_path, ctx))])
    with pytest.raises(UploadError, match="upload a driving video or a keypoint sequence"):
        animate_clip(ctx, ctx.samples[0][1])


# ============================================================================================ live
def test_live_session_streams_frames_and_skips_empty_ones(ctx):
    from rpfm.serve.live import LiveSession

    live = LiveSession(ctx, Image.open(ctx.samples[0][1]), steps=2)
    try:
        empty, text = live(np.full((120, 160, 3), 90, np.uint8))
        assert empty is None and "No person in view" in text
        for k in range(3):
            frame = generate_sample(9, 1, k, 256)[0]
            panel, text = live(frame)
        assert live.frames >= 2 and panel.size[0] == 2 * panel.size[1]
        assert "frames/s" in text and live.fps > 0
    finally:
        live.close()


# ============================================================================================ command line
def test_serve_cli_is_registered_and_checks_its_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--model" in capsys.readouterr().out
    assert main(["serve", "--model", "/nonexistent/model"]) == 2
    assert "no pipeline folder" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2


def test_build_app_writes_nothing_beside_the_code_and_has_the_tested_ids(tmp_path):
    """Built in a fresh interpreter: Gradio leaves an asyncio loop open at import, which this suite treats as an
    error."""
    pytest.importorskip("gradio")
    import rpfm.serve

    package = Path(rpfm.serve.__file__).parent
    before = sorted(p.name for p in package.iterdir() if p.name != "__pycache__")
    out = run_python(
        "from pathlib import Path\n"
        "from rpfm.demo import demo_pipeline\n"
        "from rpfm.serve.context import ServeContext, preset_poses\n"
        "from rpfm.serve.app import build_app\n"
        f"ctx = ServeContext(pipe=demo_pipeline(), workdir=Path({str(tmp_path)!r}), presets=preset_poses(64))\n"
        "app = build_app(ctx)\n"
        "print(sorted(b.elem_id for b in app.blocks.values() if getattr(b, 'elem_id', None)))\n",
        env={"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"})
    for elem_id in ("gen-source", "gen-run", "gen-report", "anim-keypoints", "anim-out", "live-camera", "live-status"):
        assert f"'{elem_id}'" in out
    assert sorted(p.name for p in package.iterdir() if p.name != "__pycache__") == before   # e.g. no .pyi stub
