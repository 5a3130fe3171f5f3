"""RPFMPipeline end to end on tiny random components: save/load, determinism, batching, and bad input."""
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from rpfm import RPFMOutput, RPFMPipeline, _ext
from rpfm.codec import PixelCodec, SDVAECodec
from rpfm.config import tiny_config
from rpfm.features import GlobalFeatureExtractor
from rpfm.flow import GuidedVelocity
from rpfm.model import RPFM
from rpfm.samplers import euler

from .conftest import randomize


def _tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         sample_size=64)


def _tiny_dino(hidden: int) -> GlobalFeatureExtractor:
    torch.manual_seed(hidden)
    return GlobalFeatureExtractor(Dinov2Model(Dinov2Config(hidden_size=hidden, num_hidden_layers=1,
                                                           num_attention_heads=2, intermediate_size=32,
                                                           image_size=224, patch_size=14)))


@pytest.fixture(scope="module")
def pipe() -> RPFMPipeline:
    cfg = tiny_config(pose_feature_dim=16, source_feature_dim=24)
    model = randomize(RPFM(cfg))
    return RPFMPipeline(model, SDVAECodec(_tiny_vae()), _tiny_dino(16), _tiny_dino(24))


def _inputs(batch: int = 1, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    pose = torch.rand(batch, 3, size, size, generator=g)
    return src, pose


def test_call_returns_images_and_is_deterministic(pipe):
    src, pose = _inputs(2)
    out = pipe(src, pose, num_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt")
    assert isinstance(out, RPFMOutput) and out.images.shape == (2, 3, 64, 64) and out.nfe == 3
    assert 0 <= out.images.min() and out.images.max() <= 1
    again = pipe(src, pose, num_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt")
    torch.testing.assert_close(out.images, again.images, rtol=0, atol=0)
    other = pipe(src, pose, num_steps=3, generator=torch.Generator().manual_seed(2), output_type="pt")
    assert not torch.allclose(out.images, other.images)
    assert out.backends["sampler"] == ("cpp-loop-euler" if _ext.HAS_EXT else "eager-euler")


def test_pipeline_equals_manual_composition(pipe):
    """The pipeline is exactly: encode condition once, Euler on the batched-CFG velocity, decode."""
    src, pose = _inputs(1)
    out = pipe(src, pose, num_steps=4, guidance_scale=1.3, generator=torch.Generator().manual_seed(3),
               output_type="latent")
    with torch.no_grad():
        z_s = pipe.codec.encode(src)
        z_p = pipe.codec.encode(pose * 2 - 1)
        cond = pipe.model.prepare_condition(z_s=z_s, z_p=z_p, f_pose=pipe.pose_encoder(pose),
                                            f_src=pipe.source_encoder(src))
        x1 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
        expected = euler(GuidedVelocity(pipe.model, cond, 1.3), x1, num_steps=4).x0
    torch.testing.assert_close(out.images, expected)


def test_output_types_and_accepted_inputs(pipe):
    src, pose = _inputs(1)
    pil_src = Image.fromarray(((src[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    np_pose = (pose[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = pipe(pil_src, np_pose, num_steps=1, output_type="pil")
    assert isinstance(out.images[0], Image.Image) and out.images[0].size == (64, 64)
    arr = pipe(src, pose, num_steps=1, output_type="np").images
    assert arr.shape == (1, 64, 64, 3) and arr.dtype == np.float32
    (imgs,) = pipe(src, pose, num_steps=1, return_dict=False)
    assert len(imgs) == 1


def test_heun_and_dopri5_run(pipe):
    src, pose = _inputs(1)
    assert pipe(src, pose, num_steps=2, solver="heun", output_type="latent").nfe == 4
    nfe = pipe(src, pose, solver="dopri5", guidance_scale=1.0, output_type="latent", atol=1e-3, rtol=1e-3).nfe
    assert (nfe - 2) % 6 == 0


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert meta["model"]["hidden_size"] == 32 and meta["pose_encoder"] == "pose_encoder"
    loaded = RPFMPipeline.from_pretrained(tmp_path / "p")
    src, pose = _inputs(1)
    a = pipe(src, pose, num_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    b = loaded(src, pose, num_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list((tmp_path / "p").glob("**/*.tmp"))   # atomic writes leave no temporaries


def test_to_dtype(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    p16 = RPFMPipeline.from_pretrained(tmp_path / "p", dtype=torch.bfloat16)
    assert p16.dtype == torch.bfloat16
    src, pose = _inputs(1)
    out = p16(src, pose, num_steps=2, output_type="pt").images
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_steps=0), ValueError, "num_steps"),
    (dict(guidance_scale=-1.0), ValueError, "guidance_scale"),
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale"),
    (dict(solver="ddim"), ValueError, "unknown solver 'ddim'"),
    (dict(output_type="jpeg"), ValueError, "output_type"),
    (dict(sampler_backend="fast"), ValueError, "sampler_backend"),
])
def test_bad_arguments(pipe, kwargs, exc, match):
    src, pose = _inputs(1)
    with pytest.raises(exc, match=match):
        pipe(src, pose, **kwargs)


def test_bad_images(pipe):
    src, pose = _inputs(1)
    with pytest.raises(ValueError, match="source_image"):
        pipe(torch.rand(1, 3, 32, 32) * 2 - 1, pose, num_steps=1)             # wrong size
    with pytest.raises(ValueError, match="target_pose"):
        pipe(src, torch.rand(1, 4, 64, 64), num_steps=1)                      # wrong channel count
    with pytest.raises(ValueError, match="target_pose: batch size 2"):
        pipe(src, torch.rand(2, 3, 64, 64), num_steps=1)                      # batches disagree
    with pytest.raises(ValueError, match="source_image"):
        pipe(src * 200, pose, num_steps=1)                                    # [0, 255] floats, not [-1, 1]
    with pytest.raises(TypeError, match="source_image"):
        pipe(12, pose, num_steps=1)
    with pytest.raises((TypeError, ValueError), match="target_pose"):
        pipe(src, (pose * 100).to(torch.int32), num_steps=1)                 # integer dtype that is not uint8


def test_resize_option(pipe):
    src, pose = _inputs(1, size=96)
    out = pipe(src, pose, num_steps=1, resize=True, output_type="pt")
    assert out.images.shape == (1, 3, 64, 64)


def test_config_weights_mismatch(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    cfg_file = tmp_path / "p" / "config.json"
    meta = json.loads(cfg_file.read_text())
    meta["model"]["depth"] = 3
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match the folder's config.json.*missing keys: blocks.2"):
        RPFMPipeline.from_pretrained(tmp_path / "p")


def test_missing_and_truncated_weights(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    weights = tmp_path / "p" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a valid safetensors"):
        RPFMPipeline.from_pretrained(tmp_path / "p")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        RPFMPipeline.from_pretrained(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="no folder"):
        RPFMPipeline.from_pretrained(tmp_path / "nowhere")


def test_component_mismatch_is_refused():
    with pytest.raises(ValueError, match="codec: produces 48-channel"):
        RPFMPipeline(RPFM(tiny_config()), PixelCodec(downsample=4))
    with pytest.raises(ValueError, match="pose_encoder: the model uses the global_pose branch"):
        RPFMPipeline(RPFM(tiny_config()), SDVAECodec(_tiny_vae()))


def test_unknown_dtype(pipe):
    with pytest.raises(TypeError, match="dtype"):
        pipe.to(dtype=torch.int8)
