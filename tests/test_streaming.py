"""pipe.stream(): cached source work, equality with the pipeline, shared-noise stability, the threaded worker, and
the fixed-batch stages (captured on CUDA, the eager twin on CPU, bitwise the previous per-frame code)."""
import logging
import queue

import numpy as np
import pytest
import torch

from rpfm import RPFMPipeline
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm import streaming
from rpfm.graph_sampler import CapturedStage, EagerStage
from rpfm.images import to_output
from rpfm.model import RPFM, Condition
from rpfm.streaming import StreamWorker

from .conftest import randomize, requires_cuda


@pytest.fixture
def pipe():
    return RPFMPipeline(randomize(RPFM(demo_config()), std=0.03), PixelCodec(downsample=4))


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g)


def test_frame_equals_pipeline_call(pipe):
    src = _images(1, 1) * 2 - 1
    pose = _images(1, 2)
    streamer = pipe.stream(src, num_steps=3, guidance_scale=1.3, generator=torch.Generator().manual_seed(7),
                           output_type="pt")
    frame = streamer(pose)
    ref = pipe(src, pose, num_steps=3, guidance_scale=1.3, generator=torch.Generator().manual_seed(7),
               output_type="pt").images
    torch.testing.assert_close(frame, ref, rtol=1e-6, atol=1e-6)
    assert streamer.stats.frames == 1 and streamer.stats.fps > 0


def test_source_work_happens_once(pipe, monkeypatch):
    calls = []
    encode = pipe.codec.encode
    monkeypatch.setattr(pipe.codec, "encode", lambda x, **kw: calls.append(x.shape[0]) or encode(x, **kw))
    src_calls = []
    source_branches = pipe.model.source_branches
    monkeypatch.setattr(pipe.model, "source_branches",
                        lambda **kw: src_calls.append(1) or source_branches(**kw))
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=2, output_type="latent")
    for i in range(4):
        streamer(_images(1, i))
    assert len(src_calls) == 1
    assert calls == [1] * 5          # the source once, then one pose encode per frame


def test_static_pose_gives_static_frames_and_shared_noise_reduces_flicker(pipe):
    src = _images(1) * 2 - 1
    base = _images(1, 3)
    shared = pipe.stream(src, num_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(shared(base), shared(base))
    fresh = pipe.stream(src, num_steps=3, generator=torch.Generator().manual_seed(0), output_type="np",
                        shared_noise=False)

    def flicker(streamer):
        frames = [streamer((base + 0.01 * k).clamp(0, 1)) for k in range(4)]     # a slowly moving pose
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]))

    assert flicker(shared) < 0.5 * flicker(fresh)


def test_batch_of_poses(pipe):
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=2, output_type="pt",
                           generator=torch.Generator().manual_seed(0))
    frames = streamer(_images(3))
    assert frames.shape == (3, 3, 64, 64)
    one = streamer(_images(3)[1:2])
    torch.testing.assert_close(frames[1:2], one, rtol=1e-5, atol=1e-5)


def test_bad_stream_arguments(pipe):
    with pytest.raises(ValueError, match="one source person"):
        pipe.stream(_images(2) * 2 - 1)
    with pytest.raises(ValueError, match="fixed-step"):
        pipe.stream(_images(1) * 2 - 1, solver="dopri5")
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe.stream(_images(1) * 2 - 1, guidance_scale=float("nan"))
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=1)
    with pytest.raises(ValueError, match="pose"):
        streamer(torch.rand(1, 3, 32, 32))


def test_worker_orders_frames_and_reraises(pipe):
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=1, output_type="latent",
                           generator=torch.Generator().manual_seed(0))
    poses = [_images(1, i) for i in range(3)]
    expected = [streamer(p) for p in poses]
    with StreamWorker(streamer, max_pending=8) as worker:
        for p in poses:
            worker.submit(p)
        got = [worker.get(timeout=30) for _ in poses]
        worker.submit(torch.rand(1, 3, 8, 8))            # bad frame: the error comes back through get()
        with pytest.raises(ValueError, match="pose"):
            worker.get(timeout=30)
        with pytest.raises(queue.Empty):
            worker.get(timeout=0.05)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(poses[0])


def test_worker_drops_oldest_when_full(pipe):
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=8, output_type="latent")   # slower than submitting
    poses = [_images(1, i) for i in range(20)]
    with StreamWorker(streamer, max_pending=1) as worker:
        for p in poses:
            worker.submit(p)
        delivered = 20 - worker.dropped
        frames = [worker.get(timeout=30) for _ in range(delivered)]
    assert worker.dropped > 0 and len(frames) == delivered


