"""Data sets. ``rpfm.data.synthetic`` generates the synthetic pose-transfer benchmark (CFLD/GFLA layout);
``open_dataset(root, split, image_size)`` opens a pair dataset in the CFLD/GFLA folder layout or the PIDM/X-MDPT
LMDB layout (``rpfm.data.layouts``); ``rpfm.data.lmdb_convert`` converts the former into the latter."""
from __future__ import annotations

from .layouts import detect_layout, open_dataset
from .synthetic import generate_synthetic

__all__ = ["detect_layout", "generate_synthetic", "open_dataset"]
