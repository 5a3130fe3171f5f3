"""The CPU attention kernel of rpfm._C (csrc/cpu_attention.cpp) against the float64 reference, on both copies
(AVX2 + FMA and generic), through the strided views the model hands it, and its adapter's hand-overs to SDPA.
Also: the extension's CPU kernels really run on torch's threads (a build without OpenMP runs them on one)."""
from __future__ import annotations

import json

import pytest
import torch

from rpfm import _ext, ops
from rpfm.ops import cpu as cpu_ops
from rpfm.ops.reference import attention_ref

from .conftest import requires_ext, run_python

TOL = dict(rtol=2e-5, atol=2e-6)


def _qkv(B, T, H, Dh, seed=0, scale=1.0):
    """q, k, v as the model makes them: three (B, T, H, Dh) views of one (B, T, 3, H, Dh) qkv buffer."""
    qkv = torch.randn(B, T, 3, H, Dh, generator=torch.Generator().manual_seed(seed)) * scale
    return qkv.unbind(2)


def _truth(q, k, v):
    return attention_ref(q.double(), k.double(), v.double()).float()


@requires_ext
@pytest.mark.parametrize("B, T, H, Dh", [
    (16, 64, 3, 64),     # the demo model, CFG-doubled batch of 8
    (2, 7, 2, 16),       # fewer rows than one 6-row tile, T not a multiple of 8
    (1, 131, 2, 40),     # three query blocks (64 + 64 + 3), Dh with an 8-wide tail after 32
    (3, 13, 1, 12),      # Dh not a multiple of 8: the generic rows serve
    (1, 1, 1, 8),        # one token
    (2, 128, 2, 64),     # the longest sequence the tier takes itself (CPP_ATTENTION_MAX_T)
    (1, 300, 1, 16),     # longer ones work too (the adapter hands them to SDPA, the kernel does not care)
])
def test_matches_the_float64_reference_on_strided_views(B, T, H, Dh):
    q, k, v = _qkv(B, T, H, Dh)
    assert not q.is_contiguous() or B * T == 1
    out = torch.ops.rpfm.attention(q, k, v)
    assert out.shape == (B, T, H, Dh) and out.is_contiguous()
    torch.testing.assert_close(out, _truth(q, k, v), **TOL)


@requires_ext
def test_peaked_scores_stay_finite_and_exact():
    # large logits: the row maximum is subtracted before exp, so nothing overflows
    q, k, v = _qkv(2, 40, 2, 32, seed=1, scale=12.0)
    out = torch.ops.rpfm.attention(q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _truth(q, k, v), rtol=1e-4, atol=1e-4)


@requires_ext
def test_nan_propagates_like_the_reference():
    # a NaN key poisons every query's whole output row of that head, a NaN value feature that feature of every
    # query: never silently dropped (a clamp that turned NaN scores into exp(-87) would drop the key instead)
    for which, poisoned in (("k", (1, slice(None), 0)), ("v", (1, slice(None), 0, 3))):
        q, k, v = (t.clone() for t in _qkv(2, 20, 2, 16, seed=2))
        {"k": k, "v": v}[which][1, 5, 0, 3] = float("nan")
        got, want = torch.ops.rpfm.attention(q, k, v), attention_ref(q, k, v)
        assert got[poisoned].isnan().all() and torch.equal(got.isnan(), want.isnan()), which
        torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), **TOL)


@requires_ext
def test_generic_kernel_equals_the_avx2_one_to_rounding():
    code = """
import json, torch
from rpfm import _ext
_ext.extension()
qkv = torch.randn(2, 70, 3, 2, 24, generator=torch.Generator().manual_seed(5))
q, k, v = qkv.unbind(2)
print(json.dumps({"isa": _ext.extension().build_info()["cpu_kernels"],
                  "out": torch.ops.rpfm.attention(q, k, v).flatten().tolist()}))
"""
    runs = {name: json.loads(run_python(code, env)) for name, env in
            (("default", {"RPFM_CPU_KERNELS": ""}), ("generic", {"RPFM_CPU_KERNELS": "generic"}))}
    assert runs["generic"]["isa"] == "generic"
    q, k, v = _qkv(2, 70, 2, 24, seed=5)
    want = _truth(q, k, v).flatten()
    for name, run in runs.items():
        torch.testing.assert_close(torch.tensor(run["out"]), want, **TOL, msg=lambda m: f"{name}: {m}")


