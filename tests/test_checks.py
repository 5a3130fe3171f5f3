"""Deferred input validation (rpfm.checks): the same verdicts and messages as the immediate checks, read only when
resolved, and in the pipeline only after the sampler has been queued. On CPU the deferred path is forced with
``Checks(defer_cpu=True)``; the CUDA test (no host sync at all) skips without a GPU."""
import functools

import numpy as np
import pytest
import torch

from rpfm import RPFMPipeline
from rpfm import pipeline as pipeline_mod
from rpfm.checks import Checks, DeferredCheck
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.images import to_image_tensor, to_output
from rpfm.model import RPFM
from rpfm.noise import initial_noise

from .conftest import randomize

NAN, INF = float("nan"), float("inf")


def _message(fn):
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


def _bad(value, range_="[0,1]"):
    x = torch.rand(2, 3, 8, 8) * (2 if range_ == "[-1,1]" else 1) - (1 if range_ == "[-1,1]" else 0)
    x[1, 2, 3, 4] = value
    return x


@pytest.fixture
def pipe():
    p = RPFMPipeline(randomize(RPFM(demo_config()), std=0.03), PixelCodec(downsample=4))
    p.set_progress_bar_config(disable=True)
    return p


# ---------------------------------------------------------------------------------------------------- the object
def test_deferred_check_reads_nothing_until_resolved():
    verdicts = []

    def judge(low, high):
        verdicts.append((low, high))
        if high > 1:
            raise ValueError("too big")

    good = DeferredCheck(torch.tensor([0.25, -0.5, 1.0]), judge)
    bad = DeferredCheck(torch.tensor([0.0, 3.0]), judge)
    assert verdicts == [] and not good.resolved and not bad.resolved
    good.resolve()
    good.resolve()                                        # judged once
    assert verdicts == [(-0.5, 1.0)] and good.resolved
    for _ in range(2):                                    # a bad verdict is raised again, never forgotten
        with pytest.raises(ValueError, match="too big"):
            bad.resolve()
    assert not bad.resolved


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_statistics_tell_non_finite_values(value):
    seen = []
    DeferredCheck(_bad(value), lambda lo, hi: seen.append((lo, hi))).resolve()
    (low, high), = seen
    assert not (np.isfinite(low) and np.isfinite(high))


def test_checks_defer_device_tensors_and_cpu_only_when_asked():
    x = torch.zeros(3)
    assert not Checks().defers(x) and Checks(defer_cpu=True).defers(x)
    assert Checks().defers(torch.zeros(3, device="meta"))


# ---------------------------------------------------------------------------------------------------- same messages
@pytest.mark.parametrize("bad, value_range", [
    (_bad(NAN), "[0,1]"), (_bad(INF), "[0,1]"), (_bad(-INF, "[-1,1]"), "[-1,1]"),
    (torch.full((1, 3, 8, 8), 255.0), "[0,1]"), (torch.full((1, 3, 8, 8), 255.0), "[-1,1]"),
    (torch.full((1, 3, 8, 8), -1.0), "[0,1]"), (_bad(1.5, "[-1,1]"), "[-1,1]"),
])
def test_deferred_image_check_raises_the_immediate_message(bad, value_range):
    now = _message(lambda: to_image_tensor(bad, name="pose", value_range=value_range))
    checks = Checks(defer_cpu=True)
    x = to_image_tensor(bad, name="pose", value_range=value_range, checks=checks)    # no error yet
    assert torch.equal(x, bad) or x.isnan().any()
    assert len(checks) == 1
    assert _message(checks.resolve) == now


def test_deferred_checks_pass_good_inputs_and_report_the_first_bad_one():
    checks = Checks(defer_cpu=True)
    to_image_tensor([torch.rand(3, 8, 8), torch.rand(3, 8, 8)], name="pose", value_range="[0,1]", checks=checks)
    assert len(checks) == 2
    checks.resolve()
    assert len(checks) == 0
    to_image_tensor(torch.rand(1, 3, 8, 8) * 2 - 1, name="source_image", checks=checks)
    to_image_tensor(_bad(NAN), name="target_pose", value_range="[0,1]", checks=checks)
    initial_noise(2, (3, 4, 4), latents=torch.full((2, 3, 4, 4), NAN), checks=checks)
    with pytest.raises(ValueError, match=r"^target_pose: contains NaN"):
        checks.resolve()


