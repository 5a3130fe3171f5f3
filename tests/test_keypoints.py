"""Keypoints (frames, transforms, validation) and the keypoint file formats (spec §4.4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rpfm.pose import (JOINT_NAMES, Keypoints, load_keypoints, parse_openpose, read_cfld_annotations,
                       read_keypoints_json, read_keypoints_npy, read_openpose_json, read_pidm_txt,
                       write_cfld_annotations, write_keypoints_json, write_keypoints_npy, write_openpose_json,
                       write_pidm_txt)
from rpfm.pose.formats import BODY25_TO_COCO18


def _kp(size=(256, 176), seed=0, missing=(3, 14)) -> Keypoints:
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.integers(0, size[1], 18), rng.integers(0, size[0], 18)], 1).astype(float)
    xy[list(missing)] = -1
    return Keypoints(xy, size)


# ---------------------------------------------------------------------------------------------- structure
def test_names_and_shape():
    assert len(JOINT_NAMES) == 18 and JOINT_NAMES[1] == "neck" and JOINT_NAMES[17] == "left_ear"
    kp = _kp()
    assert kp.xy.shape == (18, 2) and kp.xy.dtype == np.float64 and kp.image_size == (256, 176)
    assert kp.missing_mask().tolist() == [k in (3, 14) for k in range(18)]
    with pytest.raises(ValueError):
        kp.xy[0, 0] = 5.0  # read-only
    assert kp == Keypoints(kp.xy.copy(), (256, 176)) and kp != Keypoints(kp.xy, (256, 256))


def test_half_missing_joint_becomes_fully_missing():
    xy = np.zeros((18, 2))
    xy[5] = (-1, 30)
    kp = Keypoints(xy, (64, 64))
    assert kp.xy[5].tolist() == [-1, -1] and kp.missing_mask()[5]


@pytest.mark.parametrize("n", [17, 25])
def test_wrong_joint_count_teaches(n):
    with pytest.raises(ValueError, match=rf"expected shape \(18, 2\).*got \({n}, 2\).*{n} joints"):
        Keypoints(np.zeros((n, 2)), (64, 64))


def test_bad_rows_and_values():
    rows = [[1, 2]] * 17 + [[1, 2, 3]]
    with pytest.raises(ValueError, match="row lengths \\[2, 3\\]"):
        Keypoints(rows, (64, 64))
    xy = np.zeros((18, 2))
    xy[2, 0] = np.nan
    with pytest.raises(ValueError, match="right_shoulder"):
        Keypoints(xy, (64, 64))
    with pytest.raises(ValueError, match=r"\(H, W\) pair"):
        Keypoints(np.zeros((18, 2)), (64,))
    with pytest.raises(TypeError):
        Keypoints("not keypoints", (64, 64))


# ---------------------------------------------------------------------------------------------- transforms
def test_resize_crop_keep_missing():
    kp = _kp()
    r = kp.resize((512, 352))
    vis = kp.visible_mask()
    np.testing.assert_array_equal(r.xy[vis], kp.xy[vis] * 2)
    assert (r.xy[~vis] == -1).all() and r.image_size == (512, 352)
    c = kp.crop(10, 20, (100, 100))
    np.testing.assert_array_equal(c.xy[vis], kp.xy[vis] - [20, 10])
    assert (c.xy[~vis] == -1).all() and c.image_size == (100, 100)


def test_hflip_pixel_convention():
    xy = np.full((18, 2), -1.0)
    xy[0] = (0, 5)
    xy[1] = (9, 7)
    kp = Keypoints(xy, (16, 10)).hflip()
    assert kp.xy[0].tolist() == [9, 5] and kp.xy[1].tolist() == [0, 7]  # column c -> W-1-c
    assert (kp.xy[2:] == -1).all()
    assert kp.hflip().hflip() == kp


def test_stretch_176_to_256():
    kp = _kp()
    s = kp.stretch_176_to_256()
    vis = kp.visible_mask()
    assert s.image_size == (256, 256)
    np.testing.assert_allclose(s.xy[vis, 0], kp.xy[vis, 0] * 256 / 176)
    np.testing.assert_array_equal(s.xy[vis, 1], kp.xy[vis, 1])
    assert (s.xy[~vis] == -1).all()
    assert _kp((512, 352)).stretch_176_to_256().image_size == (512, 512)
    with pytest.raises(ValueError, match="176:256"):
        _kp((256, 256)).stretch_176_to_256()


def test_pidm_frame_transform_matches_xmdpt_arithmetic():
    kp = _kp((256, 256), missing=(0, 9))
    out = kp.pidm_to_image((256, 256))
    vis = kp.visible_mask()
    np.testing.assert_allclose(out.xy[vis, 0], (kp.xy[vis, 0] - 40) * 256 / 176)
    np.testing.assert_array_equal(out.xy[vis, 1], kp.xy[vis, 1])
    assert (out.xy[~vis] == -1).all()
    # X-MDPT trans_keypoins with an up-scale and crop, written out as in the upstream code
    ref = kp.xy.copy()
    missing = ref == -1
    scale_w, scale_h = 1.0 / 176.0 * 256, 1.0 / 256.0 * 256
    scale_w, scale_h = scale_w / 256 * 268, scale_h / 256 * 268
    ref[:, 0] = (ref[:, 0] - 40) * scale_w - 5
    ref[:, 1] = ref[:, 1] * scale_h - 7
    ref[missing] = -1
    aug = kp.pidm_to_image((256, 256), scale_size=(268, 268), crop=(7, 5))
    np.testing.assert_array_equal(aug.xy, ref)  # bit-exact, so int() truncation in the renderer agrees
    back = out.image_to_pidm()
    np.testing.assert_allclose(back.xy, kp.xy, atol=1e-9)
    with pytest.raises(ValueError, match="PIDM"):
        _kp((256, 176)).pidm_to_image()


# ---------------------------------------------------------------------------------------------- CFLD csv
_Y = [20, 43, 40, 78, 117, 46, 81, 115, 124, 190, 250, 123, 188, 245, 16, 16, 18, -1]
_X = [91, 94, 68, 62, 58, 120, 125, 128, 79, 84, 87, 113, 113, 110, 86, 98, 77, -1]
GFLA_LIKE = ("name:keypoints_y:keypoints_x\n"  # the layout of GFLA's fasion-resize-annotation-*.csv rows
             f"fashionWOMENBlouses_Shirtsid0000635004_1front.jpg:{_Y}:{_X}\n"
             f"fashionMENTees_Tanksid0000404701_7additional.jpg:{[-1] * 18}:{[-1] * 18}\n")


def test_read_cfld_annotations(tmp_path):
    p = tmp_path / "fasion-resize-annotation-test.csv"
    p.write_text(GFLA_LIKE)
    ann = read_cfld_annotations(p)
    assert list(ann) == ["fashionWOMENBlouses_Shirtsid0000635004_1front.jpg",
                         "fashionMENTees_Tanksid0000404701_7additional.jpg"]
    kp = ann["fashionWOMENBlouses_Shirtsid0000635004_1front.jpg"]
    assert kp.image_size == (256, 176)
    assert kp.xy[0].tolist() == [91, 20] and kp.xy[1].tolist() == [94, 43]  # (x, y) from the (y, x) columns
    assert kp.missing_mask()[17] and not kp.missing_mask()[:17].any()
    assert ann["fashionMENTees_Tanksid0000404701_7additional.jpg"].missing_mask().all()


def test_cfld_roundtrip(tmp_path):
    ann = {"a.png": _kp(), "b.png": _kp(seed=1, missing=())}
    p = write_cfld_annotations(tmp_path / "ann.csv", ann)
    assert p.read_text().splitlines()[0] == "name:keypoints_y:keypoints_x"
    assert read_cfld_annotations(p) == ann
    frac = Keypoints(_kp().xy + 0.4 * _kp().visible_mask()[:, None], (256, 176))
    assert read_cfld_annotations(write_cfld_annotations(tmp_path / "f.csv", {"f": frac}))["f"] == _kp()


@pytest.mark.parametrize("body,match", [
    ("nameonly:ys:xs\n", "line 1 must be the header"),
    ("name:keypoints_y:keypoints_x\nimg.jpg:[1, 2]\n", r":2: expected 3 ':'-separated fields"),
    ("name:keypoints_y:keypoints_x\nimg.jpg:[1, 2, 3]:[1, 2, 3]\n", r":2 \(img.jpg\): expected 18 .* got 3 and 3"),
    ("name:keypoints_y:keypoints_x\na:[-1]:[-1]:[-1]\n", r":2: expected 3 ':'-separated fields.*got 4"),
    ("name:keypoints_y:keypoints_x\n" + "a.jpg:" + ":".join([json.dumps([-1] * 18)] * 2) + "\n" + "a.jpg:"
     + ":".join([json.dumps([-1] * 18)] * 2) + "\n", r":3: image name 'a.jpg' appears twice"),
    ("name:keypoints_y:keypoints_x\nimg.jpg:[1, 2,]:[1]\n", "must be JSON lists"),
])
def test_cfld_errors_name_the_line(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(ValueError, match=match):
        read_cfld_annotations(p)


def test_missing_files(tmp_path):
    for fn in (read_cfld_annotations, read_pidm_txt, read_keypoints_json, load_keypoints):
        with pytest.raises(FileNotFoundError, match="nope"):
            fn(tmp_path / "nope.x")


# ---------------------------------------------------------------------------------------------- PIDM txt
def test_pidm_txt_roundtrip_and_errors(tmp_path):
    kp = _kp((256, 256))
    p = write_pidm_txt(tmp_path / "pose.txt", kp)
    assert read_pidm_txt(p) == kp and load_keypoints(p) == kp
    np.testing.assert_array_equal(np.loadtxt(p), kp.xy)  # what X-MDPT's np.loadtxt sees
    with pytest.raises(ValueError, match="image_to_pidm"):
        write_pidm_txt(tmp_path / "x.txt", _kp())
    (tmp_path / "short.txt").write_text("1 2\n" * 17)
    with pytest.raises(ValueError, match="expected 18 rows x 2 columns.*got 17 rows"):
        read_pidm_txt(tmp_path / "short.txt")


# ---------------------------------------------------------------------------------------------- OpenPose JSON
def _people(*flats):
    return {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": list(f)} for f in flats]}


def test_openpose_body25_maps_to_coco18():
    arr = np.zeros((25, 3))
    arr[:, 0] = np.arange(25)  # x = BODY_25 index
    arr[:, 1] = 100 + np.arange(25)
    arr[:, 2] = 0.9
    kp = parse_openpose(_people(arr.ravel()), (256, 256))
    assert kp.xy[:, 0].tolist() == list(BODY25_TO_COCO18)
    assert kp.xy[8, 0] == 9 and kp.xy[11, 0] == 12 and kp.xy[14, 0] == 15  # RHip, LHip, REye skip MidHip
    assert kp.xy[17].tolist() == [18, 118]


def test_openpose_coco18_confidence_and_person(tmp_path):
    weak = np.tile([10.0, 20.0, 0.3], 18)
    strong = np.tile([50.0, 60.0, 0.9], 18).reshape(18, 3)
    strong[4] = (0, 0, 0)  # OpenPose writes 0,0,0 for a joint it did not find
    strong[5, 2] = 0.01  # below the default threshold
    strong[6, 2] = 0.06
    p = tmp_path / "img_keypoints.json"
    p.write_text(json.dumps(_people(weak, strong.ravel())))
    kp = read_openpose_json(p, (128, 128))
    assert kp.missing_mask().tolist() == [k in (4, 5) for k in range(18)] and kp.xy[0].tolist() == [50, 60]
    assert read_openpose_json(p, (128, 128), min_confidence=0.1).missing_mask()[6]
    assert read_openpose_json(p, (128, 128), person=0).xy[0].tolist() == [10, 20]
    assert load_keypoints(p, (128, 128), person=0) == read_openpose_json(p, (128, 128), person=0)
    out = write_openpose_json(tmp_path / "w.json", kp)
    assert read_openpose_json(out, (128, 128)) == kp


def test_openpose_errors(tmp_path):
    with pytest.raises(ValueError, match="53 numbers; expected 54.*or 75"):
        parse_openpose(_people(np.ones(53)), (64, 64))
    with pytest.raises(ValueError, match="image_size"):
        parse_openpose(_people(np.ones(54)), None)
    with pytest.raises(ValueError, match="found nobody"):
        parse_openpose({"people": []}, (64, 64))
    with pytest.raises(ValueError, match="person must be"):
        parse_openpose(_people(np.ones(54)), (64, 64), person=3)
    with pytest.raises(ValueError, match="'people' list"):
        parse_openpose({"keypoints": []}, (64, 64))


# ---------------------------------------------------------------------------------------------- plain JSON / npy
def test_plain_json_and_npy(tmp_path):
    kp = _kp((64, 48))
    pj = write_keypoints_json(tmp_path / "k.json", kp)
    assert json.loads(pj.read_text())["image_size"] == [64, 48]
    assert read_keypoints_json(pj) == kp and load_keypoints(pj) == kp
    assert load_keypoints(pj, (128, 96)) == kp.resize((128, 96))
    pn = write_keypoints_npy(tmp_path / "k.npy", kp)
    assert read_keypoints_npy(pn, (64, 48)) == kp and load_keypoints(pn, (64, 48)) == kp
    with pytest.raises(ValueError, match="has no frame"):
        load_keypoints(pn)
    with pytest.raises(TypeError, match="only apply to OpenPose"):
        load_keypoints(pn, (64, 48), person=0)
    (tmp_path / "bad.json").write_text(json.dumps({"image_size": [64, 64], "keypoints": [[1, 2]] * 17}))
    with pytest.raises(ValueError, match="got \\(17, 2\\)"):
        load_keypoints(tmp_path / "bad.json")
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(ValueError, match="read_cfld_annotations"):
        load_keypoints(tmp_path / "a.csv")
