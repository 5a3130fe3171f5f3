"""Frame-by-frame generation for one source person: ``streamer = pipe.stream(source); frame = streamer(pose)``.

Everything that depends only on the source is computed once, when the streamer is made: the source latent, its
DINOv2-G tokens and its share of the condition aggregation (g_s + l_s). Per frame only the pose branch (VAE encode
and DINOv2-B of the pose, g_p + l_p), the sampler and the decoder run. On CUDA (with the graph sampler available,
``sampler_backend`` not "eager" and no model CPU offload) each of them is a CUDA graph replay at the stream's
fixed pose batch: the pose is copied into a static buffer, the pose branch and the condition aggregation replay
one graph, the sampler its own (kept in the pipeline's graph cache), the decoder a third; no host sync and no new
shapes per frame (the value check of a device pose is deferred, ``rpfm.checks``). ``PoseStreamer.frame_backend``
says which ran. A new pose batch size or moved weights recapture; if capture fails, "auto" logs the reason once
and runs those stages eagerly ("graph" raises). On CPU the stages run eagerly, exactly as the pipeline call does.

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

import functools
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

import torch
from torch import Tensor

from .checks import Checks
from .flow import check_guidance_scale
from .graph_sampler import CapturedStage, EagerStage, capture_fingerprint, log_fallback_once
from .images import to_output
from .model import Condition
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

    ``frame_backend`` says what ran the pose branch and the decoder at the last frame: "cuda-graph" (captured at
    the stream's pose batch, see the module docstring) or "eager".
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
        self.frame_backend = "eager"     # what ran the pose branch and the decoder at the last frame ("cuda-graph")
        self.z_s, self.source_part = pipe.encode_source(source_image, resize=resize)    # (1, C, h, w), (1, 1, D)
        if self.z_s.shape[0] != 1:
            raise ValueError(f"source_image: a stream has one source person, got a batch of {self.z_s.shape[0]}. "
                             f"Make one streamer per source.")
        self._noise = pipe.prepare_noise(1, generator) if shared_noise else None
        self._stages: tuple[tuple, Any, Any] | None = None     # (key, encode stage, decode stage) for one batch
        self._lock = threading.Lock()                           # the stages' static buffers: one frame at a time

    @torch.no_grad()
    def __call__(self, pose: Any):
        t0 = time.perf_counter()
        pipe = self.pipe
        checks = Checks()               # a device pose's value check is read after the frame is queued
        pose_t = pipe._pose_tensor(pose, resize=self.resize, name="pose", checks=checks)   # (F, 3, H, W) in [0, 1]
        F = pose_t.shape[0]
        with self._lock:
            encode, decode = self._frame_stages(pose_t)        # (F, 3, H, W) -> Condition; x0 -> images
            cond = encode(pose_t)
            x1 = self._noise.expand(F, -1, -1, -1).contiguous() if self.shared_noise else \
                pipe.prepare_noise(F, self.generator)
            x0, _, _ = pipe._sample(cond, x1, num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                    solver=self.solver, sampler_backend=self.sampler_backend, atol=0, rtol=0)
            out = x0 if self.output_type == "latent" else to_output(decode(x0), self.output_type, checks=checks)
        checks.resolve()
        if is_single_pose(pose):
            out = out[0]
        self.stats.frames += F
        self.stats.total_s += time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ per-frame stages
    def _capture_unavailable(self) -> str | None:
        """Why the pose branch and decoder are not captured for this stream (None when they are)."""
        pipe = self.pipe
        if pipe.device.type != "cuda":
            return "CUDA graphs need a CUDA device"
        if self.sampler_backend == "eager":
            return "sampler_backend='eager'"
        if pipe._offload_device is not None:
            return "model CPU offload moves the codec and encoders per stage"
        return pipe._graph_unavailable(self.solver)

    def _frame_stages(self, pose: Tensor) -> tuple[Any, Any]:
        """The (encode, decode) stages for this pose batch: captured on CUDA (recaptured when the batch or the
        weights change), eager otherwise or after a failed capture (logged once, not retried)."""
        pipe = self.pipe
        encode = functools.partial(_encode_frames, pipe, self.source_part, self.z_s)   # no reference to self
        if self._capture_unavailable() is not None:
            self.frame_backend = EagerStage.kind
            return EagerStage(encode, pose), EagerStage(pipe.decode, pose)
        dev, dt = pipe.device, pipe.dtype
        shape_key = ("stream", tuple(pose.shape), dt, dev, self.solver, self.output_type)
        key = (shape_key, capture_fingerprint(pipe.model, dev, dt, pipe.codec, pipe.pose_encoder))
        if self._stages is not None and self._stages[0] == key:
            return self._stages[1:]
        self._stages = None                                     # free the old graphs before capturing new ones
        why_not = pipe._graphs.failure(shape_key) if self.sampler_backend == "auto" else None   # graph: retry
        if why_not is None:
            cfg = pipe.config
            latents = torch.zeros(pose.shape[0], cfg.latent_channels, cfg.latent_size, cfg.latent_size,
                                  device=dev, dtype=torch.float32)              # the sampler's x0 is float32
            try:
                decode = (EagerStage(pipe.decode, latents) if self.output_type == "latent"     # never called
                          else CapturedStage(pipe.decode, latents))
                self._stages = (key, CapturedStage(encode, pose), decode)
            except Exception as e:    # auto: eager from now on for this shape, one logged reason; graph: raise
                if self.sampler_backend == "graph":
                    raise
                why_not = f"stream stage capture failed for batch {pose.shape[0]} ({type(e).__name__}: {e})"
                pipe._graphs.mark_failed(shape_key, why_not)
                log_fallback_once(why_not, what="stream CUDA graphs",
                                  instead="running the pose branch and the decoder eagerly")
            else:
                self.frame_backend = CapturedStage.kind
                return self._stages[1:]
        self.frame_backend = EagerStage.kind
        return EagerStage(encode, pose), EagerStage(pipe.decode, pose)


def _encode_frames(pipe, source_part: Tensor | None, z_s: Tensor, pose: Tensor) -> Condition:
    """Rendered poses (F, 3, H, W) in [0, 1] -> the frames' condition (pose latent and features, then y with the
    cached source share). Shapes only, no host sync: the streamer captures it on CUDA."""
    z_p, pose_part = pipe._encode_pose_tensor(pose)                                     # (F, C, h, w)
    return pipe.model.combine_condition(source_part, pose_part, z_s=z_s, z_p=z_p)


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
