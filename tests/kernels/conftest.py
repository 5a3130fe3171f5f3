"""Kernel parity tests: fused Triton kernels vs the eager reference (rpfm.ops.reference).

Without CUDA the kernels run in Triton's interpreter on CPU tensors. triton 3.x reads ``TRITON_INTERPRET`` when
``@triton.jit`` decorates a function, and triton.language's own jitted helpers (``tl.sum``...) are decorated when
triton is first imported, so the variable is set here, before anything imports triton (``import rpfm`` does not).
If triton was imported earlier in the session the kernel tests skip, saying so. The interpreter is ~1000x slower
than eager (keep CPU shapes small) and gets bf16 arithmetic wrong, so bf16 cases run on CUDA only.
"""
from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
TOO_LATE = None
if not CUDA:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        TOO_LATE = ("triton was imported before tests/kernels/conftest.py could set TRITON_INTERPRET=1, so its kernels "
                    "cannot run on CPU; run `TRITON_INTERPRET=1 pytest ...` or tests/kernels in its own process")
    os.environ["TRITON_INTERPRET"] = "1"

from rpfm.ops.triton import _load_kernels  # noqa: E402  (imports neither triton nor any kernel)

KERNEL_MODULES = ("adaln", "gated_residual", "patchify", "gelu")


@pytest.fixture(scope="session")
def kernels():
    """The ``rpfm.kernels`` package with every kernel module imported (``kernels.adaln.adaln_modulate_triton``)."""
    pytest.importorskip("triton", reason="triton is not installed: pip install 'rpfm[triton]'")
    if TOO_LATE:
        pytest.skip(TOO_LATE)
    package = _load_kernels()
    for name in KERNEL_MODULES:
        importlib.import_module(f"rpfm.kernels.{name}")
    return package


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def _skip_unsupported(request):
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if not CUDA and params.get("dtype") is torch.bfloat16:
        pytest.skip("bf16 runs on CUDA only: the Triton interpreter computes bf16 wrongly")
    if not CUDA and request.node.get_closest_marker("cuda"):
        pytest.skip("needs a CUDA device (on CPU the Triton interpreter runs small shapes only)")
