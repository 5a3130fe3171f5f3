"""Everything the web demo shares between requests: the pipeline, bundled samples, preset poses, locks, a folder.

One :class:`ServeContext` per server. The pipeline is not safe to call from two threads at once (its captured
graphs and the model's backend cache are shared), so every model call holds :attr:`ServeContext.model_lock`; the
web queue in front of it makes users wait their turn instead of failing. Files (bundled samples written for the
page, generated videos) go only under :attr:`ServeContext.workdir`, a temporary folder the command removes at exit.
"""
from __future__ import annotations

import io
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..fileio import atomic_write_bytes

NUM_PRESETS = 6
PRESET_SEED = 11   # the synthetic benchmark's poses for this seed: front, side and back views (deterministic)


@dataclass(frozen=True)
class Preset:
    """A preset target pose: a name for the page and its keypoints in the model's square frame."""

    name: str
    keypoints: Any   # rpfm.pose.Keypoints


@dataclass
class ServeContext:
    """The loaded pipeline and what the page offers with it.

    Attributes:
        pipe: the :class:`rpfm.RPFMPipeline` (on its device).
        samples: (name, path) of bundled source photos, written into ``workdir`` at start.
        presets: preset target poses, in the model's frame.
        workdir: the temporary folder every file of this server lives in.
        model_name: shown in the page ("the demo model", or the folder given with --model).
    """

    pipe: Any
    workdir: Path
    samples: list[tuple[str, Path]] = field(default_factory=list)
    presets: list[Preset] = field(default_factory=list)
    model_name: str = "model"
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    _estimator: Any = None
    _estimator_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def image_size(self) -> int:
        return self.pipe.config.image_size

    def estimate(self, photo: Any):
        """Pose of the person in ``photo`` (BlazePose, image mode, built on first use) -> Keypoints or None."""
        with self._estimator_lock:   # one MediaPipe graph, one caller at a time
            if self._estimator is None:
                from ..pose.estimate import load_estimator

                self._estimator = load_estimator("blazepose")
            return self._estimator(photo)

    def new_file(self, suffix: str) -> Path:
        """A fresh path under ``workdir/outputs`` (the folder is created on demand)."""
        out = self.workdir / "outputs"
        out.mkdir(parents=True, exist_ok=True)
        return out / f"{uuid.uuid4().hex}{suffix}"

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()
            self._estimator = None


def preset_poses(size: int, count: int = NUM_PRESETS, seed: int = PRESET_SEED) -> list[Preset]:
    """``count`` poses of rpfm's synthetic benchmark (the poses the demo model was trained on), in a size x size
    frame, named by their view."""
    from ..data.synthetic import generate_sample

    presets = []
    for k in range(count):
        _, kp, view = generate_sample(seed, 0, k, size)
        presets.append(Preset(f"{k + 1}: {view}", kp))
    return presets


def write_samples(images: list[tuple[str, Image.Image]], folder: Path) -> list[tuple[str, Path]]:
    """Write the bundled source photos as PNGs into ``folder`` (the page serves files only from its temp folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, image in images:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        path = folder / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        out.append((name, path))
    return out


def load_context(model: str | Path | None, workdir: Path, *, device: str = "cpu") -> ServeContext:
    """The shipped demo release (``model=None``) or a pipeline folder, on ``device``, with samples and presets.

    The demo release brings held-out test people as samples; any other model gets people drawn by the synthetic
    benchmark at its image size.
    """
    from ..demo import load_release
    from ..pipeline import RPFMPipeline

    if model is None:
        pipe, pairs = load_release()
        images = [(f"sample-{name}", source) for name, source, _, _ in pairs]
        name = "the demo model shipped with rpfm"
    else:
        pipe, images, name = RPFMPipeline.from_pretrained(model), [], f"model {model}"
    pipe.to(device)
    size = pipe.config.image_size
    if not images:
        from ..data.synthetic import generate_sample

        images = [(f"sample-{i}", Image.fromarray(generate_sample(PRESET_SEED, 1000 + i, 0, size)[0]))
                  for i in range(4)]
    images = [(n, im if im.size == (size, size) else im.resize((size, size), Image.LANCZOS)) for n, im in images]
    return ServeContext(pipe=pipe, workdir=workdir, samples=write_samples(images, workdir / "samples"),
                        presets=preset_poses(size), model_name=name)


__all__ = ["ServeContext", "Preset", "preset_poses", "write_samples", "load_context"]
