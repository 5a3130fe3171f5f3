"""rpfm._C: the rpfm::euler_cfg_step_ op against euler_cfg_step_ref, its registration (opcheck), its input checks,
and the guarded import in rpfm._ext. CUDA cases run only where the extension was built with CUDA and a GPU exists."""
from __future__ import annotations

import os

import pytest
import torch

from rpfm import _ext
from rpfm.ops.reference import euler_cfg_step_ref

from .conftest import requires_cuda, requires_ext, run_python


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, trailing dims): latent-like, odd sizes that defeat vector loads, a 1-D state, batch 1.
SHAPES = [(2, (4, 8, 8)), (3, (5, 7, 3)), (1, (13,)), (4, (1, 1, 1)), (2, (3, 33, 17))]
# Rounding a fp32 result to a storage dtype: at most half an ulp of the result (2^-11 fp16, 2^-8 bf16).
TOL = {torch.float32: 0.0, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def op(x, v, dt, guidance):
    torch.ops.rpfm.euler_cfg_step_(x, v, dt, guidance)
    return x


def make(B, rest, cfg, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, *rest, generator=g).to(device=device, dtype=dtype)
    v = torch.randn((2 * B if cfg else B), *rest, generator=g).to(device=device, dtype=dtype)
    dt = torch.tensor(-0.137, device=device)
    w = torch.tensor(1.7, device=device)
    return x, v, dt, w


def check_against_ref(device, B, rest, cfg, dtype):
    x, v, dt, w = make(B, rest, cfg, dtype, device)
    expected = euler_cfg_step_ref(x.clone(), v, dt, w)
    got = op(x, v, dt, w)
    assert got.dtype == dtype and got.shape == expected.shape
    # Both compute in fp32 and round once; fp32 must agree bit for bit (no FMA on either side).
    diff = (got.float() - expected.float()).abs().max().item()
    scale = expected.float().abs().max().item()
    assert diff <= TOL[dtype] * scale, f"max |op - ref| = {diff} (dtype {dtype}, cfg {cfg}, shape {(B, *rest)})"


# ---------------------------------------------------------------------------------------------------- CPU parity
@requires_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", [True, False], ids=["cfg", "nocfg"])
@pytest.mark.parametrize("B,rest", SHAPES)
def test_op_matches_reference_cpu(B, rest, cfg, dtype):
    check_against_ref("cpu", B, rest, cfg, dtype)


@requires_ext
def test_op_fp32_bit_exact_and_guidance_identities():
    x, v, dt, _ = make(2, (4, 6, 6), True, torch.float32)
    B = x.shape[0]
    for w, vel in ((1.0, v[:B]), (0.0, v[B:])):  # w = 1 gives v_c, w = 0 gives v_u
        got = op(x.clone(), v, dt, torch.tensor(w))
        assert torch.equal(got, euler_cfg_step_ref(x.clone(), v, dt, torch.tensor(w)))
        torch.testing.assert_close(got, x + dt * vel, rtol=0, atol=1e-6)


@requires_ext
def test_op_is_in_place_and_returns_none():
    x, v, dt, w = make(2, (3, 4), True, torch.float32)
    ptr = x.data_ptr()
    assert torch.ops.rpfm.euler_cfg_step_(x, v, dt, w) is None
    assert x.data_ptr() == ptr


@requires_ext
def test_op_large_parallel_cpu():
    x, v, dt, w = make(3, (4, 128, 129), True, torch.float32)   # > one parallel_for grain
    assert torch.equal(op(x.clone(), v, dt, w), euler_cfg_step_ref(x.clone(), v, dt, w))


@requires_ext
@pytest.mark.parametrize("cfg", [True, False], ids=["cfg", "nocfg"])
def test_opcheck(cfg):
    x, v, dt, w = make(2, (3, 5, 4), cfg, torch.float32)
    torch.library.opcheck(torch.ops.rpfm.euler_cfg_step_.default, (x, v, dt, w))


@requires_ext
def test_registry_backend_matches_reference():
    from rpfm.ops import ext as ext_backend

    x, v, _, _ = make(2, (4, 4, 4), True, torch.float32)
    # The adapter accepts Python-float / float64 scalars and a non-contiguous v, like the reference.
    v_nc = v.transpose(-1, -2).contiguous().transpose(-1, -2)
    got = ext_backend.euler_cfg_step_ext(x.clone(), v_nc, -0.25, torch.tensor(1.5, dtype=torch.float64))
    assert torch.equal(got, euler_cfg_step_ref(x.clone(), v, torch.tensor(-0.25), torch.tensor(1.5)))


@requires_ext
def test_op_under_torch_compile():
    x, v, dt, w = make(2, (4, 8), True, torch.float32)

    def f(x, v, dt, w):
        torch.ops.rpfm.euler_cfg_step_(x, v, dt, w)
        return x * 2

    expected = f(x.clone(), v, dt, w)
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(x.clone(), v, dt, w)
    assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------------- bad inputs
@requires_ext
@pytest.mark.parametrize("case,match", [
    ("v_batch", r"v must have batch B=2 .* or 2B=4 .*got v \[3, 4\]"),
    ("v_trailing", r"v must have shape \(B, \.\.\.\) or \(2B, \.\.\.\) with x's trailing dims"),
    ("v_dtype", r"v must have the dtype of x \(Half\), or be float16/bfloat16 with a float32 x, got Float"),
    ("x_dtype", r"x must be float32, float16 or bfloat16, got Double"),
    ("dt_dim", r"dt must have 0 dims, got shape \[1\]"),
    ("dt_dtype", r"dt must have dtype Float, got Double"),
    ("guidance_dim", r"guidance must have 0 dims, got shape \[2\]"),
    ("x_noncontig", r"x must be contiguous, got shape \[2, 4\] with strides"),
])
def test_bad_inputs_name_the_tensor(case, match):
    x, v, dt, w = make(2, (4,), True, torch.float32)
    if case == "v_batch":
        v = torch.randn(3, 4)
    elif case == "v_trailing":
        v = torch.randn(4, 5)
    elif case == "v_dtype":
        x = x.half()                     # a low-precision state with an fp32 velocity (the reverse is allowed)
    elif case == "x_dtype":
        x, v = x.double(), v.double()
    elif case == "dt_dim":
        dt = dt.reshape(1)
    elif case == "dt_dtype":
        dt = dt.double()
    elif case == "guidance_dim":
        w = torch.tensor([1.0, 2.0])
    elif case == "x_noncontig":
        x = torch.randn(4, 2).t()
    with pytest.raises(RuntimeError, match=match):
        torch.ops.rpfm.euler_cfg_step_(x, v, dt, w)


@requires_ext
def test_device_mismatch_names_the_tensor():
    x, v, dt, w = make(2, (4,), True, torch.float32)
    with pytest.raises(RuntimeError, match=r"dt must be on the device of x \(cpu\), got meta"):
        torch.ops.rpfm.euler_cfg_step_(x, v, dt.to("meta"), w)


@requires_ext
def test_meta_kernel_checks_shapes():
    x, v, dt, w = (t.to("meta") for t in make(2, (4,), True, torch.float32))
    torch.ops.rpfm.euler_cfg_step_(x, v, dt, w)  # shape-only: fine
    with pytest.raises(RuntimeError, match="v must have batch"):
        torch.ops.rpfm.euler_cfg_step_(x, torch.empty(3, 4, device="meta"), dt, w)


# ---------------------------------------------------------------------------------------------------- _ext
def _ext_state(env: dict) -> str:
    code = "import rpfm._ext as e; print(e.HAS_EXT); print(e.EXT_REASON)"
    return run_python(code, env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_disable_env_reports_reason():
    out = _ext_state({"RPFM_DISABLE_EXT": "1"})
    assert out.splitlines()[0] == "False"
    assert "RPFM_DISABLE_EXT" in out


def test_disabled_extension_raises_with_reason():
    code = ("import rpfm._ext as e\n"
            "try:\n    e.extension()\nexcept RuntimeError as err:\n    print('raised:', err)\n")
    out = run_python(code, {"RPFM_DISABLE_EXT": "1"})
    assert out.startswith("raised:") and "RPFM_DISABLE_EXT" in out


def test_version_parsing():
    assert _ext._release("2.13.0+cpu") == "2.13.0"
    assert _ext._release("2.11.0+cu130") == "2.11.0"
    assert _ext._release("2.12.0a0+git1234") == "2.12.0"


@requires_ext
def test_build_info_matches_running_torch():
    info = _ext.build_info()
    assert set(info) >= {"torch_version", "cuda", "cuda_version", "archs", "compiler"}
    assert info["torch_version"] == _ext._release(torch.__version__)
    assert isinstance(info["cuda"], bool)
    assert "loaded" in _ext.EXT_REASON


@requires_ext
def test_registry_prefers_ext():
    import rpfm.ops.ext  # noqa: F401  (registers the backend; rpfm.ops imports it too once wired)
    from rpfm.ops.registry import resolve

    assert resolve("euler_cfg_step", device="cpu", dtype=torch.float32).name == "ext"


# ---------------------------------------------------------------------------------------------------- CUDA
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", [True, False], ids=["cfg", "nocfg"])
@pytest.mark.parametrize("B,rest", SHAPES)
def test_op_matches_reference_cuda(B, rest, cfg, dtype):
    check_against_ref("cuda", B, rest, cfg, dtype)


@requires_cuda
def test_op_cuda_unaligned_view_uses_scalar_path():
    x, v, dt, w = make(2, (64,), True, torch.float32, "cuda")
    buf = torch.randn(2 * 2 * 64 + 1, device="cuda")
    v_odd = buf[1:].view(4, 64)  # contiguous but 4-byte aligned only
    v_odd.copy_(v)
    assert torch.equal(op(x.clone(), v_odd, dt, w), euler_cfg_step_ref(x.clone(), v, dt, w))


@requires_cuda
def test_opcheck_cuda():
    x, v, dt, w = make(2, (3, 5, 4), True, torch.float32, "cuda")
    torch.library.opcheck(torch.ops.rpfm.euler_cfg_step_.default, (x, v, dt, w))


@requires_cuda
def test_op_cuda_device_scalars_change_a_captured_graph():
    x, v, dt, w = make(2, (4, 8, 8), True, torch.float32, "cuda")
    x_static = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        op(x_static, v, dt, w)  # warm-up
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        op(x_static, v, dt, w)
    for new_dt, new_w in ((-0.5, 1.0), (-0.1, 3.0)):
        dt.fill_(new_dt)
        w.fill_(new_w)
        x_static.copy_(x)
        graph.replay()
        torch.testing.assert_close(x_static, euler_cfg_step_ref(x.clone(), v, dt, w), rtol=0, atol=0)


@requires_cuda
def test_cuda_bad_device_mix():
    x, v, dt, w = make(2, (4,), True, torch.float32, "cuda")
    with pytest.raises(RuntimeError, match=r"guidance must be on the device of x \(cuda:0\), got cpu"):
        torch.ops.rpfm.euler_cfg_step_(x, v, dt, w.cpu())
    with pytest.raises(RuntimeError, match=r"v must be on the device of x"):
        torch.ops.rpfm.euler_cfg_step_(x, v.cpu(), dt, w)


@requires_ext
def test_extension_built_for_another_torch_is_refused_not_crashed():
    code = ("import torch; torch.__version__ = '9.9.9'; import rpfm, rpfm._ext as e; "
            "assert not e.HAS_EXT, e.EXT_REASON; assert 'built for torch' in e.EXT_REASON and '9.9.9' in "
            "e.EXT_REASON, e.EXT_REASON; from rpfm import ops; "
            "print(ops.resolve('euler_cfg_step', device='cpu', dtype=torch.float32).name)")
    assert run_python(code).strip() == "eager"
