"""rpfm.animate: retargeting (hand-computed), driving sequences, generation with shared noise, flicker, the CLI."""
import json

import numpy as np
import pytest
from PIL import Image

from rpfm.labels import LABEL_HEIGHT
from rpfm.animate import (Driving, animate, fit_retarget, flicker, load_driving, poses_from_folder, poses_from_frames,
                          poses_from_json, poses_from_video, retarget, side_by_side, source_pose_for)
from rpfm.cli import main
from rpfm.data.synthetic import generate_sample
from rpfm.pose import Keypoints
from rpfm.pose.formats import write_keypoints_json, write_openpose_json

av = pytest.importorskip("av")   # installed by install.sh (the `video` extra)

NOSE, NECK, R_SH, R_WRIST, L_SH, R_HIP, R_ANKLE, L_HIP, L_ANKLE = 0, 1, 2, 4, 5, 8, 10, 11, 13


def kp(joints: dict, size=(64, 64)) -> Keypoints:
    xy = np.full((18, 2), -1.0)
    for k, p in joints.items():
        xy[k] = p
    return Keypoints(xy, size)


SOURCE = kp({NECK: (32, 20), R_HIP: (28, 40), L_HIP: (36, 40)})                   # torso 20, hip centre (32, 40)


# ------------------------------------------------------------------------------------------------ retargeting
def test_retarget_scale_and_anchor_by_hand():
    drv = kp({NECK: (64, 20), R_HIP: (60, 60), L_HIP: (68, 60), R_WRIST: (100, 60)}, (128, 128))  # torso 40
    t = fit_retarget(SOURCE, [drv])
    # s = 20 / 40; the driver's hip centre (64, 60) lands on (32, 40): offset = (32, 40) - 0.5 (64, 60) = (0, 10)
    assert (t.scale, t.offset, t.measure, t.anchor, t.fit_scale) == (0.5, (0.0, 10.0), "torso", "hip_centre", 1.0)
    out = t(drv)
    assert out.image_size == (64, 64)
    np.testing.assert_allclose(out.xy[[NECK, R_HIP, L_HIP, R_WRIST]], [[32, 20], [30, 40], [34, 40], [50, 40]])
    assert out.missing_mask().sum() == 14 and (out.xy[out.missing_mask()] == -1).all()


def test_retarget_reference_median_vs_first():
    drv = [kp({NECK: (64, 20), R_HIP: (60, 20 + d), L_HIP: (68, 20 + d)}, (128, 128)) for d in (40, 60, 80)]
    first = fit_retarget(SOURCE, drv, reference="first", fit=False)
    assert first.scale == 0.5 and first.offset == (0.0, 10.0)
    assert fit_retarget(SOURCE, drv, reference="first").offset[1] == pytest.approx(10 - 0.15)   # hips at 60 > 59.85
    med = fit_retarget(SOURCE, drv)          # median torso 60, median hip centre (64, 80)
    assert med.scale == pytest.approx(1 / 3)
    np.testing.assert_allclose(med.offset, (32 - 64 / 3, 40 - 80 / 3))
    np.testing.assert_allclose(med(drv[1]).xy[[R_HIP, L_HIP]], [[30 + 2 / 3, 40], [33 + 1 / 3, 40]])


def test_retarget_falls_back_to_shoulders_and_neck():
    src = kp({NECK: (32, 20), R_SH: (26, 20), L_SH: (38, 20)})                      # no hips: no torso, no hip centre
    drv = kp({NECK: (64, 20), R_SH: (52, 20), L_SH: (76, 20), R_HIP: (60, 60), L_HIP: (68, 60)}, (128, 128))
    t = fit_retarget(src, [drv])
    assert (t.measure, t.anchor, t.scale, t.offset) == ("shoulders", "neck", 0.5, (0.0, 10.0))
    np.testing.assert_allclose(t(drv).xy[[R_HIP, L_HIP]], [[30, 40], [34, 40]])


