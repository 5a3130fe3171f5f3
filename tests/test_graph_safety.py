"""The graph sampler's first-run safety (issue 13): inference mode, fallback after a failing capture, a bounded
cache, recapture on a backend change, concurrent calls, thread-local capture, single-step warm-up, and the run-time
architecture check. Each test failed before its fix; all run on CPU (the C++ loop is the graph path there)."""
from __future__ import annotations

import logging
import threading

import pytest
import torch

from rpfm import RPFMPipeline, _ext
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.graph_sampler import GraphSamplerCache
from rpfm.hoisted import HoistedVelocity
from rpfm.integrators import GraphEulerCFG
from rpfm.model import RPFM
from rpfm.ops import use_backend

from .conftest import randomize, requires_ext


def _pipe() -> RPFMPipeline:
    return RPFMPipeline(randomize(RPFM(demo_config()), std=0.03), PixelCodec(downsample=4))


def _inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1, torch.rand(batch, 3, 64, 64, generator=g)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


KW = dict(num_steps=2, guidance_scale=1.1, output_type="latent")


# ---------------------------------------------------------------------------------------------------- inference mode
@requires_ext
def test_first_call_inside_inference_mode_does_not_poison_later_calls():
    pipe = _pipe()
    src, pose = _inputs(1)
    with torch.inference_mode():
        first = pipe(src, pose, sampler_backend="graph", generator=_gen(), **KW).images
    again = pipe(src, pose, sampler_backend="graph", generator=_gen(), **KW).images   # raised before the fix
    torch.testing.assert_close(again, first)
    eager = pipe(src, pose, sampler_backend="eager", generator=_gen(), **KW).images
    torch.testing.assert_close(again, eager, rtol=1e-5, atol=1e-5)


@requires_ext
def test_integrator_built_inside_inference_mode_runs_outside_it():
    field = lambda x, t: -x  # noqa: E731
    with torch.inference_mode():
        g = GraphEulerCFG(field, batch_size=2, latent_shape=(3, 4, 4), num_steps=3, guidance_scale=1.0)
        g(torch.ones(2, 3, 4, 4))
    torch.testing.assert_close(g(torch.ones(2, 3, 4, 4)), torch.full((2, 3, 4, 4), (4 / 3) ** 3))


# ---------------------------------------------------------------------------------------------------- fallback
@requires_ext
def test_auto_falls_back_to_eager_once_with_one_logged_reason(monkeypatch, caplog):
    pipe = _pipe()
    monkeypatch.setattr(pipe, "_auto_graph", lambda: True)          # let "auto" take the graph path on CPU
    calls = []

    def not_capturable(self, x_in, k):                               # a velocity that fails only when captured
        calls.append(k)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(HoistedVelocity, "__call__", not_capturable)
    src, pose = _inputs(1)
    eager = pipe(src, pose, sampler_backend="eager", generator=_gen(), **KW).images
    with caplog.at_level(logging.WARNING, logger="rpfm"):
        outs = [pipe(src, pose, generator=_gen(), **KW) for _ in range(3)]
    assert len(calls) == 1                                           # tried once, never retried
    assert [o.backends["sampler"] for o in outs] == ["eager-euler"] * 3
    for o in outs:
        torch.testing.assert_close(o.images, eager)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "operation not permitted when stream is capturing" in warnings[0]
    with pytest.raises(RuntimeError, match="stream is capturing"):   # an explicit request re-raises
        pipe(src, pose, sampler_backend="graph", generator=_gen(), **KW)


# ---------------------------------------------------------------------------------------------------- cache
@requires_ext
def test_graph_cache_is_bounded_and_evicts_the_least_recently_used():
    pipe = _pipe()
    pipe._graphs = GraphSamplerCache(max_size=2)
    src, pose = _inputs(1)

    def run(steps):
        pipe(src, pose, sampler_backend="graph", num_steps=steps, guidance_scale=1.1, output_type="latent")

    for steps in (1, 2, 3):
        run(steps)
    assert len(pipe._graphs) == 2
    assert sorted(k[3] for k in pipe._graphs._samplers) == [2, 3]
    run(2)                                                           # 2 is now the most recent
    run(4)
    assert sorted(k[3] for k in pipe._graphs._samplers) == [2, 4]


