"""The learning-rate schedule both trainers share: constant (spec §6), or constant then a cosine tail.

``lr_decay_start``: None keeps ``lr`` for the whole run (the paper's recipe). A fraction f in [0, 1) keeps ``lr``
for the first f * steps optimizer steps, then follows a half cosine down to ``lr * lr_min_ratio`` at ``steps``.
A short run gains most of its final quality in such a tail (small codecs and demo models trained on a CPU budget).
The value depends only on the step, so ``--resume`` continues the schedule exactly.
"""
from __future__ import annotations

import math
from typing import Any, Callable


def lr_at(step: int, *, lr: float, steps: int, decay_start: float | None, min_ratio: float = 0.0) -> float:
    """The learning rate for optimizer step ``step`` (0-based: the update that takes the model to step + 1)."""
    if decay_start is None:
        return lr
    begin = decay_start * steps
    if step < begin:
        return lr
    progress = min(1.0, (step - begin) / max(steps - begin, 1.0))           # 0 at the tail's start, 1 at the end
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def apply_lr(optimizer, cfg: Any, step: int) -> float:
    """Set every parameter group's lr for ``step`` from ``cfg`` (lr, steps, lr_decay_start, lr_min_ratio)."""
    value = lr_at(step, lr=cfg.lr, steps=cfg.steps, decay_start=cfg.lr_decay_start, min_ratio=cfg.lr_min_ratio)
    for group in optimizer.param_groups:
        group["lr"] = value
    return value


def check_schedule(cfg: Any, fail: Callable[[str, str, Any], None]) -> None:
    """Validate ``lr_decay_start`` / ``lr_min_ratio``; ``fail(name, expected, got)`` raises the config's error."""
    start = cfg.lr_decay_start
    if start is not None and (isinstance(start, bool) or not isinstance(start, (int, float))
                              or not math.isfinite(start) or not 0 <= start < 1):
        fail("lr_decay_start", "null (constant lr) or a fraction of the steps in [0, 1), e.g. 0.7", start)
    ratio = cfg.lr_min_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or not 0 <= ratio <= 1:
        fail("lr_min_ratio", "a number in [0, 1] (the final lr as a fraction of lr)", ratio)
