"""pipe.stream(): cached source work, equality with the pipeline, shared-noise stability, the threaded worker."""
import queue

import numpy as np
import pytest
import torch

from rpfm import RPFMPipeline
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.model import RPFM
from rpfm.streaming import StreamWorker

from .conftest import randomize


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
