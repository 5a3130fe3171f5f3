"""Training output: JSONL log, progress bar, optional TensorBoard, and sample grids (rank 0 only).

``out_dir/log.jsonl`` holds one JSON object per logged step::

    {"step": 120, "loss": 0.4123, "lr": 0.0001, "grad_norm": 0.87, "steps_per_s": 5.2, "epoch": 3,
     "time": 1718000000.0}

Each line is written with a single ``write`` on an O_APPEND descriptor, so a reader never sees half a line from a
live run; a line cut by a crash is skipped by :func:`read_log`. On resume the log is rewritten (atomically) without
the steps after the checkpoint, so it always holds one trajectory.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import atomic_write_bytes
from .schedule import apply_lr

logger = logging.getLogger("rpfm.train")
LOG_NAME = "log.jsonl"


# ---------------------------------------------------------------------------------------------------- JSONL
def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a JSONL log (a truncated last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Keep only the records with ``step <= step`` (rewritten atomically)."""
    path = Path(path)
    if path.is_file():
        kept = [r for r in read_log(path) if isinstance(r.get("step"), int) and r["step"] <= step]
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


class JsonlLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------- progress
def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """A tqdm bar (loss, steps/s, ETA) when tqdm imports, else one plain line per ``every`` steps on stderr."""

    def __init__(self, total: int, initial: int, *, enabled: bool, every: int):
        self.total, self.every, self.enabled = total, every, enabled
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                                file=sys.stderr)

    def update(self, step: int, loss: float, steps_per_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif step % self.every == 0 or step == self.total:
            eta = (self.total - step) / steps_per_s if steps_per_s > 0 else math.inf
            print(f"step {step}/{self.total}  loss {loss:.4f}  {steps_per_s:.2f} steps/s  ETA {_fmt_eta(eta)}",
                  file=sys.stderr, flush=True)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------- tensorboard
def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``; raises with the install hint when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError(f"tensorboard: true needs the tensorboard package ({e}). Install it (pip install "
                         f"tensorboard) or set \"tensorboard\": false.") from e
    return SummaryWriter


def tensorboard_writer(log_dir: str | os.PathLike):
    return require_tensorboard()(log_dir=str(log_dir))


class TrainLog:
    """What the trainer reports each step: JSONL every ``log_every`` steps, the progress bar, TensorBoard."""

    def __init__(self, out_dir: Path, *, total: int, initial: int, log_every: int, progress: bool,
                 tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.log_every = log_every
        self.jsonl = JsonlLog(out_dir / LOG_NAME) if enabled else None
        self.progress = Progress(total, initial, enabled=enabled and progress, every=log_every)
        self.tb = tensorboard_writer(out_dir / "tensorboard") if (enabled and tensorboard) else None
        self._t = time.perf_counter()
        self._last_step = initial
        self._rate = 0.0
        self._smooth: float | None = None

    def step(self, step: int, *, loss: float, lr: float, grad_norm: float, epoch: int) -> None:
        if not self.enabled:
            return
        self._smooth = loss if self._smooth is None else 0.9 * self._smooth + 0.1 * loss
        now = time.perf_counter()
        if step % self.log_every == 0 or step == self.progress.total:
            self._rate = (step - self._last_step) / max(now - self._t, 1e-9)
            self._t, self._last_step = now, step
            self.jsonl.append({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                               "steps_per_s": self._rate, "epoch": epoch, "time": time.time()})
            if self.tb is not None:
                self.tb.add_scalar("train/loss", loss, step)
                self.tb.add_scalar("train/lr", lr, step)
                self.tb.add_scalar("train/grad_norm", grad_norm, step)
                self.tb.add_scalar("train/steps_per_s", self._rate, step)
        self.progress.update(step, self._smooth, self._rate)

    def message(self, text: str) -> None:
        if self.enabled:
            self.progress.write(text)
        logger.info(text)

    def close(self) -> None:
        self.progress.close()
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------------- loop
def run_steps(trainer, log: TrainLog, batches, *, steps: int, sample_every: int, ckpt_every: int,
              samples: bool = True) -> float | None:
    """The loop both trainers share: ``trainer.train_step(batches)`` until ``steps``, logging every step, sample
    grids every ``sample_every`` steps (when ``samples``), a checkpoint every ``ckpt_every`` steps and at the last.
    Returns the last loss (None if no step ran); closes ``batches`` and ``log``."""
    loss = None
    if trainer.step >= steps:
        log.message(f"already at step {trainer.step} >= steps={steps}; nothing to do.")
    try:
        while trainer.step < steps:
            apply_lr(trainer.optimizer, trainer.cfg, trainer.step)
            loss, grad_norm = trainer.train_step(batches)
            trainer.step += 1
            log.step(trainer.step, loss=loss, lr=trainer.optimizer.param_groups[0]["lr"], grad_norm=grad_norm,
                     epoch=(trainer.consumed - 1) // trainer.batches_per_epoch)
            if samples and sample_every and trainer.step % sample_every == 0:
                trainer.save_samples()
            if trainer.step % ckpt_every == 0 or trainer.step == steps:
                trainer.save_checkpoint()
    finally:
        batches.close()
        log.close()
    return loss


# ---------------------------------------------------------------------------------------------------- samples
def sample_grid(source: Tensor, pose: Tensor, generated: Tensor, target: Tensor):
    """One row per sample: source | target pose | generated | ground truth, as a PIL image.

    source, target: (B, 3, H, W) in [-1, 1]; pose, generated: (B, 3, H, W) in [0, 1].
    """
    from PIL import Image

    panels = [(source + 1) / 2, pose, generated, (target + 1) / 2]
    rows = torch.cat([p.float().cpu().clamp(0, 1) for p in panels], dim=3)                      # (B, 3, H, 4W)
    grid = torch.cat(list(rows), dim=1)                                                          # (3, B*H, 4W)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)


def save_png(image, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
