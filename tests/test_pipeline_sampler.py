"""The pipeline's sampler selection: graph (C++) vs eager parity, explicit requests, and stale-weight recapture."""
import numpy as np
import pytest
import torch

from rpfm import RPFMPipeline, _ext
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.model import RPFM

from .conftest import randomize, requires_cuda, requires_ext



def _pipe(device="cpu", dtype=torch.float32) -> RPFMPipeline:
    return RPFMPipeline(randomize(RPFM(demo_config()), std=0.03), PixelCodec(downsample=4)).to(device, dtype)


def _inputs(batch, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1).to(device),
            torch.rand(batch, 3, 64, 64, generator=g).to(device))


@requires_ext
@pytest.mark.parametrize("solver, guidance", [("euler", 1.1), ("euler", 1.0), ("heun", 1.5)])
def test_cpp_loop_matches_eager_on_cpu(solver, guidance):
    pipe = _pipe()
    src, pose = _inputs(2)
    kw = dict(num_steps=4, guidance_scale=guidance, solver=solver, output_type="latent")
    eager = pipe(src, pose, sampler_backend="eager", generator=torch.Generator().manual_seed(0), **kw)
    graph = pipe(src, pose, sampler_backend="graph", generator=torch.Generator().manual_seed(0), **kw)
    assert graph.backends["sampler"] == f"cpp-loop-{solver}" and eager.backends["sampler"] == f"eager-{solver}"
    assert graph.nfe == eager.nfe
    torch.testing.assert_close(graph.images, eager.images, rtol=1e-5, atol=1e-5)


@requires_ext
def test_guidance_change_and_new_inputs_reuse_the_sampler():
    pipe = _pipe()
    src, pose = _inputs(1)
    src2, pose2 = _inputs(1, seed=5)
    kw = dict(num_steps=3, output_type="latent", generator=torch.Generator().manual_seed(2))
    pipe(src, pose, guidance_scale=1.2, sampler_backend="graph", **kw)
    assert len(pipe._graphs._samplers) == 1
    for w, s, p in [(1.6, src2, pose2), (1.2, src, pose)]:
        got = pipe(s, p, guidance_scale=w, sampler_backend="graph", num_steps=3, output_type="latent",
                   generator=torch.Generator().manual_seed(2)).images
        ref = pipe(s, p, guidance_scale=w, sampler_backend="eager", num_steps=3, output_type="latent",
                   generator=torch.Generator().manual_seed(2)).images
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert len(pipe._graphs._samplers) == 1       # same shape: no new sampler


@requires_ext
def test_replaced_weights_are_seen():
    pipe = _pipe()
    src, pose = _inputs(1)
    kw = dict(num_steps=2, output_type="latent", sampler_backend="graph")
    before = pipe(src, pose, generator=torch.Generator().manual_seed(0), **kw).images
    with torch.no_grad():                           # in-place update: same storage
        pipe.model.final_layer.linear.bias.add_(0.5)
    inplace = pipe(src, pose, generator=torch.Generator().manual_seed(0), **kw).images
    assert not torch.allclose(before, inplace)
    pipe.model.final_layer.linear.bias = torch.nn.Parameter(torch.zeros_like(pipe.model.final_layer.linear.bias))
    replaced = pipe(src, pose, generator=torch.Generator().manual_seed(0), **kw).images
    eager = pipe(src, pose, generator=torch.Generator().manual_seed(0), num_steps=2, output_type="latent",
                 sampler_backend="eager").images
    torch.testing.assert_close(replaced, eager, rtol=1e-5, atol=1e-5)


def test_explicit_graph_refuses_adaptive_solver():
    pipe = _pipe()
    src, pose = _inputs(1)
    with pytest.raises(RuntimeError, match="sampler_backend='graph' is unavailable: solver='dopri5' is adaptive"):
        pipe(src, pose, solver="dopri5", sampler_backend="graph")


def test_explicit_graph_without_extension_raises(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_EXT", False)
    monkeypatch.setattr(_ext, "EXT_REASON", "rpfm._C is not built")
    pipe = _pipe()
    src, pose = _inputs(1)
    with pytest.raises(RuntimeError, match="rpfm._C is not built.*sampler_backend='eager'"):
        pipe(src, pose, num_steps=1, sampler_backend="graph")
    assert pipe(src, pose, num_steps=1).backends["sampler"] == "eager-euler"   # auto falls back


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_pipeline_matches_eager(dtype):
    pipe = _pipe("cuda", dtype)
    src, pose = _inputs(2, "cuda")
    kw = dict(num_steps=6, guidance_scale=1.1, output_type="latent")
    graph = pipe(src, pose, generator=torch.Generator().manual_seed(0), **kw)
    assert graph.backends["sampler"] == "cuda-graph-euler"
    eager = pipe(src, pose, sampler_backend="eager", generator=torch.Generator().manual_seed(0), **kw)
    with torch.no_grad():   # the fp32 truth for the k x eager rule
        ref = _pipe("cuda", torch.float32)(src.float(), pose.float(), sampler_backend="eager",
                                           generator=torch.Generator().manual_seed(0), **kw).images
    if dtype == torch.float32:
        torch.testing.assert_close(graph.images, eager.images, rtol=1e-5, atol=1e-5)
    else:
        err_graph = (graph.images.float() - ref).abs().max()
        err_eager = (eager.images.float() - ref).abs().max()
        assert err_graph <= 2 * err_eager + 1e-2, (err_graph, err_eager)
    again = pipe(src, pose, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(graph.images, again.images)        # replays are bit-identical


def test_pipeline_set_backends():
    pipe = _pipe()
    src, pose = _inputs(1)
    out = pipe.set_backends(attention="math")(src, pose, num_steps=1, output_type="latent")
    assert out.backends["attention"] == "math"
    with pytest.raises(RuntimeError, match="flash_attn"):
        pipe.set_backends(attention="flash_attn")
    pipe.set_backends()


def test_keypoints_as_target_pose(tmp_path):
    from rpfm.pose.formats import write_keypoints_json
    from rpfm.pose.keypoints import Keypoints
    from rpfm.pose.render import render_pose_tensor

    pipe = _pipe()
    src, _ = _inputs(1)
    xy = np.array([[30, 10], [30, 18], [22, 18], [18, 28], [16, 36], [38, 18], [42, 28], [44, 36], [25, 38],
                   [24, 50], [24, 60], [35, 38], [36, 50], [36, 60], [28, 8], [32, 8], [26, 9], [34, 9]], float)
    kp = Keypoints(xy, (64, 64))
    kw = dict(num_steps=2, output_type="latent", generator=None)
    a = pipe(src, kp, **{**kw, "generator": torch.Generator().manual_seed(0)}).images
    b = pipe(src, render_pose_tensor(kp, 64)[None], **{**kw, "generator": torch.Generator().manual_seed(0)}).images
    torch.testing.assert_close(a, b)
    write_keypoints_json(tmp_path / "kp.json", kp)
    from rpfm.cli import main

    pipe.save_pretrained(tmp_path / "m")
    from PIL import Image

    Image.fromarray(((src[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(tmp_path / "s.png")
    assert main(["generate", "--model", str(tmp_path / "m"), "--source", str(tmp_path / "s.png"), "--pose",
                 str(tmp_path / "kp.json"), "--out", str(tmp_path / "o.png"), "--steps", "1", "--device", "cpu"]) == 0