def test_deferred_latents_and_decoded_checks_raise_the_immediate_message():
    latents = torch.randn(1, 3, 4, 4)
    latents[0, 0, 0, 0] = INF
    now = _message(lambda: initial_noise(1, (3, 4, 4), latents=latents))
    checks = Checks(defer_cpu=True)
    x = initial_noise(1, (3, 4, 4), latents=latents, checks=checks)
    assert torch.equal(x, latents)
    assert _message(checks.resolve) == now

    images = torch.zeros(1, 3, 4, 4)
    images[0, 1, 2, 3] = NAN
    now = _message(lambda: to_output(images, "pt"))
    checks = Checks(defer_cpu=True)
    out = to_output(images, "pt", checks=checks)              # "pt": the caller resolves
    assert out.shape == (1, 3, 4, 4)
    assert _message(checks.resolve) == now
    for output_type in ("pil", "np"):                          # host outputs: resolved inside, before the uint8 cast
        assert _message(lambda: to_output(images, output_type, checks=Checks(defer_cpu=True))) == now


# ---------------------------------------------------------------------------------------------------- the pipeline
def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 3, 64, 64, generator=g)


def _defer_in_pipeline(monkeypatch):
    monkeypatch.setattr(pipeline_mod, "Checks", functools.partial(Checks, defer_cpu=True))


@pytest.mark.parametrize("output_type", ["pt", "np", "latent"])
def test_pipeline_deferred_path_gives_the_same_images_and_errors(pipe, monkeypatch, output_type):
    src, pose = _inputs()
    kw = dict(num_steps=2, generator=torch.Generator().manual_seed(3), output_type=output_type)
    ref = pipe(src, pose, **kw).images
    bad_src = src.clone()
    bad_src[0, 0, 5, 5] = NAN
    now = _message(lambda: pipe(bad_src, pose, **kw))
    bad_pose = pose * 255
    now_pose = _message(lambda: pipe(src, bad_pose, **kw))

    _defer_in_pipeline(monkeypatch)
    out = pipe(src, pose, **{**kw, "generator": torch.Generator().manual_seed(3)}).images
    (np.testing.assert_array_equal if output_type == "np" else torch.testing.assert_close)(out, ref)
    sampled = []
    sample = pipe._sample
    monkeypatch.setattr(pipe, "_sample", lambda *a, **k: sampled.append(1) or sample(*a, **k))
    assert _message(lambda: pipe(bad_src, pose, **kw)) == now
    assert _message(lambda: pipe(src, bad_pose, **kw)) == now_pose
    assert sampled == [1, 1]                               # the bad inputs were caught after sampling was queued


_READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "cpu", "numpy")


def _record_tensor_reads(monkeypatch, pipe):
    """Log every host read of a tensor value (and every .cpu()) made by the pipeline, and when it samples."""
    log = []
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _name=name, _original=original, **kwargs):
            log.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    sample = pipe._sample
    monkeypatch.setattr(pipe, "_sample", lambda *a, **k: log.append("sample") or sample(*a, **k))
    return log


def test_deferred_path_reads_no_tensor_value_before_the_sampler_is_queued(pipe, monkeypatch):
    src, pose = _inputs()
    kw = dict(num_steps=2, output_type="pt", latents=torch.randn(1, 48, 16, 16))
    log = _record_tensor_reads(monkeypatch, pipe)
    pipe(src, pose, **kw)
    assert log.index("sample") > 0                         # the immediate checks read values first (the monitor works)
    log.clear()
    _defer_in_pipeline(monkeypatch)
    pipe(src, pose, **kw)
    assert log[0] == "sample"                              # nothing read before sampling was queued
    assert log[1:] == ["tolist"] * 4                       # source, pose, latents, decoded images: read at the end


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_checks_do_not_synchronize():
    x = torch.rand(2, 3, 8, 8, device="cuda")
    bad = x.clone()
    bad[0, 0, 0, 0] = NAN
    latents = torch.randn(2, 3, 4, 4, device="cuda")
    checks = Checks()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        to_image_tensor(x, name="pose", value_range="[0,1]", checks=checks)
        initial_noise(2, (3, 4, 4), latents=latents, device="cuda", checks=checks)
        to_output(x * 2 - 1, "pt", checks=checks)
        to_image_tensor(bad, name="target_pose", value_range="[0,1]", checks=checks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(checks) == 4
    with pytest.raises(ValueError, match=r"^target_pose: contains NaN or Inf values"):
        checks.resolve()
