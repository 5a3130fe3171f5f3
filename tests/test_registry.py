"""Backend registry: auto falls back quietly, explicit requests fail loudly, overrides restore."""
import pytest
import torch

from rpfm import _ext, ops
from rpfm.ops import registry
from rpfm.ops.registry import register, resolve, use_backend


@pytest.fixture
def fake_op():
    calls = []
    register("_test_op", "eager", priority=0)(lambda: calls.append("eager") or "eager")
    register("_test_op", "fast", priority=10, probe=lambda: (False, "fastlib 0.1 < required 0.2"),
             install_hint="pip install fastlib>=0.2")(lambda: "fast")
    register("_test_op", "gpu", priority=20, constraints=(
        lambda device=None, **_: None if device == "cuda" else f"needs CUDA, got {device}",))(lambda: "gpu")
    yield "_test_op"
    registry._REGISTRY.pop("_test_op")


def test_auto_skips_unavailable_and_constrained(fake_op):
    assert resolve(fake_op, device="cpu").name == "eager"
    assert resolve(fake_op, device="cuda").name == "gpu"


def test_explicit_unavailable_raises_with_reason_and_fix(fake_op):
    with use_backend(fake_op, "fast"):
        with pytest.raises(RuntimeError, match="fastlib 0.1 < required 0.2.*pip install fastlib>=0.2"):
            resolve(fake_op, device="cpu")


def test_explicit_constraint_violation_raises(fake_op, monkeypatch):
    monkeypatch.setenv("RPFM__TEST_OP_BACKEND", "gpu")
    with pytest.raises(RuntimeError, match="needs CUDA, got cpu"):
        resolve(fake_op, device="cpu")


def test_unknown_backend_lists_registered(fake_op):
    with use_backend(fake_op, "nope"), pytest.raises(ValueError, match="'nope' is not registered.*eager"):
        resolve(fake_op, device="cpu")


def test_context_manager_restores_and_env_is_read(fake_op, monkeypatch):
    with use_backend(fake_op, "eager"):
        assert resolve(fake_op, device="cuda").name == "eager"
    assert resolve(fake_op, device="cuda").name == "gpu"
    monkeypatch.setenv("RPFM__TEST_OP_BACKEND", "eager")
    assert resolve(fake_op, device="cuda").name == "eager"


def test_force_eager_env_applies_to_every_op(monkeypatch):
    monkeypatch.setenv("RPFM_FORCE_EAGER", "1")
    for op in ops.OP_NAMES:
        assert resolve(op, device="cuda", dtype=torch.bfloat16).name in ("eager", "math")


def test_broken_probe_marks_unavailable():
    def broken():
        raise OSError("undefined symbol: _ZN3c10 (built for another torch)")

    register("_test_broken", "eager", priority=0)(lambda: None)
    register("_test_broken", "wheel", priority=5, probe=broken)(lambda: None)
    try:
        assert resolve("_test_broken", device="cpu").name == "eager"
        ok, reason = registry._REGISTRY["_test_broken"]["wheel"].availability()
        assert not ok and "undefined symbol" in reason
    finally:
        registry._REGISTRY.pop("_test_broken")


def test_cpu_auto_selection_never_picks_a_gpu_backend():
    opset = ops.resolve_opset("cpu", torch.float32, head_dim=16)
    assert opset.names["attention"] == ("cpp" if _ext.cpu_fused_ops()[0] else "sdpa")   # rpfm._C's, else SDPA
    assert opset.names["adaln_modulate"] == ("cpp" if _ext.HAS_EXT else "cpu")   # rpfm.ops.cpu's fewer-pass tiers
    assert "triton" not in opset.names.values() and "cublaslt" not in opset.names.values()


def test_report_covers_every_op():
    rep = ops.report()
    for op in ops.OP_NAMES:
        assert op in rep and rep[op]["selected_cpu"]


def test_model_uses_forced_backend(tiny_model):
    # the model resolves once and caches; forcing math attention after reset must give the same result
    from .conftest import tiny_inputs

    inp = tiny_inputs(tiny_model.config, 2)
    cond = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    v_auto = tiny_model.velocity(inp["x"], inp["t"], cond)
    with use_backend("attention", "math"):
        tiny_model.reset_backends()
        v_math = tiny_model.velocity(inp["x"], inp["t"], cond)
        assert tiny_model.opset(inp["x"].device, inp["x"].dtype).names["attention"] == "math"
    tiny_model.reset_backends()
    torch.testing.assert_close(v_auto, v_math, rtol=1e-5, atol=1e-5)
