"""rpfm.vae.NativeAutoencoderKL against its reference, diffusers' AutoencoderKL: the same weights give the same
posterior, samples and decoded images; loading picks it without importing diffusers; unsupported configs and bad
folders fall back or fail clearly."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

from rpfm.codec import SDVAECodec, load_codec  # noqa: E402
from rpfm.vae import NativeAutoencoderKL, unsupported  # noqa: E402

CONFIGS = {
    # rpfm codec train's 128 demo shape: f = 4, 4 channels, mid attention, quant convs
    "f4": dict(block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=4),
    # SD-VAE's block layout (f = 8, 2 layers per block) at small width
    "f8-sd-layout": dict(block_out_channels=(8, 16, 16, 16), layers_per_block=2, latent_channels=4,
                         norm_num_groups=4),
    # no mid attention, no quant convs, one block (f = 1), other channel counts
    "bare": dict(block_out_channels=(12,), layers_per_block=1, latent_channels=3, norm_num_groups=3,
                 mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False),
}


def reference(name: str, folder) -> AutoencoderKL:
    kw = dict(CONFIGS[name])
    n = len(kw["block_out_channels"])
    torch.manual_seed(0)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                        **kw).eval()
    with torch.no_grad():                      # random, non-trivial norms and biases (defaults are 1 and 0)
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae.save_pretrained(folder, safe_serialization=True)
    return vae


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_native_matches_diffusers(name, tmp_path):
    ref = reference(name, tmp_path)
    native = NativeAutoencoderKL.from_pretrained(tmp_path)
    x = torch.rand(2, 3, 40, 24) * 2 - 1                                   # not square, multiple of f = 8
    with torch.no_grad():
        post_ref, post = ref.encode(x).latent_dist, native.encode(x).latent_dist
        torch.testing.assert_close(post.mode(), post_ref.mode(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(post.std, post_ref.std, rtol=1e-4, atol=1e-5)
        s_ref = post_ref.sample(torch.Generator().manual_seed(3))
        s = post.sample(torch.Generator().manual_seed(3))
        torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(native.decode(s).sample, ref.decode(s_ref).sample, rtol=1e-4, atol=1e-4)


def test_codec_loads_native_by_default_and_diffusers_on_request(tmp_path, monkeypatch):
    reference("f4", tmp_path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    native = SDVAECodec.from_pretrained(tmp_path, scaling_factor=0.5)
    ref = SDVAECodec.from_pretrained(tmp_path, scaling_factor=0.5, backend="diffusers")
    assert isinstance(native.vae, NativeAutoencoderKL) and isinstance(ref.vae, AutoencoderKL)
    assert (native.latent_channels, native.downsample) == (ref.latent_channels, ref.downsample) == (4, 4)
    z = native.encode(x)
    torch.testing.assert_close(z, ref.encode(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(native.decode(z), ref.decode(z), rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("RPFM_VAE_BACKEND", "diffusers")
    assert isinstance(SDVAECodec.from_pretrained(tmp_path).vae, AutoencoderKL)
    monkeypatch.setenv("RPFM_VAE_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"backend=.*'auto', 'native' or 'diffusers'.*'fast'"):
        SDVAECodec.from_pretrained(tmp_path)


def test_native_save_round_trips_and_diffusers_reads_it(tmp_path):
    reference("f4", tmp_path / "a")
    native = NativeAutoencoderKL.from_pretrained(tmp_path / "a")
    native.save_pretrained(tmp_path / "b")
    again = AutoencoderKL.from_pretrained(tmp_path / "b", local_files_only=True, use_safetensors=True)
    for k, v in native.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_unsupported_configs_fall_back_to_diffusers(tmp_path):
    assert unsupported({"act_fn": "gelu"}) and unsupported({"_class_name": "AutoencoderTiny"})
    assert unsupported({"block_out_channels": [8, 8], "down_block_types": ["DownEncoderBlock2D", "AttnDown"]})
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, act_fn="gelu").save_pretrained(tmp_path)
    codec = SDVAECodec.from_pretrained(tmp_path)
    assert isinstance(codec.vae, AutoencoderKL)
    with pytest.raises(ValueError, match=r"needs diffusers' AutoencoderKL \(act_fn 'gelu'"):
        SDVAECodec.from_pretrained(tmp_path, backend="native")


def test_bad_weights_name_the_problem(tmp_path):
    reference("f4", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "layers_per_block": 2}))
    with pytest.raises(ValueError, match=r"does not match its config.json \(missing \[.*resnets\.2"):
        SDVAECodec.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    w = tmp_path / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or not a valid safetensors"):
        SDVAECodec.from_pretrained(tmp_path)


def test_loading_a_native_codec_does_not_import_diffusers(tmp_path):
    reference("f4", tmp_path / "vae")
    (tmp_path / "vae" / "codec_config.json").write_text(json.dumps({"type": "sd-vae", "scaling_factor": 1.0}))
    code = ("import sys, torch; from rpfm.codec import load_codec; c = load_codec(sys.argv[1]); "
            "c.decode(c.encode(torch.zeros(1, 3, 16, 16))); print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "vae")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert isinstance(load_codec(tmp_path / "vae").vae, NativeAutoencoderKL)
