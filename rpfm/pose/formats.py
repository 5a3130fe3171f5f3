"""Keypoint file formats (spec §4.4): readers return :class:`Keypoints`, writers take them.

=====================  ==========================================================================================
format                 layout
=====================  ==========================================================================================
CFLD/GFLA annotation   ``fasion-resize-annotation-{train,test}.csv``: header ``name:keypoints_y:keypoints_x``, then
                       ``<name>:[18 rows]:[18 columns]`` (JSON lists of ints, -1 missing); 256 x 176 frame.
PIDM/X-MDPT txt        ``pose/<image path>.txt``: ``np.loadtxt`` -> 18 x 2 (x, y), -1 missing; the 256 x 256 frame
                       with the 176-px person image 40 px from the left (convert with ``Keypoints.pidm_to_image``).
OpenPose JSON          ``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}``: 54 numbers (COCO-18) or 75
                       (BODY_25, mapped to COCO-18); joints with confidence below ``min_confidence`` are missing.
plain JSON             ``{"image_size": [H, W], "keypoints": [[x, y], ... 18 ...]}`` (what ``Keypoints.to_dict``
                       writes; rpfm's own format).
NumPy ``.npy``         an (18, 2) float array of (x, y); the file has no frame, so pass ``image_size``.
=====================  ==========================================================================================

``load_keypoints(path)`` picks the reader from the extension (and, for ``.json``, from the content).
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .keypoints import DEEPFASHION_SIZE, MISSING, NUM_JOINTS, PIDM_FRAME, Keypoints

CFLD_HEADER = "name:keypoints_y:keypoints_x"
# OpenPose BODY_25 index of each COCO-18 joint. BODY_25 is nose0 neck1 RSho2 RElb3 RWri4 LSho5 LElb6 LWri7 MidHip8
# RHip9 RKnee10 RAnk11 LHip12 LKnee13 LAnk14 REye15 LEye16 REar17 LEar18 + 6 feet; COCO-18 has no MidHip and no feet.
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# OpenPose writes (0, 0, 0) for a joint it did not find, so any positive cut removes those. 0.05 additionally drops
# only near-zero, almost always spurious, detections while keeping the weak-but-right ones on limbs that are partly
# occluded; raise it (0.1-0.3) for noisy photos.
DEFAULT_MIN_CONFIDENCE = 0.05


def _need_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file '{path}'" + (" (it is a folder)" if path.is_dir() else "")
                                + ". Check the path.")
    return path


def _atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    from ..fileio import atomic_write_bytes

    return atomic_write_bytes(path, text.encode())


# ---------------------------------------------------------------------------------------------- CFLD / GFLA CSV
def read_cfld_annotations(path: str | os.PathLike, *,
                          image_size: tuple[int, int] = DEEPFASHION_SIZE) -> dict[str, Keypoints]:
    """Read a CFLD/GFLA ``fasion-resize-annotation-*.csv`` -> {image name: Keypoints in ``image_size``}.

    The DeepFashion files are in the 256 x 176 frame (the default); rpfm's synthetic set records its frame in
    ``meta.json``. Raises ValueError naming the line for a bad header, a row without three ':' fields, a list that
    is not JSON or does not hold 18 values, and a name that appears twice.
    """
    path = _need_file(path, "read_cfld_annotations")
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip().replace(" ", "") != CFLD_HEADER:
        got = lines[0][:80] if lines else "an empty file"
        raise ValueError(f"{path}: line 1 must be the header '{CFLD_HEADER}' (CFLD/GFLA annotation CSV), got "
                         f"{got!r}.")
    out: dict[str, Keypoints] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(":")
        if len(fields) != 3:
            raise ValueError(f"{path}:{lineno}: expected 3 ':'-separated fields (name:keypoints_y:keypoints_x), got "
                             f"{len(fields)}: {line[:80]!r}.")
        name = fields[0].strip()
        try:
            ys, xs = json.loads(fields[1]), json.loads(fields[2])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno} ({name}): keypoints_y / keypoints_x must be JSON lists, {e}.") from None
        if not (isinstance(ys, list) and isinstance(xs, list)) or len(ys) != NUM_JOINTS or len(xs) != NUM_JOINTS:
            ny = len(ys) if isinstance(ys, list) else type(ys).__name__
            nx = len(xs) if isinstance(xs, list) else type(xs).__name__
            raise ValueError(f"{path}:{lineno} ({name}): expected 18 keypoints_y and 18 keypoints_x values "
                             f"(OpenPose COCO-18), got {ny} and {nx}.")
        if name in out:
            raise ValueError(f"{path}:{lineno}: image name {name!r} appears twice. Each image needs exactly one row.")
        out[name] = Keypoints.from_yx(ys, xs, image_size)
    return out


def _int_list(v: np.ndarray, missing: np.ndarray) -> list[int]:
    return [-1 if m else int(np.floor(c + 0.5)) for c, m in zip(v.tolist(), missing.tolist())]


def write_cfld_annotations(path: str | os.PathLike, annotations: Mapping[str, Keypoints]) -> Path:
    """Write {name: Keypoints} as a CFLD/GFLA annotation CSV (atomically). Coordinates are rounded to ints (half
    up), as in the DeepFashion files; the frame is not stored (keep all entries in one frame and record it)."""
    rows = [CFLD_HEADER]
    for name, kp in annotations.items():
        if not isinstance(kp, Keypoints):
            raise TypeError(f"write_cfld_annotations: annotations[{name!r}] must be a Keypoints, got "
                            f"{type(kp).__name__}.")
        if any(c in name for c in ":\n"):
            raise ValueError(f"write_cfld_annotations: image name {name!r} contains ':' or a newline, which the "
                             "':'-separated format cannot hold. Rename the image.")
        miss = kp.missing_mask()
        rows.append(f"{name}:{json.dumps(_int_list(kp.xy[:, 1], miss))}:{json.dumps(_int_list(kp.xy[:, 0], miss))}")
    return _atomic_write_text(path, "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------------- PIDM / X-MDPT txt
def read_pidm_txt(path: str | os.PathLike) -> Keypoints:
    """Read a PIDM/X-MDPT ``pose/*.txt`` (18 rows of ``x y``) -> Keypoints in the PIDM frame (256, 256).

    Convert to the stretched image frame with ``kp.pidm_to_image((H, W))`` (spec §4.4).
    """
    path = _need_file(path, "read_pidm_txt")
    try:
        arr = np.loadtxt(path, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: expected 18 rows of two numbers 'x y' (PIDM pose txt), could not parse: {e}.") \
            from None
    if arr.shape != (NUM_JOINTS, 2):
        raise ValueError(f"{path}: expected 18 rows x 2 columns (x y) of OpenPose COCO-18 joints, got "
                         f"{arr.shape[0]} rows x {arr.shape[1] if arr.ndim == 2 else 0} columns.")
    return Keypoints(arr, PIDM_FRAME)


def write_pidm_txt(path: str | os.PathLike, kp: Keypoints) -> Path:
    """Write keypoints that are in the PIDM frame (256, 256) as 18 rows 'x y' (see ``Keypoints.image_to_pidm``)."""
    if kp.image_size != PIDM_FRAME:
        raise ValueError(f"write_pidm_txt: keypoints must be in the PIDM frame {PIDM_FRAME}, got image_size="
                         f"{kp.image_size}. Convert with kp.image_to_pidm() first.")
    buf = io.StringIO()
    np.savetxt(buf, kp.xy, fmt="%.6g")
    return _atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------- OpenPose JSON
def parse_openpose(data: Any, image_size: tuple[int, int] | None, *, person: int | str = "best",
                   min_confidence: float = DEFAULT_MIN_CONFIDENCE, source: str = "OpenPose JSON") -> Keypoints:
    """Parsed OpenPose JSON (a dict with ``people``) -> Keypoints of one person (COCO-18 or BODY_25 input).

    Args:
        image_size: (H, W) of the image OpenPose ran on; OpenPose JSON does not record it.
        person: index into ``people``, or "best" for the person with the largest summed confidence.
        min_confidence: joints with confidence below this (or exactly 0) are missing (-1).
    """
    if image_size is None:
        raise ValueError(f"{source}: OpenPose JSON does not record the image size. Pass image_size=(H, W) of the "
                         "image the keypoints were detected on.")
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise ValueError(f"{source}: expected an OpenPose JSON object with a 'people' list, got "
                         f"{type(data).__name__}" + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
                         + ".")
    people = []
    for i, p in enumerate(data["people"]):
        flat = p.get("pose_keypoints_2d", p.get("pose_keypoints")) if isinstance(p, dict) else None
        if flat is None:
            raise ValueError(f"{source}: people[{i}] has no 'pose_keypoints_2d'. Run OpenPose with body keypoints "
                             "enabled.")
        arr = np.asarray(flat, dtype=np.float64)
        if arr.ndim != 1 or arr.size not in (3 * NUM_JOINTS, 75):
            raise ValueError(f"{source}: people[{i}].pose_keypoints_2d has {arr.size} numbers; expected 54 (COCO-18: "
                             "18 joints x (x, y, confidence)) or 75 (BODY_25). Other models (e.g. COCO-17, "
                             "BlazePose) need their own mapping to COCO-18.")
        arr = arr.reshape(-1, 3)
        if len(arr) == 25:
            arr = arr[list(BODY25_TO_COCO18)]
        people.append(arr)
    if not people:
        raise ValueError(f"{source}: 'people' is empty: OpenPose found nobody in this image.")
    if person == "best":
        idx = int(np.argmax([p[:, 2].sum() for p in people]))
    elif isinstance(person, int) and not isinstance(person, bool) and -len(people) <= person < len(people):
        idx = person
    else:
        raise ValueError(f"{source}: person must be 'best' or an index in [0, {len(people)}), got {person!r}.")
    arr = people[idx]
    xy = arr[:, :2].copy()
    xy[(arr[:, 2] < min_confidence) | (arr[:, 2] <= 0)] = MISSING
    return Keypoints(xy, image_size)


def read_openpose_json(path: str | os.PathLike, image_size: tuple[int, int] | None = None, *,
                       person: int | str = "best", min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Keypoints:
    """Read an OpenPose ``*_keypoints.json`` file -> Keypoints (see :func:`parse_openpose`)."""
    path = _need_file(path, "read_openpose_json")
    return parse_openpose(_load_json(path), image_size, person=person, min_confidence=min_confidence,
                          source=str(path))


def write_openpose_json(path: str | os.PathLike, kp: Keypoints) -> Path:
    """Write one person as OpenPose COCO-18 JSON (confidence 1 for present joints, (0, 0, 0) for missing ones)."""
    flat = []
    for (x, y), m in zip(kp.xy.tolist(), kp.missing_mask().tolist()):
        flat += [0.0, 0.0, 0.0] if m else [x, y, 1.0]
    doc = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": flat}]}
    return _atomic_write_text(path, json.dumps(doc) + "\n")


# ---------------------------------------------------------------------------------------------- plain JSON / npy
def read_keypoints_json(path: str | os.PathLike) -> Keypoints:
    """Read rpfm's plain JSON ``{"image_size": [H, W], "keypoints": [[x, y], ...]}``."""
    path = _need_file(path, "read_keypoints_json")
    return Keypoints.from_dict(_load_json(path), name=str(path))


def write_keypoints_json(path: str | os.PathLike, kp: Keypoints) -> Path:
    return _atomic_write_text(path, json.dumps(kp.to_dict()) + "\n")


def read_keypoints_npy(path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> Keypoints:
    """Read an (18, 2) ``.npy`` of (x, y); ``image_size`` (H, W) is required because the file has no frame."""
    path = _need_file(path, "read_keypoints_npy")
    if image_size is None:
        raise ValueError(f"{path}: a .npy keypoint file has no frame. Pass image_size=(H, W), or save the plain "
                         "JSON format, which records it.")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a plain numeric .npy array ({e}).") from None
    return Keypoints(arr, image_size)


def write_keypoints_npy(path: str | os.PathLike, kp: Keypoints) -> Path:
    buf = io.BytesIO()
    np.save(buf, kp.xy)
    from ..fileio import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from None


# ---------------------------------------------------------------------------------------------- dispatch
def load_keypoints(path: str | os.PathLike, image_size: tuple[int, int] | None = None, **kwargs: Any) -> Keypoints:
    """Read one person's keypoints from any single-image format, chosen by extension (and content for .json).

    ``.txt`` -> PIDM (PIDM frame), ``.npy`` -> NumPy (needs ``image_size``), ``.json`` -> OpenPose when it has a
    ``people`` list (needs ``image_size``; ``person``/``min_confidence`` pass through), else plain JSON (resized
    to ``image_size`` when one is given and differs from the recorded frame).
    The CFLD CSV holds many images: use :func:`read_cfld_annotations`.
    """
    path = _need_file(path, "load_keypoints")
    ext = path.suffix.lower()
    if kwargs and ext != ".json":
        raise TypeError(f"load_keypoints: {sorted(kwargs)} only apply to OpenPose JSON, not to {ext!r} files.")
    if ext == ".txt":
        return read_pidm_txt(path)
    if ext == ".npy":
        return read_keypoints_npy(path, image_size)
    if ext == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and "people" in data:
            return parse_openpose(data, image_size, source=str(path), **kwargs)
        kp = Keypoints.from_dict(data, name=str(path))
        if image_size is not None and tuple(image_size) != kp.image_size:
            kp = kp.resize(image_size)
        return kp
    if ext == ".csv":
        raise ValueError(f"{path}: a .csv holds many images; read it with read_cfld_annotations(path)[name].")
    raise ValueError(f"{path}: unknown keypoint file extension {ext!r}. Expected .json (OpenPose or plain), "
                     ".txt (PIDM) or .npy.")
