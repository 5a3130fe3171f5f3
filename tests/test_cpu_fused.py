"""The one-pass C++ CPU kernels (csrc/cpu_fused.cpp: adaLN, gated residual + adaLN, tanh-GELU) against the eager
reference, on both copies of the kernels (AVX2 + FMA where the CPU has it, and the generic one)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from rpfm import _ext, ops
from rpfm.ops import reference as ref
from rpfm.ops.cpu import adaln_modulate_cpp, gated_residual_adaln_cpp

from .conftest import requires_ext, run_python

TOL = dict(rtol=1e-5, atol=2e-5)


def _inputs(B, T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g) * 3 + 0.5           # LayerNorm must remove a mean and a scale
    y = torch.randn(B, T, D, generator=g)
    table = torch.randn(5, B, D, generator=g)                 # like the hoisted table: rows of a larger tensor
    return x, y, table[1], table[2], table[4]


@requires_ext
@pytest.mark.parametrize("shape", [(16, 64, 192), (2, 5, 37), (1, 1, 8), (3, 7, 1)])
def test_fused_adaln_ops_match_reference(shape):
    x, y, gate, shift, scale = _inputs(*shape)
    x0, y0 = x.clone(), y.clone()
    with torch.no_grad():
        torch.testing.assert_close(torch.ops.rpfm.adaln_modulate(x, shift, scale, 1e-6),
                                   ref.adaln_modulate_ref(x, shift, scale), **TOL)
        got_x, got_u = torch.ops.rpfm.gated_residual_adaln(x, y, gate, shift, scale, 1e-6)
        want_x, want_u = ref.gated_residual_adaln_ref(x, y, gate, shift, scale)
    torch.testing.assert_close(got_x, want_x, **TOL)
    torch.testing.assert_close(got_u, want_u, **TOL)
    assert torch.equal(x, x0) and torch.equal(y, y0)          # functional: the inputs are untouched


@requires_ext
@pytest.mark.parametrize("backend", ["cpp", "cpu", "eager"])
def test_gated_residual_adds_the_branch_bias(backend):
    # x + gate * (y + bias): the model leaves proj/fc2's bias out of the matmul when the residual op adds it.
    x, y, gate, shift, scale = _inputs(2, 5, 24)
    bias = torch.randn(24)
    with ops.use_backend("gated_residual_adaln", backend), torch.no_grad():
        got = ops.gated_residual_adaln(x, y, gate, shift, scale, bias=bias)
    want = ref.gated_residual_adaln_ref(x, y + bias, gate, shift, scale)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL)
    with pytest.raises(RuntimeError, match=r"gated_residual_adaln: bias must be \(D,\) = \(24,\)"):
        torch.ops.rpfm.gated_residual_adaln(x, y, gate, shift, scale, 1e-6, bias[:-1])


@requires_ext
def test_model_folds_the_residual_biases_only_where_the_residual_op_adds_them():
    from rpfm.config import RPFMConfig
    from rpfm.model import RPFM
    torch.manual_seed(0)
    model = RPFM(RPFMConfig(image_size=32, latent_channels=4, latent_downsample=4, patch_size=2, hidden_size=32,
                            depth=2, num_heads=2, branches=("local_source", "local_pose"))).eval()
    for p in model.parameters():                           # adaLN-Zero starts at zero: make every path count
        torch.nn.init.normal_(p, std=0.2)
    x, z_s, z_p = (torch.randn(2, 4, 8, 8) for _ in range(3))
    t = torch.tensor([0.3, 0.8])
    assert model.opset(torch.device("cpu"), torch.float32).residual_takes_bias
    with torch.no_grad():
        cond = model.prepare_condition(z_s=z_s, z_p=z_p)
        fast = model.velocity(x, t, cond)
        textbook = model.forward_textbook(x, t, cond)
    torch.testing.assert_close(fast, textbook, rtol=1e-4, atol=1e-5)
    with ops.use_backend("gated_residual_adaln", "cpu"):
        model.reset_backends()
        assert not model.opset(torch.device("cpu"), torch.float32).residual_takes_bias
    model.reset_backends()


@requires_ext
def test_modulation_vectors_may_come_from_tensors_of_different_widths():
    # The eager velocity chunks a block's (B, 6D) modulation and the final layer's (B, 2D): gate and the next
    # shift/scale then have different row strides.
    x, y, _, _, _ = _inputs(3, 4, 16)
    block = torch.randn(3, 6 * 16)
    final = torch.randn(3, 2 * 16)
    gate, shift, scale = block.chunk(6, dim=1)[2], *final.chunk(2, dim=1)
    with torch.no_grad():
        got = torch.ops.rpfm.gated_residual_adaln(x, y, gate, shift, scale, 1e-6)
    for a, b in zip(got, ref.gated_residual_adaln_ref(x, y, gate, shift, scale)):
        torch.testing.assert_close(a, b, **TOL)


@requires_ext
def test_fused_gelu_matches_tanh_gelu_over_the_whole_line():
    # Saturated tails (|x| up to 60: x^3 is huge, the exponent is clamped), zeros, tiny values, and lengths that
    # are not a multiple of the vector width.
    x = torch.cat([torch.linspace(-60, 60, 200_003), torch.randn(10_001) * 3,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-3])])
    y = x.clone()
    torch.ops.rpfm.gelu_tanh_(y)
    torch.testing.assert_close(y, torch.nn.functional.gelu(x, approximate="tanh"), rtol=2e-6, atol=2e-6)
    assert torch.isfinite(y).all()
    truth = torch.nn.functional.gelu(x.double(), approximate="tanh")
    rel = ((y.double() - truth).abs() / truth.abs().clamp_min(1e-3)).max().item()
    assert rel < 1e-5, rel                                    # a few ulp, not an approximation of GELU


@requires_ext
@pytest.mark.parametrize("shape", [(7, 768), (2, 3, 37), (5, 1)])
def test_fused_gelu_adds_the_bias_first(shape):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(*shape, generator=g) * 3
    b = torch.randn(shape[-1], generator=g)
    y = x.clone()
    torch.ops.rpfm.gelu_tanh_(y, b)
    torch.testing.assert_close(y, torch.nn.functional.gelu(x + b, approximate="tanh"), rtol=2e-6, atol=2e-6)
    with pytest.raises(RuntimeError, match=r"gelu_tanh_: bias must be \(N,\) with N = x's last dim"):
        torch.ops.rpfm.gelu_tanh_(x.clone(), b[:-1] if shape[-1] > 1 else torch.zeros(2))


@requires_ext
def test_generic_kernels_equal_the_avx2_ones_to_rounding():
    # RPFM_CPU_KERNELS=generic selects the copy that non-AVX2 CPUs run; both must meet the reference.
    code = """
