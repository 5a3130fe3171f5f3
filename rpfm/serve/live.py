"""The Live tab: one browser session's camera stream -> pose per frame -> a generated frame through ``pipe.stream``.

A :class:`LiveSession` is made for one (source photo, steps) choice: the source is encoded once
(:meth:`rpfm.RPFMPipeline.stream`), and each camera frame then costs one pose estimate (BlazePose in video mode,
which tracks the person between frames) plus the pose branch, the sampler and the decoder. Frames/s is measured
over the last :data:`WINDOW` frames, end to end (camera frame in -> generated frame out).

Dropping, not queueing: Gradio's streaming protocol keeps one pending input per stream and overwrites it with each
new camera frame, so while a frame is being generated the camera's newer frames replace each other and only the
newest is processed next. The latency therefore stays at about one frame's processing time however slow the model.
"""
from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
from PIL import Image

from .context import ServeContext
from .handlers import enlarge
from .uploads import centre_square

WINDOW = 20


class LiveSession:
    """Camera frames in, generated frames out, for one source person (see the module docstring)."""

    def __init__(self, ctx: ServeContext, source: Image.Image, *, steps: int = 10, seed: int = 0, key: Any = None):
        import torch

        from ..pose.estimate import load_estimator

        self.ctx = ctx
        self.key = key                  # what the session was made for (source, steps): the app rebuilds on change
        with ctx.model_lock:
            self.streamer = ctx.pipe.stream(source, num_steps=steps, guidance_scale=1.0,
                                            generator=torch.Generator().manual_seed(seed))
        self.estimator = load_estimator("blazepose", mode="video")
        self.frames = 0
        self.missed = 0                 # camera frames in which nobody was found
        self.last: Image.Image | None = None
        self._times: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self._model_s = 0.0

    @property
    def fps(self) -> float:
        """Generated frames per second over the last WINDOW frames (0 until two have been made)."""
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)

    def __call__(self, frame: np.ndarray) -> tuple[Image.Image | None, str]:
        """One camera frame (H, W, 3) uint8 -> (pose | generated panel, status line)."""
        size = self.ctx.image_size
        view = centre_square(frame)
        t0 = time.perf_counter()
        kp = self.estimator(view)
        pose_s = time.perf_counter() - t0
        if kp is None:
            self.missed += 1
            return self.last, f"No person in view (frame skipped). {self.status()}"
        kp = kp.resize((size, size))
        with self.ctx.model_lock:
            t1 = time.perf_counter()
            out = self.streamer(kp)          # one pose in, one image out (rpfm.streaming)
            out = out[0] if isinstance(out, list) else out
            self._model_s = time.perf_counter() - t1
        from ..pose.render import render_pose

        pose = Image.fromarray((render_pose(kp) * 255).round().astype(np.uint8))
        panel = Image.new("RGB", (2 * size, size))
        panel.paste(pose, (0, 0))
        panel.paste(out, (size, 0))
        self.last = enlarge(panel, 512)
        self.frames += 1
        self._times.append(time.perf_counter())
        return self.last, f"{self.status()} Pose {1e3 * pose_s:.0f} ms, model {1e3 * self._model_s:.0f} ms per frame."

    def status(self) -> str:
        return f"{self.fps:.1f} frames/s, {self.frames} frames generated" + (
            f", {self.missed} without a person" if self.missed else "") + "."

    def close(self) -> None:
        self.estimator.close()


__all__ = ["LiveSession", "WINDOW"]
