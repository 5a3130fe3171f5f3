"""The embedded default for ``rpfm demo``: a pipeline and inputs built in code, no downloads.

Until the trained demo model lands (training issue), the demo pipeline is a *randomly initialised, untrained*
tiny RPFM with the weight-free pixel codec. Its adaLN-Zero initialisation makes the velocity exactly zero, so the
"generated" panel is the decoded starting noise: the demo proves the whole path (inputs -> codec -> condition ->
sampler -> decode -> PNG) runs on a fresh machine; it does not show a learned result.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .codec import PixelCodec
from .config import RPFMConfig
from .model import RPFM

# OpenPose COCO-18 limbs (0-based) and colours, enough to draw a recognisable stick figure for the demo.
_LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
          (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
_COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
# A standing pose and a walking pose in a unit square (x, y), COCO-18 order.
_STANDING = np.array([[.50, .14], [.50, .25], [.40, .25], [.36, .40], [.34, .54], [.60, .25], [.64, .40],
                      [.66, .54], [.44, .55], [.43, .73], [.43, .92], [.56, .55], [.57, .73], [.57, .92],
                      [.48, .12], [.52, .12], [.46, .13], [.54, .13]])
_WALKING = np.array([[.52, .14], [.50, .25], [.40, .25], [.33, .36], [.28, .46], [.60, .25], [.68, .36],
                     [.74, .44], [.44, .55], [.36, .72], [.30, .90], [.56, .55], [.62, .73], [.66, .91],
                     [.50, .12], [.54, .12], [.48, .13], [.56, .13]])


def demo_config() -> RPFMConfig:
    """64x64 images, pixel codec (f = 4 -> 48 x 16 x 16 latents), 2 blocks, D = 64, local branches only."""
    return RPFMConfig(image_size=64, latent_channels=48, latent_downsample=4, patch_size=2, hidden_size=64,
                      depth=2, num_heads=2, branches=("local_source", "local_pose"))


def demo_pipeline(seed: int = 0):
    from .pipeline import RPFMPipeline

    torch.manual_seed(seed)
    return RPFMPipeline(RPFM(demo_config()), PixelCodec(downsample=4))


def draw_pose(keypoints: np.ndarray, size: int) -> Image.Image:
    """A simplified OpenPose-coloured stick figure (lines + joints) on black; keypoints in unit coordinates."""
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    pts = keypoints * size
    width = max(1, size // 32)
    for i, (a, b) in enumerate(_LIMBS):
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=_COLORS[i], width=width)
    for i, (x, y) in enumerate(pts):
        draw.ellipse([x - width, y - width, x + width, y + width], fill=_COLORS[i])
    return img


def draw_person(keypoints: np.ndarray, size: int) -> Image.Image:
    """A flat-shaded figure (skin, shirt, trousers) following the skeleton, on a light background."""
    img = Image.new("RGB", (size, size), (225, 222, 215))
    draw = ImageDraw.Draw(img)
    p = keypoints * size
    w = max(2, size // 12)
    for a, b, colour in [(8, 9, (40, 60, 120)), (9, 10, (40, 60, 120)), (11, 12, (40, 60, 120)),
                         (12, 13, (40, 60, 120)), (2, 3, (200, 60, 50)), (3, 4, (230, 190, 160)),
                         (5, 6, (200, 60, 50)), (6, 7, (230, 190, 160))]:
        draw.line([tuple(p[a]), tuple(p[b])], fill=colour, width=w)
    draw.polygon([tuple(p[2]), tuple(p[5]), tuple(p[11]), tuple(p[8])], fill=(200, 60, 50))
    r = size * 0.07
    draw.ellipse([p[0][0] - r, p[0][1] - r, p[0][0] + r, p[0][1] + r], fill=(230, 190, 160))
    return img


def demo_inputs(size: int = 64) -> tuple[Image.Image, Image.Image]:
    """(source person in a standing pose, target skeleton in a walking pose)."""
    return draw_person(_STANDING, size), draw_pose(_WALKING, size)


def grid(images: list[Image.Image], scale: int = 4) -> Image.Image:
    """Place images side by side, upscaled by ``scale`` (nearest) so small outputs are visible."""
    w, h = images[0].size
    out = Image.new("RGB", (len(images) * w * scale, h * scale))
    for i, im in enumerate(images):
        out.paste(im.resize((w * scale, h * scale), Image.NEAREST), (i * w * scale, 0))
    return out