def test_tall_driver_is_shrunk_into_the_frame():
    drv = kp({NOSE: (64, 0), NECK: (64, 20), R_HIP: (60, 60), L_HIP: (68, 60), R_ANKLE: (60, 140),
              L_ANKLE: (68, 140)}, (160, 128))
    loose = fit_retarget(SOURCE, [drv], fit=False)
    assert loose(drv).xy[R_ANKLE, 1] == 80           # s = 0.5, offset (0, 10): the feet would be cut off at 64
    t = fit_retarget(SOURCE, [drv], margin=0.05)
    lo, hi = 0.05 * 63, 0.95 * 63
    k = (hi - lo) / 70                                   # box height 80 - 10 = 70 must fit in 56.7
    assert t.fit_scale == pytest.approx(k) and t.scale == pytest.approx(0.5 * k)
    out = t(drv)
    # scaled about the source hip centre (32, 40) -> y in [40 - 30k, 40 + 40k], then shifted up to end at hi
    shift = hi - (40 + 40 * k)
    np.testing.assert_allclose(out.xy[[NOSE, R_ANKLE, L_ANKLE]],
                               [[32, 40 - 30 * k + shift], [32 - 2 * k, hi], [32 + 2 * k, hi]], atol=1e-9)
    assert out.xy[NOSE, 1] == pytest.approx(lo)
    assert out.inside_mask().sum() == out.visible_mask().sum()


def test_retarget_errors():
    with pytest.raises(ValueError, match="body-size measure"):
        fit_retarget(kp({NECK: (3, 3)}), [kp({NECK: (5, 5)})])
    with pytest.raises(ValueError, match="reference"):
        fit_retarget(SOURCE, [SOURCE], reference="mean")
    with pytest.raises(TypeError, match="source_pose"):
        fit_retarget(np.zeros((18, 2)), [SOURCE])
    assert retarget(SOURCE, [SOURCE])[0] == SOURCE       # a pose retargeted onto itself is unchanged


# ------------------------------------------------------------------------------------------------ driving sequences
def _pose_with_neck_x(x: float) -> Keypoints:
    return kp({NECK: (x, 20), R_HIP: (28, 40), L_HIP: (36, 40)})


def test_frames_without_person_keep_last_good_pose():
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 10, 0, 0, 20, 0)]
    fake = lambda img: None if img.mean() < 5 else _pose_with_neck_x(float(img.mean()))  # noqa: E731
    d = poses_from_frames(frames, fake)
    assert [p.xy[NECK, 0] for p in d.poses] == [10, 10, 10, 10, 20, 20]   # leading frame takes the first detection
    assert d.found == [False, True, False, False, True, False]


def test_video_without_person_and_bad_estimator():
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="no person in any of its 3 frames"):
        poses_from_frames(frames, lambda img: None)
    with pytest.raises(TypeError, match="frame 0.*Keypoints"):
        poses_from_frames(frames, lambda img: np.zeros((18, 2)))


def test_poses_from_video_with_fake_estimator(tmp_path):
    from rpfm.video import write_video

    values = (0, 120, 0, 200)
    path = write_video(tmp_path / "drive.mp4", [np.full((48, 32, 3), v, np.uint8) for v in values], fps=8)
    seen = []

    def fake(img):
        seen.append(img.shape)
        return None if img.mean() < 60 else kp({NECK: (float(img.mean()), 20), R_HIP: (5, 30)}, img.shape[:2])

    d = load_driving(path, estimator=fake, keep_frames=True)
    assert seen == [(48, 32, 3)] * 4 and d.fps == 8 and d.found == [False, True, False, True]
    np.testing.assert_allclose([p.xy[NECK, 0] for p in d.poses], [120, 120, 120, 200], atol=3)
    assert len(d.frames) == 4 and d.frames[1].shape == (48, 32, 3)
    assert len(poses_from_video(path, fake, max_frames=2)) == 2