def test_a_single_pose_gives_a_single_frame(pipe):
    from PIL import Image

    src = _images(1) * 2 - 1
    pose = _images(1, 3)
    pil = pipe.stream(src, num_steps=2, generator=torch.Generator().manual_seed(0))
    frame = pil(pose[0])                                   # (3, H, W): one pose
    assert isinstance(frame, Image.Image) and frame.size == (64, 64)
    assert isinstance(pil(pose), list) and len(pil(pose)) == 1           # (1, 3, H, W): a batch of one
    pt = pipe.stream(src, num_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    one, batch = pt(pose[0]), pt(pose)
    assert one.shape == (3, 64, 64) and batch.shape == (1, 3, 64, 64)
    torch.testing.assert_close(one, batch[0])
    arr = pipe.stream(src, num_steps=2, output_type="np")(pose[0].permute(1, 2, 0).numpy())
    assert arr.shape == (64, 64, 3)


def test_worker_results_count_the_drops_before_each_frame(pipe):
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=2, output_type="pt")
    worker = StreamWorker(streamer, max_pending=2)
    indices = [worker.submit(_images(1, i)[0]) for i in range(8)]        # faster than the worker can go
    assert indices == list(range(8))
    worker.close()                                                       # lets the queued poses finish
    results = []
    while True:
        try:
            results.append(worker.get_result(timeout=5))
        except RuntimeError:
            break
    assert [r.index for r in results] == sorted(r.index for r in results) and results[-1].index == 7
    assert sum(r.dropped for r in results) + len(results) == 8 == worker.dropped + len(results)
    for prev, r in zip([None] + results[:-1], results):
        assert r.dropped == r.index - (prev.index if prev else -1) - 1
        assert r.frame.shape == (3, 64, 64) and r.latency_s > 0
    with pytest.raises(RuntimeError, match="closed"):
        worker.get(timeout=0.1)                                          # stays closed
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(_images(1)[0])


def test_worker_get_times_out_with_queue_empty(pipe):
    with StreamWorker(pipe.stream(_images(1) * 2 - 1, num_steps=1), max_pending=1) as worker:
        with pytest.raises(queue.Empty):
            worker.get(timeout=0.05)
        with pytest.raises(queue.Empty):
            worker.get_result(timeout=0)


# ---------------------------------------------------------------------------------------------- fixed-batch stages
def _previous_frame(pipe, streamer, pose, output_type):
    """The per-frame code before the stages existed: encode_pose, combine, sample, decode (the reference)."""
    z_p, pose_part = pipe.encode_pose(pose, name="pose")
    cond = pipe.model.combine_condition(streamer.source_part, pose_part, z_s=streamer.z_s, z_p=z_p)
    F = z_p.shape[0]
    x1 = streamer._noise.expand(F, -1, -1, -1).contiguous() if streamer.shared_noise else \
        pipe.prepare_noise(F, streamer.generator)
    x0, _, _ = pipe._sample(cond, x1, num_steps=streamer.num_steps, guidance_scale=streamer.guidance_scale,
                            solver=streamer.solver, sampler_backend=streamer.sampler_backend, atol=0, rtol=0)
    return x0 if output_type == "latent" else to_output(pipe.decode(x0), output_type)


@pytest.mark.parametrize("output_type, shared_noise", [("pt", True), ("np", False), ("latent", True)])
def test_cpu_frames_are_bitwise_the_previous_per_frame_code(pipe, output_type, shared_noise):
    src = _images(1) * 2 - 1
    kw = dict(num_steps=2, guidance_scale=1.3, output_type=output_type, shared_noise=shared_noise)
    streamer = pipe.stream(src, generator=torch.Generator().manual_seed(5), **kw)
    reference = pipe.stream(src, generator=torch.Generator().manual_seed(5), **kw)
    for i in range(3):
        pose = _images(1 + i % 2, 10 + i)                                # batches of 1 and 2
        got = streamer(pose)
        want = _previous_frame(pipe, reference, pose, output_type)
        assert (np.array_equal(got, want) if output_type == "np" else torch.equal(got, want))
    assert streamer.frame_backend == "eager"                            # CPU: the eager twin


def test_eager_stage_is_the_twin_of_the_captured_stage():
    import inspect

    def params(cls):
        return [p for p in inspect.signature(cls).parameters.values() if p.default is inspect.Parameter.empty]

    assert [p.name for p in params(EagerStage)] == [p.name for p in params(CapturedStage)] == ["fn", "example"]
    x = torch.rand(2, 3)
    stage = EagerStage(lambda t: (t * 2, t.sum()), x)
    out = stage(x)
    assert torch.equal(out[0], x * 2) and torch.equal(out[1], x.sum())


class _StaticStage:
    """A CPU stand-in for CapturedStage with the same buffer semantics: a static input copied into, outputs written
    in place into the same storage on every call (so a frame that kept a reference would see the next one)."""

    kind = CapturedStage.kind
    made: list = []

    def __init__(self, fn, example, *, warmup=2):
        self.fn, self.static_in = fn, example.clone()
        self.static_out = fn(self.static_in)
        _StaticStage.made.append(tuple(example.shape))

    def __call__(self, x):
        self.static_in.copy_(x)
        new = self.fn(self.static_in)
        if isinstance(new, Condition):
            self.static_out.y.copy_(new.y)
            if new.ctx is not None:
                self.static_out.ctx.copy_(new.ctx)
        else:
            self.static_out.copy_(new)
        return self.static_out


