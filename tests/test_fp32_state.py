"""The ODE state stays float32 in every sampler path (eager loop, EagerEulerCFG, the C++ loop, the pipeline) while
the velocity runs in the model's dtype: a bf16 model must not round the state at every step."""
from __future__ import annotations

import pytest
import torch

from rpfm import RPFMPipeline, _ext
from rpfm.codec import PixelCodec
from rpfm.demo import demo_config
from rpfm.integrators import EagerEulerCFG, GraphEulerCFG
from rpfm.model import RPFM
from rpfm.ops.reference import euler_cfg_step_ref

from .conftest import randomize, requires_ext

EXT = [pytest.mark.ext, pytest.mark.skipif(not _ext.HAS_EXT, reason=f"rpfm._C unavailable: {_ext.EXT_REASON}")]
N, A = 60, 1.3
SHAPE = (2, (4, 8, 8))


def bf16_field(x_in, t):
    """v = -A x, evaluated in bf16 as a bf16 model would (input rounded, output rounded)."""
    assert x_in.dtype == torch.bfloat16
    return (-A * x_in.float()).to(torch.bfloat16)


def noise():
    return torch.randn(SHAPE[0], *SHAPE[1], generator=torch.Generator().manual_seed(0))


def bf16_state_error(x0: torch.Tensor) -> float:
    """The old behaviour: the state itself in bf16 (rounded after every update)."""
    x = x0.to(torch.bfloat16)
    for _ in range(N):
        x = (x.float() + (-1.0 / N) * bf16_field(x, None).float()).to(torch.bfloat16)
    return (x.float() - x0 * (1 + A / N) ** N).abs().max().item()


@pytest.mark.parametrize("cls", [EagerEulerCFG, pytest.param(GraphEulerCFG, marks=EXT)])
def test_integrators_keep_an_fp32_state_for_a_bf16_field(cls):
    x0 = noise()
    g = cls(bf16_field, batch_size=SHAPE[0], latent_shape=SHAPE[1], num_steps=N, guidance_scale=1.0,
            dtype=torch.bfloat16)
    out = g(x0)
    assert out.dtype == torch.float32
    err = (out - x0 * (1 + A / N) ** N).abs().max().item()
    assert err < 0.5 * bf16_state_error(x0), (err, bf16_state_error(x0))


@requires_ext
def test_cpp_loop_equals_eager_integrator_with_bf16_velocity():
    x0 = noise()
    kw = dict(batch_size=SHAPE[0], latent_shape=SHAPE[1], num_steps=7, guidance_scale=1.0, dtype=torch.bfloat16)
    torch.testing.assert_close(GraphEulerCFG(bf16_field, **kw)(x0), EagerEulerCFG(bf16_field, **kw)(x0),
                               rtol=0, atol=0)


@requires_ext
@pytest.mark.parametrize("vdtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cfg", [False, True])
def test_euler_op_takes_an_fp32_state_with_a_low_precision_velocity(vdtype, cfg):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 7, generator=g)
    v = torch.randn(6 if cfg else 3, 5, 7, generator=g).to(vdtype)
    dt, w = torch.tensor(-0.1), torch.tensor(1.7)
    ref = euler_cfg_step_ref(x.clone(), v, dt, w)
    got = x.clone()
    torch.ops.rpfm.euler_cfg_step_(got, v, dt, w)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


@requires_ext
def test_euler_op_refuses_a_low_precision_state_with_an_fp32_velocity():
    x = torch.zeros(2, 3, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="v must have the dtype of x"):
        torch.ops.rpfm.euler_cfg_step_(x, torch.zeros(2, 3), torch.tensor(0.1), torch.tensor(1.0))


@pytest.mark.parametrize("backend", ["eager", pytest.param("graph", marks=EXT)])
def test_bf16_pipeline_state_is_fp32_and_closer_to_fp32_than_a_bf16_state(backend):
    torch.manual_seed(0)
    model = randomize(RPFM(demo_config()), std=0.03)
    g = torch.Generator().manual_seed(0)
    src, pose = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g)
    kw = dict(num_steps=30, guidance_scale=1.1, output_type="latent")
    ref = RPFMPipeline(model, PixelCodec(downsample=4))(src, pose, sampler_backend="eager",
                                                        generator=torch.Generator().manual_seed(0), **kw).images
    pipe = RPFMPipeline(model, PixelCodec(downsample=4)).to(dtype=torch.bfloat16)
    out = pipe(src, pose, sampler_backend=backend, generator=torch.Generator().manual_seed(0), **kw).images
    assert out.dtype == torch.float32
    # The same model with the old bf16 state: round the state after every Euler step.
    cond = pipe.encode_condition(src, pose)
    from rpfm.flow import GuidedVelocity

    f = GuidedVelocity(pipe.model, cond, 1.1)
    x = pipe.prepare_noise(2, torch.Generator().manual_seed(0)).to(torch.bfloat16)
    for i in range(30):
        x = (x.float() + (-1 / 30) * f(x.float(), torch.tensor(1 - i / 30))).to(torch.bfloat16)
    rms = lambda a: (a.float() - ref).pow(2).mean().sqrt().item()  # noqa: E731
    assert rms(out) < rms(x), (rms(out), rms(x))
