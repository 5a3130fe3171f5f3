"""Frame-by-frame generation for one source person: ``streamer = pipe.stream(source); frame = streamer(pose)``.

Everything that depends only on the source is computed once, when the streamer is made: the source latent, its
DINOv2-G tokens and its share of the condition aggregation (g_s + l_s). Per frame only the pose branch (VAE encode
and DINOv2-B of the pose, g_p + l_p), the sampler and the decoder run. On CUDA the sampler is the captured graph
(one replay per frame, static buffers, no host sync) and the pipeline's graph cache keeps it between frames.

Temporal consistency: by default every frame starts from the **same** initial noise, so a static pose gives a
static image and a slowly moving pose a slowly changing one; ``shared_noise=False`` draws fresh noise per frame.

:class:`StreamWorker` wraps a streamer in a thread with a bounded input queue for capture loops: ``submit(pose)``
never blocks the capture thread (the oldest waiting pose is dropped when the queue is full, so latency stays
bounded), and ``get()`` returns finished frames in order (``get_result()`` also says which pose each frame is for
and how many were dropped before it). Lifecycle: the thread starts in the constructor; ``close()`` (or leaving a
``with`` block) lets the poses already queued finish, then stops the thread; frames made before ``close()`` can
still be read with ``get()``, after which ``get()`` raises RuntimeError ("closed"). ``get(timeout=s)`` raises
``queue.Empty`` when no frame is ready within ``s`` seconds; ``submit`` after ``close`` raises RuntimeError.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

import torch

from .flow import check_guidance_scale
from .images import to_output
from .samplers import check_num_steps


@dataclass
class StreamStats:
    frames: int = 0
    total_s: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.total_s if self.total_s else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1e3 * self.total_s / self.frames if self.frames else 0.0


@dataclass
class StreamResult:
    """One finished frame of a :class:`StreamWorker`.

    frame: the streamer's output for one pose. index: the pose's submission number (0, 1, 2, ... over the worker's
    life). dropped: poses dropped (never generated) between the previous result and this one. latency_s: seconds
    from ``submit`` to the frame being ready.
    """

    frame: Any
    index: int
    dropped: int
    latency_s: float


def is_single_pose(pose: Any) -> bool:
    """True for one pose (Keypoints, PIL image, path, (H, W, 3) array, (3, H, W) tensor); False for a batch
    (a list or tuple, a (B, H, W, 3) array, a (B, 3, H, W) tensor)."""
    from .pose.keypoints import Keypoints

    if isinstance(pose, (Keypoints, Image.Image, str, os.PathLike)):
        return True
    if isinstance(pose, (np.ndarray, torch.Tensor)):
        return pose.ndim == 3
    return False


class PoseStreamer:
    """Generate one frame per target pose for a fixed source person (see the module docstring).

    Made by :meth:`rpfm.RPFMPipeline.stream`. ``__call__(pose)`` takes one pose (any input the pipeline accepts) and
    returns ONE frame in ``output_type`` (a PIL image, an (H, W, 3) array, a (3, H, W) tensor, or a (C, h, w)
    latent); a batch of poses (a list, or a 4-D array/tensor) gives a batch of frames (a list of PIL images, or a
    4-D array/tensor).
    """

    def __init__(self, pipe, source_image: Any, *, num_steps: int = 10, guidance_scale: float = 1.1,
                 solver: str = "euler", generator: torch.Generator | None = None, shared_noise: bool = True,
                 output_type: str = "pil", sampler_backend: str = "auto", resize: bool = False):
        self.pipe = pipe
        self.num_steps = check_num_steps(num_steps)
        self.guidance_scale = check_guidance_scale(guidance_scale)
        if solver not in ("euler", "heun"):
            raise ValueError(f"solver: streaming uses fixed-step solvers ('euler', 'heun'), got {solver!r}.")
        self.solver = solver
        self.output_type = output_type
        self.sampler_backend = sampler_backend
        self.resize = resize
        self.shared_noise = shared_noise
        self.generator = generator
        self.stats = StreamStats()
        self.z_s, self.source_part = pipe.encode_source(source_image, resize=resize)    # (1, C, h, w), (1, 1, D)
        if self.z_s.shape[0] != 1:
            raise ValueError(f"source_image: a stream has one source person, got a batch of {self.z_s.shape[0]}. "
                             f"Make one streamer per source.")
        self._noise = pipe.prepare_noise(1, generator) if shared_noise else None

    @torch.no_grad()
    def __call__(self, pose: Any):
        t0 = time.perf_counter()
        pipe = self.pipe
        z_p, pose_part = pipe.encode_pose(pose, resize=self.resize, name="pose")       # (F, C, h, w)
        cond = pipe.model.combine_condition(self.source_part, pose_part, z_s=self.z_s, z_p=z_p)
        F = z_p.shape[0]
        x1 = self._noise.expand(F, -1, -1, -1).contiguous() if self.shared_noise else \
            pipe.prepare_noise(F, self.generator)
        x0, _, _ = pipe._sample(cond, x1, num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                solver=self.solver, sampler_backend=self.sampler_backend, atol=0, rtol=0)
        out = x0 if self.output_type == "latent" else to_output(pipe.decode(x0), self.output_type)
        if is_single_pose(pose):
            out = out[0]
        self.stats.frames += F
        self.stats.total_s += time.perf_counter() - t0
        return out


class StreamWorker:
    """A streamer on its own thread, for capture loops: ``submit(pose)`` then ``get()`` frames in order.

    ``max_pending`` bounds the input queue; when it is full the oldest waiting pose is dropped (counted in
    ``dropped``, and per frame in :class:`StreamResult`) so the output never falls further behind the camera. Use
    as a context manager or call ``close()`` (see the module docstring for the lifecycle). An exception in the
    worker is re-raised by the next ``get()``.

    Example::

        with StreamWorker(pipe.stream(source), max_pending=2) as worker:
            for pose in camera_poses():
                worker.submit(pose)
                try:
                    result = worker.get_result(timeout=0.0)      # queue.Empty when no frame is ready yet
                    show(result.frame, skipped=result.dropped)
                except queue.Empty:
                    pass
    """

    _STOP = object()

    def __init__(self, streamer: PoseStreamer, *, max_pending: int = 2):
        if max_pending < 1:
            raise ValueError(f"max_pending: expected an int >= 1, got {max_pending}.")
        self.streamer = streamer
        self.dropped = 0          # poses dropped so far, in total
        self._submitted = 0       # submission numbers handed out
        self._last_index = -1     # submission number of the last pose generated (worker thread only)
        self._in: queue.Queue = queue.Queue(maxsize=max_pending)
        self._out: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rpfm-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._in.get()
            if item is self._STOP:
                self._out.put(self._STOP)
                return
            index, pose, t_submit = item
            try:
                frame = self.streamer(pose)
            except Exception as e:  # handed to the consumer, who re-raises it in get()
                self._out.put(e)
                continue
            self._out.put(StreamResult(frame, index, index - self._last_index - 1, time.perf_counter() - t_submit))
            self._last_index = index

    def submit(self, pose: Any) -> int:
        """Queue ``pose`` without blocking (dropping the oldest waiting pose if the queue is full); returns the
        pose's submission number (``StreamResult.index``)."""
        with self._lock:
            if not self._thread.is_alive():
                raise RuntimeError("StreamWorker: the worker is closed; make a new one.")
            item = (self._submitted, pose, time.perf_counter())
            self._submitted += 1
            while True:
                try:
                    self._in.put_nowait(item)
                    return item[0]
                except queue.Full:
                    try:
                        self._in.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float | None = None):
        """The next finished frame (blocks up to ``timeout`` seconds, forever for None; ``queue.Empty`` after
        that). Raises RuntimeError once the worker is closed and every frame has been read."""
        return self.get_result(timeout).frame

    def get_result(self, timeout: float | None = None) -> StreamResult:
        """Like :meth:`get`, with the pose's index, the poses dropped before it and the latency."""
        if timeout is not None and timeout <= 0:
            item = self._out.get_nowait()
        else:
            item = self._out.get(timeout=timeout)
        if item is self._STOP:
            self._out.put(self._STOP)   # stay closed for later calls
            raise RuntimeError("StreamWorker: closed, no more frames.")
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        """Finish the poses already queued, then stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._in.put(self._STOP)
            self._thread.join()

    def __enter__(self) -> "StreamWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["PoseStreamer", "StreamWorker", "StreamResult", "StreamStats", "is_single_pose"]