def test_keypoint_folder_sorted_naturally_and_bad_file_named(tmp_path):
    for i in (10, 2, 1):
        write_openpose_json(tmp_path / f"frame_{i}_keypoints.json", _pose_with_neck_x(float(i)))
    (tmp_path / "notes.md").write_text("ignored")
    d = poses_from_folder(tmp_path, image_size=(64, 64))
    assert [p.xy[NECK, 0] for p in d.poses] == [1, 2, 10] and d.fps is None
    bad = {"people": [{"pose_keypoints_2d": [1.0] * 51}]}                            # 17 joints (COCO-17)
    (tmp_path / "frame_5_keypoints.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"frame_5_keypoints\.json.*51 numbers"):
        poses_from_folder(tmp_path, image_size=(64, 64))


def test_json_list_and_bad_frame_named(tmp_path):
    path = tmp_path / "poses.json"
    frames = [_pose_with_neck_x(3.0).to_dict(), _pose_with_neck_x(4.0).resize((128, 128)).to_dict()]
    path.write_text(json.dumps(frames))
    d = poses_from_json(path)
    assert [p.xy[NECK, 0] for p in d.poses] == [3, 4] and d.poses[1].image_size == (64, 64)   # one frame for all
    path.write_text(json.dumps([frames[0], {"image_size": [64, 64], "keypoints": [[1, 2]] * 17}]))
    with pytest.raises(ValueError, match=r"poses\.json \[frame 1\].*\(18, 2\).*17 joints"):
        poses_from_json(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="non-empty JSON list"):
        poses_from_json(path)
    with pytest.raises(FileNotFoundError):
        load_driving(tmp_path / "missing.json")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown input"):
        load_driving(tmp_path / "x.bin")


def test_source_pose_from_file_moves_to_image_frame(tmp_path):
    write_keypoints_json(tmp_path / "src.json", SOURCE)            # recorded in a 64 x 64 frame
    img = Image.new("RGB", (128, 128))
    got = source_pose_for(img, tmp_path / "src.json")
    assert got.image_size == (128, 128) and got.xy[NECK].tolist() == [64, 40]
    assert source_pose_for(img, None, estimator=lambda a: SOURCE if a.shape == (128, 128, 3) else None) == SOURCE
    with pytest.raises(ValueError, match="no person in the source"):
        source_pose_for(img, None, estimator=lambda a: None)


# ------------------------------------------------------------------------------------------------ generation
@pytest.fixture(scope="module")
def demo():
    """The shipped demo model, a held-out synthetic identity (test split) and a slowly moving driver."""
    from rpfm.demo import load_release

    pipe, _ = load_release()
    S = pipe.config.image_size                           # drawn at the release's own size (no resizing)
    img, src_kp, _ = generate_sample(0, 2, 0, S)        # identity 2 is a held-out (test) identity
    _, a, _ = generate_sample(0, 7, 1, S)
    _, b, _ = generate_sample(0, 7, 2, S)
    drv = []
    for w in np.linspace(0, 1, 8):
        xy = (1 - w) * a.xy + w * b.xy
        xy[a.missing_mask() | b.missing_mask()] = -1
        drv.append(Keypoints(xy, (S, S)))
    return pipe, Image.fromarray(img), src_kp, drv


def test_static_pose_gives_identical_frames_fresh_noise_does_not(demo):
    pipe, src, src_kp, _ = demo
    poses = [src_kp] * 4
    shared = animate(pipe, src, poses, num_steps=2, batch_size=3)                    # crosses a batch boundary
    fresh = animate(pipe, src, poses, num_steps=2, batch_size=3, shared_noise=False)

    def diff(frames):   # largest per-pixel difference of each later frame from the first (uint8 levels)
        first = np.asarray(frames[0]).astype(int)
        return [int(np.abs(np.asarray(f).astype(int) - first).max()) for f in frames[1:]]

    # A batch of 3 and a batch of 1 need not be bitwise equal (BLAS may block rows differently per batch size and
    # CPU), so "identical" allows one uint8 level of rounding; fresh noise moves pixels by far more.
    assert len(shared) == 4 and max(diff(shared)) <= 1, diff(shared)
    assert min(diff(fresh)) > 16, diff(fresh)


def test_shared_noise_flickers_less_on_a_slow_motion(demo):
    pipe, src, src_kp, drv = demo
    # 8 frames over the driver's first seventh: the motion itself changes few pixels per frame, so what fresh noise
    # adds (a different sample every frame) dominates the flicker; the driver's -1 (missing) points stay -1
    slow = [Keypoints((1 - w) * drv[0].xy + w * drv[1].xy, drv[0].image_size) for w in np.linspace(0, 1, 8)]
    poses = retarget(src_kp, slow)
    shared = animate(pipe, src, poses, num_steps=4, batch_size=8, output_type="np")
    fresh = animate(pipe, src, poses, num_steps=4, batch_size=8, output_type="np", shared_noise=False)
    f_shared, f_fresh = flicker(shared), flicker(fresh)
    # measured with the 128x128 release: 0.0064 shared vs 0.0144 fresh (on the driver's full motion the motion
    # dominates both: 0.019 vs 0.024)
    assert f_shared < 0.6 * f_fresh, (f_shared, f_fresh)


def test_batching_does_not_change_frames_and_source_is_encoded_once(demo, monkeypatch):
    pipe, src, src_kp, drv = demo
    calls = []
    encode_source = pipe.encode_source
    monkeypatch.setattr(pipe, "encode_source", lambda *a, **k: calls.append(1) or encode_source(*a, **k))
    done = []
    one = animate(pipe, src, drv[:4], num_steps=3, batch_size=1, output_type="np",
                  progress=lambda i, n: done.append((i, n)))
    four = animate(pipe, src, drv[:4], num_steps=3, batch_size=4, output_type="np")
    assert calls == [1, 1] and done == [(1, 4), (2, 4), (3, 4), (4, 4)]
    np.testing.assert_allclose(np.stack(one), np.stack(four), atol=1e-4)


def test_animate_bad_arguments(demo):
    pipe, src, src_kp, _ = demo
    with pytest.raises(ValueError, match="batch_size"):
        animate(pipe, src, [src_kp], batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        animate(pipe, src, [])


def test_flicker_by_hand():
    frames = [np.zeros((2, 2, 3)), np.full((2, 2, 3), 0.5), np.full((2, 2, 3), 0.5)]
    assert flicker(frames) == 0.25
    assert flicker([Image.new("RGB", (2, 2)), Image.new("RGB", (2, 2), (255, 255, 255))]) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        flicker(frames[:1])


def test_side_by_side_layout():
    outs = [Image.new("RGB", (64, 64), (10, 200, 30))] * 2
    rows = side_by_side(outs, [SOURCE] * 2, Driving([SOURCE, SOURCE]), scale=2)
    L = LABEL_HEIGHT                                                       # the panel names sit above the panels
    assert len(rows) == 2 and rows[0].size == (3 * 64 * 2, L + 64 * 2)
    assert rows[0].getpixel((2 * 64 * 2 + 5, L + 5)) == (10, 200, 30)   # the output is the right-hand panel
    assert side_by_side(outs, [SOURCE] * 2)[0].size == (128, L + 64)
    assert side_by_side(outs, [SOURCE] * 2, labels=False)[0].size == (128, 64)
    with_source = side_by_side(outs, [SOURCE] * 2, source=Image.new("RGB", (32, 32), (255, 0, 0)))[0]
    assert with_source.size == (192, L + 64) and with_source.getpixel((10, L + 10)) == (255, 0, 0)
    strip = np.asarray(with_source)[:L]
    assert strip.max() > 200 and strip.min() == 0                        # light text on black
    with pytest.raises(ValueError, match="must match"):
        side_by_side(outs, [SOURCE])


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_end_to_end_from_a_keypoint_folder(demo, tmp_path, capsys):
    pipe, src, src_kp, drv = demo
    S = 2 * pipe.config.image_size                                  # --scale 2
    src.save(tmp_path / "person.png")
    write_keypoints_json(tmp_path / "person.json", src_kp)
    (tmp_path / "poses").mkdir()
    for i, p in enumerate(drv[:5]):
        write_openpose_json(tmp_path / "poses" / f"{i:03d}_keypoints.json", p)
    out = tmp_path / "out.gif"
    rc = main(["animate", "--source", str(tmp_path / "person.png"), "--driving", str(tmp_path / "poses"),
               "--source-pose", str(tmp_path / "person.json"), "--out", str(out), "--steps", "3",
               "--batch-size", "2", "--side-by-side", "--scale", "2", "--fps", "5", "--device", "cpu",
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "frames/s" in text and "flicker" in text and "retargeted by torso" in text
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (LABEL_HEIGHT + S, 3 * S, 3)       # labels, then the panels
    assert frames[0][LABEL_HEIGHT:, 2 * S:].mean() > 100   # the generated person on a light background, not black


def test_cli_errors(tmp_path, capsys):
    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    args = ["animate", "--source", str(tmp_path / "p.png"), "--driving", str(tmp_path)]
    assert main(args + ["--out", str(tmp_path / "o.avi")]) == 2
    assert "unknown extension '.avi'. Use one of .gif, .mp4" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "no" / "o.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "o.mp4")]) == 2          # a folder without keypoint files
    assert "no keypoint files" in capsys.readouterr().err


def test_cli_from_a_driving_video(demo, tmp_path, capsys, monkeypatch):
    """Video in, poses estimated per frame (a fake estimator stands in for BlazePose), fps taken from the video."""
    import rpfm.animate as animate_mod
    from rpfm.video import read_video, write_video

    pipe, src, src_kp, drv = demo
    S = pipe.config.image_size
    src.save(tmp_path / "person.png")
    write_video(tmp_path / "dance.mp4", [np.full((96, 80, 3), 40 * i, np.uint8) for i in range(4)], fps=8)
    calls = []

    def fake(image):
        calls.append(image.shape)
        if image.shape[:2] == (S, S):                                        # the source photo
            return src_kp
        i = round(float(image.mean()) / 40)
        return None if i == 1 else drv[2 * i].resize(image.shape[:2])       # nobody in frame 1

    monkeypatch.setattr(animate_mod, "get_estimator", lambda name=None, **kw: fake)
    rc = main(["animate", "--source", str(tmp_path / "person.png"), "--driving", str(tmp_path / "dance.mp4"),
               "--out", str(tmp_path / "out.mp4"), "--steps", "2", "--batch-size", "4", "--device", "cpu",
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "person found in 3/4 frames" in text and "at 8 fps" in text
    assert calls == [(96, 80, 3)] * 4 + [(S, S, 3)]
    video = read_video(tmp_path / "out.mp4")
    assert len(video.frames) == 4 and video.size == (S, S) and video.fps == 8


def test_driving_video_of_a_real_photo_is_tracked_with_blazepose(tmp_path):
    # a real photograph (skimage's astronaut) panned 4 px per frame, written as H.264 and read back: the default
    # estimator (BlazePose, video mode) must find her in every frame and the nose must follow the pan
    pytest.importorskip("mediapipe")
    import skimage.data

    from rpfm.video import write_video

    photo = skimage.data.astronaut()                                   # 512 x 512, face around x 200-260, y 60-160
    frames = [Image.fromarray(np.roll(photo, 4 * i, axis=1)[:, 64:448]) for i in range(6)]
    write_video(tmp_path / "pan.mp4", frames, fps=10)
    d = load_driving(tmp_path / "pan.mp4")
    assert len(d.poses) == 6 and all(d.found)
    nose = np.array([kp.xy[0] for kp in d.poses])
    assert (nose >= 0).all()
    steps = np.diff(nose[:, 0])
    assert np.all(np.abs(steps - 4) < 3), steps                        # moves with the pan, 4 px per frame
    assert np.all(np.abs(np.diff(nose[:, 1])) < 3)                     # and not vertically
