"""Data sets. ``rpfm.data.synthetic`` generates the synthetic pose-transfer benchmark (CFLD/GFLA layout)."""
from __future__ import annotations

from .synthetic import generate_synthetic

__all__ = ["generate_synthetic"]
