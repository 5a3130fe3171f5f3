"""GPU microbenchmarks of the fused kernels against the eager reference and torch.compile of it (CUDA only).

Run:  pytest bench/                 (every bench_*.py; this conftest makes pytest collect them)
      pytest bench/bench_adaln.py --benchmark-columns=median,iqr,ops
Shapes come from rpfm.config.PRESETS: B = 16 (the CFG-doubled batch of 8 images), T = cfg.num_tokens,
D = cfg.hidden_size. Inputs are bf16. Each timed callable ends with torch.cuda.synchronize(); warm-up rounds absorb
Triton compilation and torch.compile. Each result records in ``extra_info`` GB/s = (bytes read + bytes written) /
median time (host launch included), and ``GB/s_device`` from the GPU time of calls replayed in a CUDA graph.
Without CUDA every benchmark is skipped with the reason.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

import pytest
import torch

from rpfm.config import PRESETS, RPFMConfig

# RPFM_BENCH_PRESETS=RPFM-B/2,RPFM-XL/2 narrows the sweep (e.g. to fit a short GPU lease).
PRESET_NAMES = tuple(p for p in os.environ.get("RPFM_BENCH_PRESETS", "RPFM-S/2,RPFM-B/2,RPFM-L/2,RPFM-XL/2")
                     .split(",") if p)
PROVIDERS = ("eager", "compiled", "triton")
BATCH = 16                 # 8 images, doubled for classifier-free guidance
DTYPE = torch.bfloat16
ROUNDS, WARMUP_ROUNDS = 100, 10


def pytest_collect_file(parent, file_path):
    """Collect bench_*.py as test modules (the default pattern is test_*.py, and testpaths excludes bench/). A file
    named on the command line is already collected by pytest itself."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc):
    if "preset" in metafunc.fixturenames:
        metafunc.parametrize("preset", PRESET_NAMES)
    if "provider" in metafunc.fixturenames:
        metafunc.parametrize("provider", PROVIDERS)


@pytest.fixture(autouse=True)
def _cuda_only():
    if not torch.cuda.is_available():
        pytest.skip("benchmarks need a CUDA device (the Triton kernels and the timings are GPU-only)")


@pytest.fixture
def batch() -> int:
    return BATCH


@pytest.fixture
def cfg(preset) -> RPFMConfig:
    return PRESETS[preset]


@pytest.fixture
def randn() -> Callable[..., torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    return lambda *shape: torch.randn(*shape, generator=gen, device="cuda", dtype=DTYPE)


@pytest.fixture
def impl(provider) -> Callable[[Callable, str, str], Callable]:
    """``impl(reference, module, name)``: what ``provider`` times: the reference itself (eager; upcast=False by
    default), torch.compile of the reference, or the Triton launcher ``rpfm.kernels.<module>.<name>``."""

    def get(reference: Callable, module: str, name: str) -> Callable:
        if provider == "eager":
            return reference
        if provider == "compiled":
            return torch.compile(reference, dynamic=False)
        pytest.importorskip("triton", reason="triton is not installed: pip install 'rpfm[triton]'")
        from rpfm.ops.triton import _load_kernels

        _load_kernels()
        return getattr(importlib.import_module(f"rpfm.kernels.{module}"), name)

    return get


def _nbytes(*objs) -> int:
    return sum(_nbytes(*o) if isinstance(o, (tuple, list)) else o.numel() * o.element_size()
               for o in objs if isinstance(o, (torch.Tensor, tuple, list)))


def device_time(fn: Callable, args: tuple, kwargs: dict, *, reps: int = 20, replays: int = 10) -> tuple[float, str]:
    """(seconds per call, how): GPU time of ``reps`` calls captured in one CUDA graph and replayed, which removes the
    host launch cost (the sampler runs captured too; inputs stay L2-warm across calls). Falls back to CUDA events
    around eager back-to-back launches, which on a fast GPU mostly measures the host, if capture fails."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                       # warm-up off the default stream, as capture requires
        for _ in range(3):
            fn(*args, **kwargs)
    torch.cuda.current_stream().wait_stream(side)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(reps):
                fn(*args, **kwargs)
        how, launch, calls = "cuda-graph", graph.replay, reps * replays
    except RuntimeError:
        how, launch, calls = "eager-launches", (lambda: fn(*args, **kwargs)), reps * replays
        replays = calls
    launch()
    torch.cuda.synchronize()
    start.record()
    for _ in range(replays):
        launch()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / calls, how


@pytest.fixture
def run_bench(benchmark):
    """``run_bench(fn, args, kwargs, group=...)``: time ``fn(*args, **kwargs)`` with a device sync inside the timed
    callable; bytes moved = every tensor in args (read) + every tensor returned (written)."""

    def run(fn: Callable, args: tuple, kwargs: dict, *, group: str) -> None:
        def synced():
            out = fn(*args, **kwargs)
            torch.cuda.synchronize()
            return out

        benchmark.group = group
        out = benchmark.pedantic(synced, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
        moved = _nbytes(args, out)
        benchmark.extra_info["bytes"] = moved
        if benchmark.stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["GB/s"] = round(moved / benchmark.stats.stats.median / 1e9, 1)
        device_s, how = device_time(fn, args, kwargs)
        benchmark.extra_info["device_us"] = round(device_s * 1e6, 2)
        benchmark.extra_info["GB/s_device"] = round(moved / device_s / 1e9, 1)
        benchmark.extra_info["device_timing"] = how

    return run


def random_model(cfg: RPFMConfig):
    """An RPFM of ``cfg`` on CUDA in bf16 with N(0, 0.02) weights (adaLN-Zero init would output zeros)."""
    from rpfm.model import RPFM

    torch.manual_seed(0)
    model = RPFM(cfg).to("cuda", DTYPE).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    return model
