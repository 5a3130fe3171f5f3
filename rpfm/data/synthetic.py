"""A synthetic pose-transfer benchmark, drawn procedurally and written in the CFLD/GFLA DeepFashion layout.

Each identity is an articulated person with a fixed appearance (shirt colour and pattern: plain, stripes, checks or
dots; sleeve length; trousers, shorts or a skirt; skin, hair colour and style; shoes; height, shoulder and hip
width, limb thickness, head size) drawn in several poses. A pose is a 3-D stick figure (joint angles from one of a
few archetypes: standing, walking, arms crossed, hands on hips, an arm raised, crossed legs, random) turned to a
front, side or back view and projected orthographically. Body parts are shapes around the 18 OpenPose joints
(capsules for limbs, a polygon for the torso, ellipses for the head and hair) painted far-to-near, so crossed arms,
a far arm in a side view, or arms folded in a back view are occluded. Back views draw no face and lose the nose and
eyes from the annotation; the far ear of a profile is dropped too. Occluded body joints stay annotated.

Layout written to ``DIR`` (the CFLD/GFLA one, so the DeepFashion loader reads it unchanged)::

    train_highres/<name>.png, test_highres/<name>.png   name = id{identity:05d}_{k:02d}_{view}.png (flat, as CFLD)
    fasion-resize-annotation-{train,test}.csv            name:keypoints_y:keypoints_x, ints, -1 missing
    fasion-resize-pairs-{train,test}.csv                 header 'from,to': every ordered pair within an identity
    meta.json                                            seed, image size, keypoint frame, splits, counts

Unlike DeepFashion (256 x 176 annotations), the images are square ``size x size`` and the keypoint frame is the
image frame; ``meta.json`` records it as ``keypoint_frame``. Train and test identities are disjoint. Everything is
a pure function of ``seed`` (numpy ``SeedSequence([seed, identity, k])``), so the same arguments give byte-identical
files. Images are drawn at 2-4x supersampling and box-filtered down.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..pose.formats import write_cfld_annotations
from ..pose.keypoints import MISSING, Keypoints

SIZES = (64, 128, 256)
GENERATOR_VERSION = 1
BACKGROUND = (240, 240, 238)  # a near-white studio backdrop, as in DeepFashion
VIEWS = {"front": 0.5, "side": 0.25, "back": 0.25}
ARCHETYPES = {"stand": 0.18, "walk": 0.2, "arms_crossed": 0.12, "hands_on_hips": 0.12, "arm_raised": 0.12,
              "crossed_legs": 0.09, "random": 0.17}
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "dots")
SKIN = ((255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 30))
HAIR = ((30, 25, 22), (70, 45, 30), (115, 78, 45), (215, 180, 110), (150, 62, 30), (165, 165, 160))
BOTTOMS = ((52, 78, 125), (30, 30, 35), (190, 170, 125), (120, 120, 125), (35, 45, 80), (225, 225, 220),
           (90, 100, 55), (120, 40, 45))
SHOES = ((25, 25, 25), (90, 55, 30), (235, 235, 235), (140, 30, 30))
# body lengths in units of the standing height (sole to crown = 1)
_LEN = {"neck_y": 0.32, "shoulder_y": 0.295, "upper_arm": 0.165, "forearm": 0.145, "hand": 0.06, "thigh": 0.245,
        "shin": 0.235, "foot": 0.07, "neck": 0.035}


@dataclass(frozen=True)
class Appearance:
    """Everything fixed per identity. Colours are RGB tuples, lengths are in body-height units."""

    skin: tuple
    hair: tuple
    hair_style: str  # short | long
    shirt: tuple
    pattern: str
    pattern_color: tuple
    pattern_period: float
    long_sleeves: bool
    bottom: str  # trousers | shorts | skirt
    bottom_color: tuple
    shoes: tuple
    height: float  # fraction of the frame height a standing figure spans
    shoulder: float  # half-width
    hip: float  # half-width
    limb: float  # thickness factor
    head: float  # radius


# ============================================================================================ sampling
def _jitter(rng: np.random.Generator, color: tuple, amount: int) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _hsv(rng: np.random.Generator) -> tuple:
    h, s, v = rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.35, 0.95)
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(int(round(c * 255)) for c in rgb)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    shirt = _hsv(rng)
    lum = 0.3 * shirt[0] + 0.59 * shirt[1] + 0.11 * shirt[2]
    pattern_color = (250, 250, 245) if lum < 140 else (rng.choice([(25, 25, 30), tuple(255 - c for c in shirt)]))
    return Appearance(
        skin=_jitter(rng, SKIN[rng.integers(len(SKIN))], 8), hair=_jitter(rng, HAIR[rng.integers(len(HAIR))], 10),
        hair_style=str(rng.choice(["short", "long"])), shirt=shirt, pattern=str(rng.choice(PATTERNS)),
        pattern_color=tuple(int(c) for c in pattern_color), pattern_period=float(rng.uniform(0.045, 0.075)),
        long_sleeves=bool(rng.random() < 0.5), bottom=str(rng.choice(["trousers", "trousers", "shorts", "skirt"])),
        bottom_color=_jitter(rng, BOTTOMS[rng.integers(len(BOTTOMS))], 12),
        shoes=_jitter(rng, SHOES[rng.integers(len(SHOES))], 10), height=float(rng.uniform(0.8, 0.9)),
        shoulder=float(rng.uniform(0.1, 0.135)), hip=float(rng.uniform(0.07, 0.095)),
        limb=float(rng.uniform(0.8, 1.25)), head=float(rng.uniform(0.056, 0.068)))


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def sample_pose(rng: np.random.Generator, view: str | None = None) -> dict:
    """Joint angles (degrees) and the view. Arms: abduct, flex, elbow, inward; legs: abduct, flex, knee."""
    view = view or str(rng.choice(list(VIEWS), p=list(VIEWS.values())))
    kind = str(rng.choice(list(ARCHETYPES), p=list(ARCHETYPES.values())))
    arm = {s: [_u(rng, 5, 20), _u(rng, -10, 15), _u(rng, 0, 25), _u(rng, 0, 60)] for s in ("l", "r")}
    leg = {s: [_u(rng, 0, 8), _u(rng, -5, 5), _u(rng, 0, 10)] for s in ("l", "r")}
    a, b = ("l", "r") if rng.random() < 0.5 else ("r", "l")
    if kind == "walk":
        arm[a][1], arm[b][1] = _u(rng, 15, 40), _u(rng, -35, -10)
        leg[b][1], leg[a][1], leg[a][2] = _u(rng, 15, 30), _u(rng, -25, -10), _u(rng, 5, 30)
    elif kind == "arms_crossed":
        for s in "lr":
            arm[s] = [_u(rng, 10, 22), _u(rng, 10, 30), _u(rng, 100, 125), _u(rng, 80, 90)]
    elif kind == "hands_on_hips":
        for s in "lr":
            arm[s] = [_u(rng, 35, 55), _u(rng, -20, 0), _u(rng, 80, 110), _u(rng, 85, 95)]
    elif kind == "arm_raised":
        arm[a] = [_u(rng, 95, 165), _u(rng, -10, 30), _u(rng, 0, 60), _u(rng, 0, 40)]
    elif kind == "crossed_legs":
        leg[a] = [_u(rng, -20, -14), _u(rng, 5, 12), _u(rng, 0, 8)]
        leg[b] = [_u(rng, -20, -14), _u(rng, -8, -3), _u(rng, 0, 8)]
    elif kind == "random":
        arm = {s: [_u(rng, 0, 110), _u(rng, -40, 100), _u(rng, 0, 140), _u(rng, 0, 90)] for s in "lr"}
        leg = {s: [_u(rng, -10, 25), _u(rng, -30, 45), _u(rng, 0, 70)] for s in "lr"}
    yaw = {"front": _u(rng, -25, 25), "side": float(rng.choice([-1, 1])) * _u(rng, 55, 100),
           "back": 180 + _u(rng, -25, 25)}[view]
    return {"view": view, "kind": kind, "yaw": yaw, "arm": arm, "leg": leg, "twist": _u(rng, -12, 12),
            "lean": _u(rng, -6, 6), "side_lean": _u(rng, -5, 5), "head_yaw": _u(rng, -25, 25),
            "head_tilt": _u(rng, -10, 10)}


# ============================================================================================ 3-D skeleton
def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _limb_dir(side: float, abduct: float, flex: float) -> np.ndarray:
    """Unit direction: (0, -1, 0) hangs down; abduct swings it out sideways, flex swings it forward (+z)."""
    a, f = math.radians(abduct), math.radians(flex)
    return _unit(np.array([side * math.sin(a) * math.cos(f), -math.cos(a) * math.cos(f), math.sin(f)]))


def _bend(u: np.ndarray, pref: np.ndarray, deg: float) -> np.ndarray:
    w = pref - (pref @ u) * u
    w = _unit(w if np.linalg.norm(w) > 1e-6 else np.array([0.0, 0.0, 1.0]))
    return math.cos(math.radians(deg)) * u + math.sin(math.radians(deg)) * w


def skeleton3d(app: Appearance, pose: dict) -> dict[str, np.ndarray]:
    """Named 3-D points (x = the person's left, y = up, z = forward), feet on the ground y = 0."""
    pelvis = np.array([0.0, 0.5, 0.0])
    up = _rot("y", pose["twist"]) @ _rot("x", -pose["lean"]) @ _rot("z", pose["side_lean"])
    pts = {"pelvis": pelvis, "neck": pelvis + up @ np.array([0, _LEN["neck_y"], 0])}
    for s, side in (("r", -1.0), ("l", 1.0)):
        sh = pelvis + up @ np.array([side * app.shoulder, _LEN["shoulder_y"], 0])
        ab, fl, el, inward = pose["arm"][s]
        u = up @ _limb_dir(side, ab, fl)
        elbow = sh + u * _LEN["upper_arm"]
        fd = _bend(u, up @ _unit(np.array([-side * math.sin(math.radians(inward)), 0.25,
                                           math.cos(math.radians(inward))])), el)
        wrist = elbow + fd * _LEN["forearm"]
        hip = pelvis + np.array([side * app.hip, 0, 0])
        ab, fl, kn = pose["leg"][s]
        t = _limb_dir(side, ab, fl)
        knee = hip + t * _LEN["thigh"]
        ankle = knee + _bend(t, np.array([0.0, 0.0, -1.0]), kn) * _LEN["shin"]
        toe = ankle + _unit(np.array([side * 0.25, -0.15, 1.0])) * _LEN["foot"]
        pts.update({f"{s}_shoulder": sh, f"{s}_elbow": elbow, f"{s}_wrist": wrist,
                    f"{s}_hand": wrist + fd * _LEN["hand"], f"{s}_hip": hip, f"{s}_knee": knee,
                    f"{s}_ankle": ankle, f"{s}_toe": toe})
    rh = up @ _rot("y", pose["head_yaw"]) @ _rot("x", pose["head_tilt"])
    r = app.head
    head = pts["neck"] + up @ np.array([0, _LEN["neck"] + 0.9 * r, 0])
    pts.update({"head": head, "nose": head + rh @ np.array([0, -0.15 * r, 0.95 * r]),
                "face_normal": rh @ np.array([0.0, 0.0, 1.0])})
    for s, side in (("r", -1.0), ("l", 1.0)):
        pts[f"{s}_eye"] = head + rh @ np.array([side * 0.38 * r, 0.12 * r, 0.82 * r])
        pts[f"{s}_ear"] = head + rh @ np.array([side * 0.97 * r, 0.0, -0.05 * r])
    ground = min(pts["l_ankle"][1], pts["r_ankle"][1], pts["l_toe"][1], pts["r_toe"][1]) - 0.025
    for k in pts:
        if k != "face_normal":
            pts[k] = pts[k] - np.array([0.0, ground, 0.0])
    return pts


# COCO-18 order from the named 3-D points
_COCO = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
         "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
_RADIUS = {"upper_arm": 0.032, "forearm": 0.027, "hand": 0.022, "thigh": 0.052, "shin": 0.04, "neck": 0.026,
           "shoe": 0.026}
_TORSO_DEPTH = 0.065  # half-thickness of the chest, so a side view has a body, not a line
_EYE = (40, 30, 30)


# ============================================================================================ drawing
class _Canvas:
    """A supersampled PIL canvas; all public coordinates are output pixels (pixel centres at integers)."""

    def __init__(self, size: int, ss: int):
        self.size, self.ss = size, ss
        self.img = Image.new("RGB", (size * ss, size * ss), BACKGROUND)
        self.draw = ImageDraw.Draw(self.img)

    def c(self, p) -> tuple[float, float]:
        return ((p[0] + 0.5) * self.ss, (p[1] + 0.5) * self.ss)

    def ellipse(self, p, rx, ry, fill, draw=None):
        (x, y), s = self.c(p), self.ss
        (draw or self.draw).ellipse([x - rx * s, y - ry * s, x + rx * s, y + ry * s], fill=fill)

    def capsule(self, a, b, r, fill, outline=True, draw=None):
        draw = draw or self.draw
        for rr, col in (((r + 0.45), _dark(fill)), (r, fill)) if outline else ((r, fill),):
            draw.line([self.c(a), self.c(b)], fill=col, width=max(1, round(2 * rr * self.ss)))
            self.ellipse(a, rr, rr, col, draw)
            self.ellipse(b, rr, rr, col, draw)

    def polygon(self, pts, fill, draw=None):
        (draw or self.draw).polygon([self.c(p) for p in pts], fill=fill)

    def textured(self, paint_mask, origin, eu, ev, period: float, app: Appearance):
        """Fill the shape ``paint_mask(draw, 255)`` draws with the shirt pattern in the (eu, ev) frame at origin."""
        mask = Image.new("L", self.img.size, 0)
        paint_mask(ImageDraw.Draw(mask), 255)
        box = mask.getbbox()
        if box is None:
            return
        x0, y0, x1, y1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        ox, oy = self.c(origin)
        per = period * self.ss
        u = ((xx - ox) * eu[0] + (yy - oy) * eu[1]) / per
        v = ((xx - ox) * ev[0] + (yy - oy) * ev[1]) / per
        sel = _pattern(app.pattern, u, v)
        tex = np.where(sel[..., None], np.array(app.pattern_color, np.uint8), np.array(app.shirt, np.uint8))
        self.img.paste(Image.fromarray(tex.astype(np.uint8)), (x0, y0), mask.crop(box))

    def result(self) -> np.ndarray:
        return np.asarray(self.img.resize((self.size, self.size), Image.Resampling.BOX))


def _dark(color: tuple) -> tuple:
    return tuple(int(c * 0.62) for c in color)


def _pattern(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if kind == "hstripes":
        return (v % 1.0) < 0.42
    if kind == "vstripes":
        return (u % 1.0) < 0.42
    if kind == "checks":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    if kind == "dots":
        return (u % 1.0 - 0.5) ** 2 + (v % 1.0 - 0.5) ** 2 < 0.22 ** 2
    return np.zeros(u.shape, bool)


def _perp(d: np.ndarray) -> np.ndarray:
    return np.array([-d[1], d[0]])


def _sleeve(cv: _Canvas, a, b, r: float, app: Appearance, period: float) -> None:
    """A patterned sleeve from a to b: a dark outline capsule, then the shirt pattern along the limb."""
    cv.capsule(a, b, r + 0.45, _dark(app.shirt), outline=False)
    d = _unit(b - a) if np.linalg.norm(b - a) > 1e-6 else np.array([0.0, 1.0])
    cv.textured(lambda dr, f: cv.capsule(a, b, r, f, outline=False, draw=dr), a, _perp(d), d, period, app)


def render_person(app: Appearance, pose: dict, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Keypoints]:
    """Draw one person -> (uint8 (size, size, 3) RGB image, Keypoints in the image frame).

    Parts are (depth, painter) pairs, painted far to near (a stable sort keeps ties in insertion order).
    """
    world = {k: _rot("y", pose["yaw"]) @ v for k, v in skeleton3d(app, pose).items()}  # x right, y up, z to camera
    P, s = _fit(world, app, size, rng)
    depth = {k: float(v[2]) for k, v in world.items()}
    cv = _Canvas(size, max(2, 256 // size))
    feet = (P["l_ankle"] + P["r_ankle"]) / 2 + np.array([0.0, 0.02 * s])
    cv.ellipse(feet, 0.16 * s, 0.025 * s, tuple(c - 22 for c in BACKGROUND))  # a soft floor shadow
    parts = _limb_parts(cv, app, P, depth, s) + _torso_parts(cv, app, pose, P, depth, s)
    parts += _head_parts(cv, app, P, depth, float(world["face_normal"][2]), world["face_normal"], s)
    for _, paint in sorted(parts, key=lambda t: t[0]):
        paint()
    return cv.result(), _keypoints(P, depth, app.head, size)


def _fit(world: dict, app: Appearance, size: int, rng: np.random.Generator) -> tuple[dict, float]:
    """Pixels per body unit and placement: feet near the bottom, pelvis near the middle, all inside the frame."""
    pts = [p for k, p in world.items() if k != "face_normal"]
    x_lo, x_hi = min(p[0] for p in pts) - 0.06, max(p[0] for p in pts) + 0.06
    y_lo = min(p[1] for p in pts) - 0.02
    y_hi = max(world["head"][1] + 1.2 * app.head, max(p[1] for p in pts) + 0.03)
    margin = 0.03 * size
    s = min(app.height * size, (size - 2 * margin) / (y_hi - y_lo), (size - 2 * margin) / (x_hi - x_lo))
    ground = size * (0.5 + app.height / 2) + _u(rng, -0.02, 0.02) * size
    ground = max(min(ground, size - margin + y_lo * s), margin + y_hi * s)
    cx = size / 2 + _u(rng, -0.04, 0.04) * size - world["pelvis"][0] * s
    cx = min(max(cx, margin - x_lo * s), size - margin - x_hi * s)
    return {k: np.array([cx + v[0] * s, ground - v[1] * s]) for k, v in world.items() if k != "face_normal"}, s


def _limb_parts(cv: _Canvas, app: Appearance, P: dict, depth: dict, s: float) -> list:
    lf, period, parts = app.limb, app.pattern_period * s, []

    def mid(a, b):
        return (depth[a] + depth[b]) / 2 + 0.02  # limbs win ties with the torso (arms at the sides overlap it)

    for side in ("l", "r"):
        sh, el, wr, hd = (P[f"{side}_{j}"] for j in ("shoulder", "elbow", "wrist", "hand"))
        r_ua, r_fa = _RADIUS["upper_arm"] * lf * s, _RADIUS["forearm"] * lf * s

        def upper(sh=sh, el=el, r=r_ua):
            cv.capsule(sh, el, r, app.skin)
            _sleeve(cv, sh, el if app.long_sleeves else sh + 0.6 * (el - sh), r * 1.1, app, period)

        def lower(el=el, wr=wr, hd=hd, r=r_fa):
            cv.capsule(wr, hd, _RADIUS["hand"] * lf * s, app.skin)
            if app.long_sleeves:
                _sleeve(cv, el, wr, r * 1.05, app, period)
            else:
                cv.capsule(el, wr, r, app.skin)

        hip, kn, an, toe = (P[f"{side}_{j}"] for j in ("hip", "knee", "ankle", "toe"))
        leg = app.bottom_color if app.bottom == "trousers" else app.skin

        def thigh(hip=hip, kn=kn, r=_RADIUS["thigh"] * lf * s):
            cv.capsule(hip, kn, r, leg)
            if app.bottom == "shorts":
                cv.capsule(hip, hip + 0.6 * (kn - hip), r * 1.12, app.bottom_color)

        parts += [(mid(f"{side}_shoulder", f"{side}_elbow"), upper), (mid(f"{side}_elbow", f"{side}_hand"), lower),
                  (mid(f"{side}_hip", f"{side}_knee"), thigh),
                  (mid(f"{side}_knee", f"{side}_ankle"),
                   lambda kn=kn, an=an: cv.capsule(kn, an, _RADIUS["shin"] * lf * s, leg)),
                  (mid(f"{side}_ankle", f"{side}_toe") + 0.005,
                   lambda an=an, toe=toe: cv.capsule(an, toe, _RADIUS["shoe"] * lf * s, app.shoes))]
    return parts


def _torso_parts(cv: _Canvas, app: Appearance, pose: dict, P: dict, depth: dict, s: float) -> list:
    """The torso: a polygon around the spine whose width follows the turned elliptic cross-section of the chest."""
    lf = app.limb
    sc, hc = (P["l_shoulder"] + P["r_shoulder"]) / 2, (P["l_hip"] + P["r_hip"]) / 2
    spine = _unit(sc - hc)
    perp = _perp(spine)
    turn_up, turn_lo = math.radians(pose["yaw"] + pose["twist"]), math.radians(pose["yaw"])
    hw_s = math.hypot((app.shoulder + 0.4 * _RADIUS["upper_arm"] * lf) * math.cos(turn_up),
                      _TORSO_DEPTH * lf * math.sin(turn_up)) * s
    hw_h = math.hypot((app.hip + 0.6 * _RADIUS["thigh"] * lf) * math.cos(turn_lo),
                      _TORSO_DEPTH * 1.1 * lf * math.sin(turn_lo)) * s
    top, waist, low = sc + spine * 0.03 * s, hc + spine * 0.04 * s, hc - spine * 0.05 * s
    shirt = [sc + perp * hw_s, top + perp * 0.5 * hw_s, top - perp * 0.5 * hw_s, sc - perp * hw_s,
             waist - perp * hw_h * 1.02, waist + perp * hw_h * 1.02]

    def torso():
        cv.polygon([hc + perp * hw_h, waist + perp * hw_h, waist - perp * hw_h, hc - perp * hw_h,
                    low - perp * hw_h * 0.95, low + perp * hw_h * 0.95], app.bottom_color)
        cv.polygon([p + (p - (sc + hc) / 2) * 0.06 for p in shirt], _dark(app.shirt))
        cv.textured(lambda dr, f: cv.polygon(shirt, f, draw=dr), P["neck"], perp, -spine, app.pattern_period * s,
                    app)

    parts = [(sum(depth[f"{a}_{b}"] for a in "lr" for b in ("shoulder", "hip")) / 4, torso)]
    if app.bottom == "skirt":
        hem = hc + 0.75 * ((P["l_knee"] + P["r_knee"]) / 2 - hc)
        skirt = [waist + perp * hw_h, waist - perp * hw_h, hem - perp * hw_h * 1.5, hem + perp * hw_h * 1.5]
        thighs = max((depth[f"{a}_hip"] + depth[f"{a}_knee"]) / 2 for a in "lr") + 0.03
        parts.append((max(thighs, depth["pelvis"] + 0.01), lambda: cv.polygon(skirt, app.bottom_color)))
    return parts


def _head_parts(cv: _Canvas, app: Appearance, P: dict, depth: dict, face_z: float, face_normal: np.ndarray,
                s: float) -> list:
    """Neck, long hair (behind the head), and the head: hair cap, skin, eyes and mouth, fringe; from behind, the
    hair cap covers the head and no face is drawn."""
    head, r = P["head"], app.head * s
    back = -np.array([face_normal[0], -face_normal[1]])  # image direction to the back of the head
    cap = head + back * 0.22 * r + np.array([0.0, -0.14 * r])
    parts = [(depth["head"] - 0.01, lambda: cv.capsule(P["neck"], head, _RADIUS["neck"] * app.limb * s, app.skin))]
    if app.hair_style == "long":
        lo = head + np.array([0.0, 2.4 * r])
        hair = [head + np.array([-1.02 * r, -0.2 * r]), head + np.array([1.02 * r, -0.2 * r]),
                lo + np.array([1.25 * r, 0]), lo + np.array([-1.25 * r, 0])]
        parts.append((depth["head"] - face_z * app.head - 0.005, lambda: cv.polygon(hair, app.hair)))

    def head_group():
        if face_z >= -0.2:
            cv.ellipse(cap, 1.06 * r, 1.04 * r, app.hair)
        cv.ellipse(head, 0.9 * r, 1.05 * r, _dark(app.skin))
        cv.ellipse(head, 0.84 * r, 1.0 * r, app.skin)
        if face_z < -0.2:
            cv.ellipse(cap, 1.0 * r, 1.0 * r, app.hair)
            return
        for e in ("l_eye", "r_eye"):
            if depth[e] - depth["head"] > 0.05 * app.head:
                cv.ellipse(P[e], 0.14 * r, 0.16 * r, _EYE)
        if face_z > 0.3:
            cv.ellipse(P["nose"] + np.array([0.0, 0.42 * r]), 0.22 * r, 0.07 * r, (150, 60, 60))
        (x, y), k = cv.c(cap), cv.ss
        cv.draw.chord([x - 1.06 * r * k, y - 1.04 * r * k, x + 1.06 * r * k, y + 1.04 * r * k], 192, 348,
                      fill=app.hair)

    return parts + [(depth["head"] + 0.06, head_group)]


def _keypoints(P: dict, depth: dict, r_head: float, size: int) -> Keypoints:
    xy = np.array([P[k] for k in _COCO], dtype=np.float64)
    xy = np.floor(xy + 0.5)  # the CSV stores ints
    rel = {k: depth[k] - depth["head"] for k in ("nose", "l_eye", "r_eye", "l_ear", "r_ear")}
    hidden = {"nose": rel["nose"] < 0.3 * r_head, "r_eye": rel["r_eye"] < 0.05 * r_head,
              "l_eye": rel["l_eye"] < 0.05 * r_head, "r_ear": rel["r_ear"] < -0.45 * r_head,
              "l_ear": rel["l_ear"] < -0.45 * r_head}
    for k, name in enumerate(_COCO):
        off = not (0 <= xy[k, 0] <= size - 1 and 0 <= xy[k, 1] <= size - 1)
        if off or hidden.get(name, False):
            xy[k] = MISSING
    return Keypoints(xy, (size, size))


# ============================================================================================ the data set
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def identity_appearance(seed: int, identity: int) -> Appearance:
    return sample_appearance(_rng(seed, identity, 0xA11CE))


def generate_sample(seed: int, identity: int, k: int, size: int) -> tuple[np.ndarray, Keypoints, str]:
    """Image k of one identity -> (uint8 (size, size, 3), Keypoints, view). Image 0 is always a front view."""
    app = identity_appearance(seed, identity)
    rng = _rng(seed, identity, k)
    pose = sample_pose(rng, "front" if k == 0 else None)
    img, kp = render_person(app, pose, size, rng)
    return img, kp, pose["view"]


def _check_args(identities: Any, images_per_identity: Any, size: Any, seed: Any, test_fraction: Any) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if size not in SIZES or not is_int(size):
        raise ValueError(f"size: expected one of {SIZES}, got {size!r}. The benchmark comes in these square sizes.")
    if not is_int(identities) or identities < 2:
        raise ValueError(f"identities: expected an int >= 2 (train and test each need one), got {identities!r}.")
    if not is_int(images_per_identity) or images_per_identity < 2:
        raise ValueError(f"images_per_identity: expected an int >= 2 so source/target pairs exist, got "
                         f"{images_per_identity!r}.")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}.")
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}.")


def generate_synthetic(out_dir: str | os.PathLike, *, identities: int, images_per_identity: int = 4,
                       size: int = 64, seed: int = 0, test_fraction: float = 0.2, overwrite: bool = False) -> dict:
    """Generate the benchmark into ``out_dir`` (layout in the module docstring) and return a summary dict.

    The files are written to a temporary folder beside ``out_dir`` and renamed into place at the end, so an
    interrupted run leaves nothing half-written. A run that was killed is continued by the next one with the same
    arguments (the images it finished are kept: ``summary["resumed"]`` counts them); with other arguments its
    temporary folder is removed. ``out_dir`` must not exist or be empty, unless ``overwrite=True`` (then it is
    replaced). Test identities: ``round(identities * test_fraction)`` (at least 1, at most N - 1), drawn with the
    seed.
    """
    from .staging import check_out_dir, staged_folder

    _check_args(identities, images_per_identity, size, seed, test_fraction)
    out = Path(out_dir)
    check_out_dir(out, overwrite=overwrite, arg="out_dir")
    t0 = time.perf_counter()
    n_test = min(max(1, round(identities * test_fraction)), identities - 1)
    order = _rng(seed, 0x5911).permutation(identities)
    split = {"test": sorted(int(i) for i in order[:n_test]), "train": sorted(int(i) for i in order[n_test:])}
    key = {"generator": "rpfm.data.synthetic", "version": GENERATOR_VERSION, "seed": seed, "size": size,
           "identities": identities, "images_per_identity": images_per_identity, "test_fraction": test_fraction}
    with staged_folder(out, resume_key=key) as tmp:
        done = _read_progress(tmp / PROGRESS_FILE)
        counts: dict[str, dict[str, int]] = {"images": {}, "pairs": {}}
        views = {v: 0 for v in VIEWS}
        resumed = 0
        with open(tmp / PROGRESS_FILE, "a") as progress:
            for part, ids in split.items():
                folder = tmp / f"{part}_highres"
                folder.mkdir(exist_ok=True)
                ann: dict[str, Keypoints] = {}
                pairs = []
                for ident in ids:
                    names = []
                    for k in range(images_per_identity):
                        rec = done.get((ident, k))
                        if rec is not None and (folder / rec["name"]).is_file():
                            name, view, kp = rec["name"], rec["view"], Keypoints(rec["xy"], (size, size))
                            resumed += 1
                        else:
                            img, kp, view = generate_sample(seed, ident, k, size)
                            name = f"id{ident:05d}_{k:02d}_{view}.png"
                            Image.fromarray(img).save(folder / name, format="PNG")
                            # recorded once the image is complete: a resumed run reuses only recorded images
                            progress.write(json.dumps({"id": ident, "k": k, "name": name, "view": view,
                                                       "xy": kp.xy.tolist()}) + "\n")
                            progress.flush()
                        ann[name] = kp
                        names.append(name)
                        views[view] += 1
                    pairs += [(a, b) for a in names for b in names if a != b]
                write_cfld_annotations(tmp / f"fasion-resize-annotation-{part}.csv", ann)
                (tmp / f"fasion-resize-pairs-{part}.csv").write_text("from,to\n" + "".join(f"{a},{b}\n"
                                                                                         for a, b in pairs))
                counts["images"][part], counts["pairs"][part] = len(ann), len(pairs)
        (tmp / PROGRESS_FILE).unlink()
        meta = {"generator": "rpfm.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
                "image_size": [size, size], "keypoint_frame": [size, size], "identities": identities,
                "images_per_identity": images_per_identity, "test_fraction": test_fraction,
                "train_identities": split["train"], "test_identities": split["test"], "views": views,
                "image_dirs": {"train": "train_highres", "test": "test_highres"}, "background": list(BACKGROUND),
                **counts}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {**meta, "out_dir": str(out), "resumed": resumed, "seconds": round(time.perf_counter() - t0, 3)}


PROGRESS_FILE = ".rpfm-progress.jsonl"


def _read_progress(path: Path) -> dict[tuple[int, int], dict]:
    """The images a killed run finished: {(identity, k): {"name", "view", "xy"}} (a cut last line is skipped)."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[(int(rec["id"]), int(rec["k"]))] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return done


# ============================================================================================ CLI
def add_synth_cli(sub: Any) -> None:
    """Register ``synth`` on the ``data`` command's subparsers (see :mod:`rpfm.data.cli`)."""
    p = sub.add_parser("synth", help="generate the synthetic pose-transfer benchmark (CFLD/GFLA layout)",
                       description="Draw procedurally generated people in varying poses and write images, the "
                       "annotation CSV and the pairs CSV in the CFLD/GFLA DeepFashion layout.",
                       epilog="example: rpfm data synth --out data/synth64 --identities 40 --size 64")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --overwrite)")
    p.add_argument("--identities", type=int, required=True, help="number of people (>= 2)")
    p.add_argument("--size", type=int, choices=SIZES, default=64, help="square image size (default: 64)")
    p.add_argument("--images-per-identity", type=int, default=4, help="poses per person (default: 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out identities (default: 0.2)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    s = generate_synthetic(args.out, identities=args.identities, images_per_identity=args.images_per_identity,
                           size=args.size, seed=args.seed, test_fraction=args.test_fraction, overwrite=args.overwrite)
    if s["resumed"]:
        print(f"resumed a killed run: {s['resumed']} images were already drawn")
    print(f"wrote {s['out_dir']}: {s['images']['train']} train / {s['images']['test']} test images "
          f"({len(s['train_identities'])} / {len(s['test_identities'])} identities), {s['pairs']['train']} / "
          f"{s['pairs']['test']} pairs, {args.size}x{args.size}, seed {args.seed}, in {s['seconds']:.2f} s")
    return 0
