"""Shared fixtures. Tests never reach a model hub; everything is built in code from tiny configs."""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

# Triton reads TRITON_INTERPRET when it is first imported; set it before anything does, so the kernel parity tests
# run on CPU tensors through the interpreter (fp32/fp16 only: it computes bf16 wrongly).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rpfm import _ext  # noqa: E402
from rpfm.config import tiny_config  # noqa: E402
from rpfm.model import RPFM  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Overwrite every trainable parameter with seeded noise (adaLN-Zero init makes a fresh model output 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture
def tiny_model() -> RPFM:
    return randomize(RPFM(tiny_config())).eval()


def tiny_inputs(cfg, batch: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    h = cfg.latent_size
    lat = lambda: torch.randn(batch, cfg.latent_channels, h, h, generator=g)  # noqa: E731
    return dict(x=lat(), t=torch.rand(batch, generator=g), z_s=lat(), z_p=lat(),
                f_pose=torch.randn(batch, cfg.num_global_tokens, cfg.pose_feature_dim, generator=g),
                f_src=torch.randn(batch, cfg.num_global_tokens, cfg.source_feature_dim, generator=g))


# ---------------------------------------------------------------------------------------------------- markers
_skip_no_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason=f"rpfm._C unavailable: {_ext.EXT_REASON}")
_skip_no_cuda = pytest.mark.skipif(not (_ext.has_cuda() and torch.cuda.is_available()),
                                   reason="needs a CUDA device and rpfm._C built with CUDA")


def requires_ext(test):
    """Marked `ext`; skipped with the reason when rpfm._C is unavailable."""
    return pytest.mark.ext(_skip_no_ext(test))


def requires_cuda(test):
    """Marked `ext` and `cuda`; skipped unless a GPU and a CUDA build of rpfm._C are present."""
    return pytest.mark.cuda(requires_ext(_skip_no_cuda(test)))


def run_python(code: str, env: dict | None = None, **kwargs) -> str:
    """Run ``python -c code`` in a fresh interpreter of this environment (``env`` on top of os.environ) and return
    its stdout; a non-zero exit fails the test with the child's stderr."""
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True,
                         text=True, timeout=120, **kwargs)
    assert res.returncode == 0, res.stderr
    return res.stdout


def truncate(path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its size (a download or copy that stopped half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@contextlib.contextmanager
def hold_lock(path):
    """Hold the advisory lock a live rpfm writer holds on its temporary (as a running process would)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