def test_graph_cache_size_from_env(monkeypatch):
    monkeypatch.setenv("RPFM_GRAPH_CACHE_SIZE", "7")
    assert GraphSamplerCache().max_size == 7
    monkeypatch.setenv("RPFM_GRAPH_CACHE_SIZE", "0")
    with pytest.raises(ValueError, match="RPFM_GRAPH_CACHE_SIZE: expected an int >= 1, got 0"):
        GraphSamplerCache()
    with pytest.raises(ValueError, match="max_size"):
        GraphSamplerCache(max_size=0)


# ---------------------------------------------------------------------------------------------------- backends
@requires_ext
def test_backend_change_behind_the_pipelines_back_recaptures():
    pipe = _pipe()
    src, pose = _inputs(1)
    pipe(src, pose, sampler_backend="graph", generator=_gen(), **KW)
    (first,) = pipe._graphs._samplers.values()
    pipe.model.set_backends(attention="math")                        # on the model, not through the pipeline
    out = pipe(src, pose, sampler_backend="graph", generator=_gen(), **KW)
    (second,) = pipe._graphs._samplers.values()
    assert second is not first
    assert second.backends["attention"] == out.backends["attention"] == "math"
    pipe.model.set_backends()
    with use_backend("*", "eager"):
        pipe.model.reset_backends()
        out = pipe(src, pose, sampler_backend="graph", generator=_gen(), **KW)
    (third,) = pipe._graphs._samplers.values()
    assert third is not second and third.backends == {k: v for k, v in out.backends.items() if k != "sampler"}


# ---------------------------------------------------------------------------------------------------- threads
@requires_ext
def test_concurrent_calls_on_one_sampler_give_each_callers_result():
    pipe = _pipe()
    inputs = [_inputs(1, seed=s) for s in range(3)]
    kw = dict(num_steps=4, guidance_scale=1.3, output_type="latent")
    refs = [pipe(s, p, sampler_backend="eager", generator=_gen(i), **kw).images for i, (s, p) in enumerate(inputs)]
    pipe(*inputs[0], sampler_backend="graph", generator=_gen(0), **kw)          # one shared sampler
    errors = []

    def worker(i):
        try:
            for _ in range(4):
                got = pipe(*inputs[i], sampler_backend="graph", generator=_gen(i), **kw).images
                torch.testing.assert_close(got, refs[i], rtol=1e-5, atol=1e-5)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(pipe._graphs) == 1


# ---------------------------------------------------------------------------------------------------- capture
@requires_ext
def test_capture_is_thread_local_and_state_fp32():
    info = _ext.build_info()
    assert info["capture_mode"] == "thread_local"
    assert info["state_dtype"] == "float32"


@requires_ext
@pytest.mark.parametrize("solver, per_step", [("euler", 1), ("heun", 2)])
def test_warm_up_is_single_steps_not_whole_loops(solver, per_step):
    calls = []

    def field(x, t):
        calls.append(1)
        return -x

    g = GraphEulerCFG(field, batch_size=1, latent_shape=(2, 2, 2), num_steps=30, guidance_scale=1.0, solver=solver)
    g._graph.warm_up()
    assert len(calls) == 2 * per_step == g._graph.warmup_steps * per_step


# ---------------------------------------------------------------------------------------------------- archs
@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)])
def test_default_archs_cover_a100_l4_h100_b200_and_newer(capability):
    assert _ext.arch_unsupported(capability, "80,86,89,90,100+PTX") is None


@pytest.mark.parametrize("capability, archs", [((8, 0), "90"), ((10, 0), "90"), ((7, 5), "80,86,89,90,100+PTX"),
                                               ((10, 0), "90a"), ((8, 6), "89")])
def test_uncovered_gpu_is_refused_with_the_rebuild_command(capability, archs):
    why = _ext.arch_unsupported(capability, archs)
    assert why is not None and f"{capability[0]}.{capability[1]}" in why
    assert f'RPFM_CUDA_ARCHS="{capability[0]}{capability[1]}"' in why
