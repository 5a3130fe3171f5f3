"""rpfm: real-time pose-guided person image synthesis with flow matching (RPFM).

Public API: :class:`RPFMPipeline`, :class:`RPFMOutput`, :class:`RPFMConfig`, :data:`PRESETS`, :class:`RPFM`,
:func:`env_report`. Everything else is importable but not part of the stable surface.

The pipeline (which pulls in diffusers and transformers) is imported lazily, so ``import rpfm`` stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .config import PRESETS, RPFMConfig
from .envreport import env_report
from .model import RPFM

__all__ = ["RPFMPipeline", "RPFMOutput", "RPFMConfig", "PRESETS", "RPFM", "env_report", "__version__"]


def __getattr__(name: str):
    if name in ("RPFMPipeline", "RPFMOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'rpfm' has no attribute {name!r}")
