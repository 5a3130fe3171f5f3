"""Fused Triton kernels for inference (forward only). Ships in the wheel as ``rpfm.kernels``.

Each launcher has the signature of its eager twin in :mod:`rpfm.ops.reference` and is tested against it
(``tests/kernels``). Nothing here is imported by ``import rpfm``: the backends in :mod:`rpfm.ops.triton` load these
modules on first use, so ``TRITON_INTERPRET`` (read by ``@triton.jit`` at decoration time) can still be set first.

``HAS_TRITON`` / ``TRITON_REASON`` say whether triton imports; this module imports nothing else.
"""
from __future__ import annotations

try:
    import triton as _triton
except (ImportError, OSError, RuntimeError) as _e:  # an installed but broken triton raises the latter two
    HAS_TRITON = False
    TRITON_REASON = f"triton not importable ({type(_e).__name__}: {_e})"
else:
    HAS_TRITON = True
    TRITON_REASON = f"triton {_triton.__version__}"

__all__ = ["HAS_TRITON", "TRITON_REASON"]