def _capturing(monkeypatch, streamer, stage=_StaticStage):
    monkeypatch.setattr(streamer, "_capture_unavailable", lambda: None)   # take the CUDA branch on CPU
    monkeypatch.setattr(streaming, "CapturedStage", stage)


@pytest.mark.parametrize("output_type", ["pt", "latent"])
def test_static_stage_buffers_give_the_eager_frames_and_recapture_on_new_batch_or_weights(pipe, monkeypatch,
                                                                                         output_type):
    src = _images(1) * 2 - 1
    kw = dict(num_steps=2, guidance_scale=1.3, output_type=output_type, generator=torch.Generator().manual_seed(0))
    eager = pipe.stream(src, **kw)
    static = pipe.stream(src, **{**kw, "generator": torch.Generator().manual_seed(0)})
    _capturing(monkeypatch, static)
    _StaticStage.made = []
    poses = [_images(1, 20), _images(1, 21), _images(1, 20), _images(2, 22)]
    got = [static(p) for p in poses]
    assert static.frame_backend == "cuda-graph"
    for g, p in zip(got, poses):                       # earlier frames are not overwritten by later replays
        assert torch.equal(g, eager(p))
    expected = [(f, 3, 64, 64) for f in (1, 2)] + [(f, 48, 16, 16) for f in (1, 2) if output_type == "pt"]
    assert sorted(_StaticStage.made) == sorted(expected)            # once per batch size (decode: not for latents)
    made = len(_StaticStage.made)
    static(_images(2, 23))                             # same batch of 2: replayed, not recaptured
    assert len(_StaticStage.made) == made
    with torch.no_grad():
        pipe.model.pos_embed.data = pipe.model.pos_embed.data.clone()   # new storage: the graphs would read freed
    static(_images(2, 23))                                                # memory, so they are recaptured
    assert len(_StaticStage.made) > made


def test_failed_stage_capture_falls_back_once_with_one_logged_reason(pipe, monkeypatch, caplog):
    src, pose = _images(1) * 2 - 1, _images(1, 3)
    attempts = []

    class NotCapturable:
        def __init__(self, fn, example, *, warmup=2):
            attempts.append(1)
            raise RuntimeError("operation not permitted when stream is capturing (stream test)")

    kw = dict(num_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    reference = [pipe.stream(src, **kw)(pose)]
    streamer = pipe.stream(src, **{**kw, "generator": torch.Generator().manual_seed(0)})
    _capturing(monkeypatch, streamer, NotCapturable)
    with caplog.at_level(logging.WARNING, logger="rpfm"):
        frames = [streamer(pose) for _ in range(3)]
    assert attempts == [1] and streamer.frame_backend == "eager"      # tried once, never retried
    for f in frames:
        assert torch.equal(f, reference[0])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stream test" in warnings[0] and "eagerly" in warnings[0]
    strict = pipe.stream(src, sampler_backend="graph", num_steps=2, output_type="pt")
    _capturing(monkeypatch, strict, NotCapturable)
    with pytest.raises(RuntimeError, match="stream test"):           # an explicit request re-raises
        strict(pose)


def test_capture_is_off_on_cpu_and_for_eager_sampling(pipe):
    streamer = pipe.stream(_images(1) * 2 - 1, num_steps=1)
    assert "CUDA" in streamer._capture_unavailable()
    streamer.sampler_backend = "eager"
    assert streamer._capture_unavailable() is not None


@requires_cuda
@pytest.mark.parametrize("output_type", ["pt", "latent"])
def test_cuda_stream_captures_its_stages_and_matches_eager_stages(pipe, monkeypatch, output_type):
    pipe.to("cuda")
    src = (_images(1) * 2 - 1).cuda()
    kw = dict(num_steps=3, guidance_scale=1.3, output_type=output_type)
    captured = pipe.stream(src, generator=torch.Generator().manual_seed(0), **kw)
    eager = pipe.stream(src, generator=torch.Generator().manual_seed(0), **kw)
    monkeypatch.setattr(eager, "_capture_unavailable", lambda: "forced eager stages")
    poses = [_images(1, 30), _images(1, 31).cuda(), _images(1, 30)]
    got = [captured(p) for p in poses]
    assert captured.frame_backend == "cuda-graph" and eager.frame_backend == "eager"
    for g, p in zip(got, poses):
        torch.testing.assert_close(g, eager(p), rtol=1e-5, atol=1e-5)
    assert not torch.equal(got[0], got[1]) and torch.equal(got[0], got[2])


@requires_cuda
def test_cuda_stream_frame_makes_no_host_sync(pipe):
    pipe.to("cuda")
    streamer = pipe.stream((_images(1) * 2 - 1).cuda(), num_steps=3, output_type="latent")
    for i in range(2):
        streamer(_images(1, 40 + i))                                     # warm-up and capture
    assert streamer.frame_backend == "cuda-graph"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(2):
            streamer(_images(1, 50 + i))                                 # a host pose: uploaded through pinned memory
            streamer(_images(1, 60 + i).cuda())                          # a device pose: its check is deferred
    finally:
        torch.cuda.set_sync_debug_mode("default")
