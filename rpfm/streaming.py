"""Frame-by-frame generation for one source person: ``streamer = pipe.stream(source); frame = streamer(pose)``.

Everything that depends only on the source is computed once, when the streamer is made: the source latent, its
DINOv2-G tokens and its share of the condition aggregation (g_s + l_s). Per frame only the pose branch (VAE encode
and DINOv2-B of the pose, g_p + l_p), the sampler and the decoder run. On CUDA the sampler is the captured graph
(one replay per frame, static buffers, no host sync) and the pipeline's graph cache keeps it between frames.

Temporal consistency: by default every frame starts from the **same** initial noise, so a static pose gives a
static image and a slowly moving pose a slowly changing one; ``shared_noise=False`` draws fresh noise per frame.

:class:`StreamWorker` wraps a streamer in a thread with a bounded input queue for capture loops: ``submit(pose)``
never blocks the capture thread (the oldest waiting pose is dropped when the queue is full, so latency stays
bounded), and ``get()`` returns finished frames in order.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

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


class PoseStreamer:
    """Generate one frame per target pose for a fixed source person (see the module docstring).

    Made by :meth:`rpfm.RPFMPipeline.stream`. ``__call__(pose)`` takes one rendered pose (any input the pipeline
    accepts; a batch of poses gives a batch of frames) and returns the frame(s) in ``output_type``.
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
        images = pipe.codec.decode(x0.to(pipe.dtype)).float()
        out = x0 if self.output_type == "latent" else to_output(images, self.output_type)
        self.stats.frames += F
        self.stats.total_s += time.perf_counter() - t0
        return out


class StreamWorker:
    """A streamer on its own thread, for capture loops: ``submit(pose)`` then ``get()`` frames in order.

    ``max_pending`` bounds the input queue; when it is full the oldest waiting pose is dropped (counted in
    ``dropped``) so the output never falls further behind the camera. Use as a context manager or call ``close()``.
    An exception in the worker is re-raised by the next ``get()``.
    """

    _STOP = object()

    def __init__(self, streamer: PoseStreamer, *, max_pending: int = 2):
        if max_pending < 1:
            raise ValueError(f"max_pending: expected an int >= 1, got {max_pending}.")
        self.streamer = streamer
        self.dropped = 0
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
            try:
                self._out.put(self.streamer(item))
            except Exception as e:  # handed to the consumer, who re-raises it in get()
                self._out.put(e)

    def submit(self, pose: Any) -> None:
        with self._lock:
            if not self._thread.is_alive():
                raise RuntimeError("StreamWorker: the worker is closed; make a new one.")
            while True:
                try:
                    self._in.put_nowait(pose)
                    return
                except queue.Full:
                    try:
                        self._in.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float | None = None):
        """The next finished frame (blocks up to ``timeout`` seconds; queue.Empty after that)."""
        item = self._out.get(timeout=timeout)
        if item is self._STOP:
            raise RuntimeError("StreamWorker: closed, no more frames.")
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        if self._thread.is_alive():
            self._in.put(self._STOP)
            self._thread.join()

    def __enter__(self) -> "StreamWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["PoseStreamer", "StreamWorker", "StreamStats"]