import json, torch
from rpfm import _ext
_ext.extension()
g = torch.Generator().manual_seed(3)
x = torch.randn(4, 9, 40, generator=g) * 2; y = torch.randn(4, 9, 40, generator=g); m = torch.randn(3, 4, 40, generator=g)
z = torch.randn(50_001, generator=g) * 5
zb = torch.randn(9, 40, generator=g); bb = torch.randn(40, generator=g)
torch.ops.rpfm.gelu_tanh_(zb, bb)
xo, u = torch.ops.rpfm.gated_residual_adaln(x, y, m[0], m[1], m[2], 1e-6)
a = torch.ops.rpfm.adaln_modulate(x, m[1], m[2], 1e-6)
torch.ops.rpfm.gelu_tanh_(z)
print(json.dumps({"isa": _ext.extension().build_info()["cpu_kernels"],
                  "out": [t.flatten().tolist() for t in (xo, u, a, z, zb)]}))
"""
    runs = {name: json.loads(run_python(code, env)) for name, env in
            (("default", {"RPFM_CPU_KERNELS": ""}), ("generic", {"RPFM_CPU_KERNELS": "generic"}))}
    assert runs["generic"]["isa"] == "generic"
    assert runs["default"]["isa"] in ("generic", "avx2+fma")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, 40, generator=g) * 2
    y = torch.randn(4, 9, 40, generator=g)
    m = torch.randn(3, 4, 40, generator=g)
    z = torch.randn(50_001, generator=g) * 5
    zb, bb = torch.randn(9, 40, generator=g), torch.randn(40, generator=g)
    want_x, want_u = ref.gated_residual_adaln_ref(x, y, m[0], m[1], m[2])
    wants = (want_x, want_u, ref.adaln_modulate_ref(x, m[1], m[2]), torch.nn.functional.gelu(z, approximate="tanh"),
             torch.nn.functional.gelu(zb + bb, approximate="tanh"))
    for name, run in runs.items():
        for got, want in zip(run["out"], wants):
            torch.testing.assert_close(torch.tensor(got), want.flatten(), **TOL, msg=lambda m: f"{name}: {m}")


@requires_ext
def test_fused_ops_name_the_bad_argument():
    x, y, gate, shift, scale = _inputs(2, 3, 8)
    with pytest.raises(RuntimeError, match=r"adaln_modulate: x must be float32"):
        torch.ops.rpfm.adaln_modulate(x.double(), shift, scale, 1e-6)
    with pytest.raises(RuntimeError, match=r"adaln_modulate: shift must be \(B, D\) = \(2, 8\)"):
        torch.ops.rpfm.adaln_modulate(x, shift[:1], scale, 1e-6)
    with pytest.raises(RuntimeError, match=r"gated_residual_adaln: y must have x's shape"):
        torch.ops.rpfm.gated_residual_adaln(x, y[:1], gate, shift, scale, 1e-6)
    with pytest.raises(RuntimeError, match=r"gated_residual_adaln: x must be contiguous"):
        torch.ops.rpfm.gated_residual_adaln(x.transpose(0, 1), y.transpose(0, 1), gate[:1].expand(3, 8),
                                            shift[:1].expand(3, 8), scale[:1].expand(3, 8), 1e-6)
    with pytest.raises(RuntimeError, match=r"gated_residual_adaln: gate must have contiguous rows"):
        torch.ops.rpfm.gated_residual_adaln(x, y, gate.t().contiguous().t(), shift, scale, 1e-6)
    with pytest.raises(RuntimeError, match=r"gelu_tanh_: x must be contiguous"):
        torch.ops.rpfm.gelu_tanh_(torch.randn(4, 6).t())


@requires_ext
def test_backend_adapters_handle_strided_inputs_and_autograd():
    x, y, gate, shift, scale = _inputs(2, 6, 16)
    with torch.no_grad():
        # non-contiguous activations and column-strided modulation vectors: the adapter copies what it must
        xt = x.transpose(0, 1).contiguous().transpose(0, 1)
        st = shift.t().contiguous().t()
        torch.testing.assert_close(adaln_modulate_cpp(xt, st, scale), ref.adaln_modulate_ref(x, shift, scale), **TOL)
        got = gated_residual_adaln_cpp(xt, y, gate, st, scale)
    for a, b in zip(got, ref.gated_residual_adaln_ref(x, y, gate, shift, scale)):
        torch.testing.assert_close(a, b, **TOL)
    # a (1, D) modulation broadcast over the batch, as the reference allows
    with torch.no_grad():
        torch.testing.assert_close(adaln_modulate_cpp(x, shift[:1], scale[:1]),
                                   ref.adaln_modulate_ref(x, shift[:1], scale[:1]), **TOL)
        for a, b in zip(gated_residual_adaln_cpp(x, y, gate[:1], shift, scale[:1]),
                        ref.gated_residual_adaln_ref(x, y, gate[:1], shift, scale[:1])):
            torch.testing.assert_close(a, b, **TOL)
    # with autograd on, the adapters hand over to the PyTorch tier and gradients flow
    xg = x.clone().requires_grad_()
    xn, u = gated_residual_adaln_cpp(xg, y, gate, shift, scale)
    (u.square().sum() + xn.sum()).backward()
    xr = x.clone().requires_grad_()
    xn_r, u_r = ref.gated_residual_adaln_ref(xr, y, gate, shift, scale)
    (u_r.square().sum() + xn_r.sum()).backward()
    torch.testing.assert_close(xg.grad, xr.grad, **TOL)


@requires_ext
def test_auto_selection_on_cpu_picks_the_fused_kernels():
    opset = ops.resolve_opset("cpu", torch.float32)
    assert opset.names["adaln_modulate"] == opset.names["gated_residual_adaln"] == "cpp"
    assert ops.resolve_opset("cpu", torch.float64).names["adaln_modulate"] == "cpu"      # float32 only
    assert _ext.extension().build_info()["cpu_kernels"] in ("avx2+fma", "generic")


def test_pytorch_tier_serves_when_the_extension_is_disabled():
    out = run_python("import torch; from rpfm import ops; "
                     "print(ops.resolve_opset('cpu', torch.float32).names['gated_residual_adaln'])",
                     {"RPFM_DISABLE_EXT": "1"})
    assert out.strip() == "cpu"


@requires_ext
def test_gelu_in_place_helper_uses_one_pass_for_contiguous_float32():
    from rpfm.ops.linear import gelu_tanh_, gelu_tanh_chunked_
    z = torch.randn(3, 1000) * 4
    a, b = z.clone(), z.clone()
    gelu_tanh_(a)
    gelu_tanh_chunked_(b)
    torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6)
    assert not math.isnan(a.sum().item())


def test_gelu_in_place_helper_keeps_no_reference_and_applies_every_call():
    """A memoising decorator on gelu_tanh_ once kept every fc1 output alive (the sampler's memory grew by a block's
    MLP activation per block per step: a 128x128 steps sweep ran out of 24 GB) and skipped repeated calls."""
    import gc
    import weakref

    from rpfm.ops.linear import gelu_tanh_
    y, bias = torch.randn(64, 96), torch.randn(96)
    once = torch.nn.functional.gelu(y + bias, approximate="tanh")
    twice = torch.nn.functional.gelu(once + bias, approximate="tanh")
    gelu_tanh_(y, bias)
    torch.testing.assert_close(y, once, rtol=1e-5, atol=1e-5)
    gelu_tanh_(y, bias)                                   # the same tensor again: applied again, not remembered
    torch.testing.assert_close(y, twice, rtol=1e-5, atol=1e-5)
    ref_y = weakref.ref(y)
    del y
    gc.collect()
    assert ref_y() is None


def test_sampling_keeps_no_tensors_alive_between_steps():
    """The number of live tensors after a velocity call does not grow with the number of calls (fast CPU path)."""
    import gc

    from rpfm.demo import untrained_demo_pipeline
    from rpfm.flow import GuidedVelocity

    pipe = untrained_demo_pipeline()
    src = torch.zeros(2, 3, pipe.config.image_size, pipe.config.image_size)
    f = GuidedVelocity(pipe.model, pipe.encode_condition(src, src), 1.5)
    x = torch.randn(2, pipe.config.latent_channels, pipe.config.latent_size, pipe.config.latent_size)

    def live() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    with torch.no_grad():
        f(x, torch.tensor(0.5))                           # first call: lazily built caches (packed weights, ...)
        before = live()
        for _ in range(5):
            f(x, torch.tensor(0.5))
        assert live() == before


@requires_ext
@pytest.mark.parametrize("op", ["adaln_modulate", "gated_residual_adaln", "gated_residual_adaln+bias", "gelu_tanh_",
                                "gelu_tanh_+bias"])
def test_opcheck(op):
    # Schema, Meta (FakeTensor) kernels and AOT dispatch agree with the CPU kernels, so torch.compile can trace them.
    x, y, gate, shift, scale = _inputs(2, 3, 16)
    b = torch.randn(16)
    name, _, bias = op.partition("+")
    args = {"adaln_modulate": (x, shift, scale, 1e-6),
            "gated_residual_adaln": (x, y, gate, shift, scale, 1e-6) + ((b,) if bias else ()),
            "gelu_tanh_": (x.clone(),) + ((b,) if bias else ())}[name]
    torch.library.opcheck(getattr(torch.ops.rpfm, name).default, args)