@requires_ext
def test_op_names_the_bad_argument():
    q, k, v = _qkv(2, 8, 2, 16)
    with pytest.raises(RuntimeError, match=r"attention: q must be a float32 CPU tensor, got Double"):
        torch.ops.rpfm.attention(q.double(), k, v)
    with pytest.raises(RuntimeError, match=r"attention: k must have q's shape"):
        torch.ops.rpfm.attention(q, k[:1], v)
    with pytest.raises(RuntimeError, match=r"attention: v must be \(B, T, H, Dh\)"):
        torch.ops.rpfm.attention(q, k, v[0])
    with pytest.raises(RuntimeError, match=r"attention: q must have stride 1 along Dh"):
        torch.ops.rpfm.attention(q.transpose(2, 3).contiguous().transpose(2, 3), k, v)


@requires_ext
def test_adapter_copies_what_it_must_and_hands_autograd_and_long_sequences_to_sdpa(monkeypatch):
    q, k, v = _qkv(2, 24, 2, 16)
    with torch.no_grad():   # Dh-strided inputs: the adapter makes them contiguous
        qt = q.transpose(2, 3).contiguous().transpose(2, 3)
        torch.testing.assert_close(cpu_ops.attention_cpp(qt, k, v), _truth(q, k, v), **TOL)
    qg = q.clone().requires_grad_()
    assert not _ran_kernel(lambda: cpu_ops.attention_cpp(qg, k, v).sum().backward())   # autograd: SDPA
    qr = q.clone().requires_grad_()
    attention_ref(qr, k, v).sum().backward()
    torch.testing.assert_close(qg.grad, qr.grad, **TOL)
    with torch.no_grad():
        assert _ran_kernel(lambda: cpu_ops.attention_cpp(q, k, v))
        monkeypatch.setattr(cpu_ops, "CPP_ATTENTION_MAX_T", 16)                  # T = 24 is now "long"
        assert not _ran_kernel(lambda: torch.testing.assert_close(cpu_ops.attention_cpp(q, k, v), _truth(q, k, v),
                                                                  **TOL))


def _ran_kernel(fn) -> bool:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any(e.name == "rpfm::attention" for e in prof.events())


@requires_ext
def test_auto_selection_on_cpu_float32_only():
    assert ops.resolve_opset("cpu", torch.float32, head_dim=64).names["attention"] == "cpp"
    assert ops.resolve_opset("cpu", torch.float64, head_dim=64).names["attention"] == "sdpa"


@requires_ext
def test_opcheck():
    q, k, v = (t.contiguous() for t in _qkv(2, 9, 2, 16))
    torch.library.opcheck(torch.ops.rpfm.attention.default, (q, k, v))


@requires_ext
def test_extension_kernels_use_torchs_threads():
    # at::parallel_for is header-inline OpenMP in torch's CPU builds: an extension compiled without -fopenmp runs
    # every kernel on one thread, silently (rpfm._C did until this test).
    code = """
import torch
from rpfm import _ext
c = _ext.extension()
torch.set_num_threads(2); two = c.cpu_parallel_threads()
torch.set_num_threads(1); one = c.cpu_parallel_threads()
print(two, one, torch.__config__.parallel_info().count("OpenMP"))
"""
    two, one, openmp = map(int, run_python(code, {"OMP_NUM_THREADS": "2"}).split())
    assert one == 1
    assert two == 2 or not openmp
