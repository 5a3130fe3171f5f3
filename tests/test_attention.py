"""Every available attention backend against the math reference; explicit selection; broken wheels."""
import pytest
import torch

from rpfm import _ext, ops
from rpfm.ops import registry
from rpfm.ops.reference import attention_ref
from rpfm.testing import assert_close_to_ref


def _available(device: str, dtype) -> list[str]:
    names = []
    for b in registry.backends("attention"):
        ok, _ = b.availability()
        if ok and b.check(device=device, dtype=dtype, head_dim=64) is None:
            names.append(b.name)
    return names


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CPU_AUTO_ATTENTION = "cpp" if _ext.cpu_fused_ops()[0] else "sdpa"    # rpfm._C's CPU kernel, else SDPA
DTYPES = [torch.float32] + ([torch.float16, torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, H, Dh", [(1, 17, 3, 64), (4, 64, 6, 64), (2, 256, 12, 64), (2, 33, 16, 72)])
def test_backends_match_math_reference(dtype, B, T, H, Dh):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v = (torch.randn(B, T, H, Dh, generator=g, device=DEVICE, dtype=dtype) for _ in range(3))
    truth = attention_ref(q, k, v, upcast=True)
    lowp = attention_ref(q, k, v)
    names = [n for n in _available(DEVICE, dtype)
             if registry._REGISTRY["attention"][n].check(device=DEVICE, dtype=dtype, head_dim=Dh) is None]
    assert "sdpa" in names and "math" in names
    for name in names:
        out = registry._REGISTRY["attention"][name].fn(q, k, v)
        assert out.shape == (B, T, H, Dh) and out.dtype == dtype
        assert_close_to_ref(out, truth, lowp, name=f"attention[{name}]")


def test_non_contiguous_inputs():
    qkv = torch.randn(2, 16, 3, 4, 32)
    q, k, v = qkv.unbind(2)               # views with a stride, as the model produces them
    for name in _available("cpu", torch.float32):
        torch.testing.assert_close(registry._REGISTRY["attention"][name].fn(q, k, v),
                                   attention_ref(q, k, v), rtol=1e-5, atol=1e-5)


def test_short_env_name(monkeypatch):
    monkeypatch.setenv("RPFM_ATTN_BACKEND", "math")
    assert ops.resolve("attention", device="cpu", dtype=torch.float32).name == "math"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_explicit_flash_without_cuda_explains():
    with ops.use_backend("attention", "flash_attn"), pytest.raises(RuntimeError, match="flash_attn"):
        ops.resolve("attention", device="cpu", dtype=torch.float16, head_dim=64)


def test_wheel_built_for_another_torch_is_marked_unavailable(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake_import(name, *a, **kw):
        if name == "flash_attn":
            raise OSError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")
        return real(name, *a, **kw)

    backend = registry._REGISTRY["attention"]["flash_attn"]
    monkeypatch.setattr(backend, "_probed", None)
    monkeypatch.setattr(importlib, "import_module", fake_import)
    ok, reason = backend.availability()
    assert not ok and "undefined symbol" in reason
    monkeypatch.setattr(backend, "_probed", None)   # re-probe for later tests


def test_pipeline_and_model_explicit_backends(tiny_model):
    from .conftest import tiny_inputs

    inp = tiny_inputs(tiny_model.config, 2)
    cond = tiny_model.prepare_condition(z_s=inp["z_s"], z_p=inp["z_p"], f_pose=inp["f_pose"], f_src=inp["f_src"])
    auto = tiny_model.velocity(inp["x"], inp["t"], cond)
    tiny_model.set_backends(attention="math")
    assert tiny_model.opset(inp["x"].device, inp["x"].dtype).names["attention"] == "math"
    torch.testing.assert_close(tiny_model.velocity(inp["x"], inp["t"], cond), auto, rtol=1e-5, atol=1e-5)
    tiny_model.set_backends(attention="xformers")
    with pytest.raises(RuntimeError, match="xformers"):
        tiny_model.opset(inp["x"].device, inp["x"].dtype)
    with pytest.raises(ValueError, match="unknown ops"):
        tiny_model.set_backends(attn="math")
    tiny_model.set_backends()
    assert tiny_model.opset(inp["x"].device, inp["x"].dtype).names["attention"] == CPU_AUTO_ATTENTION
