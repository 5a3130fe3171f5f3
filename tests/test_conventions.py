"""diffusers conventions on RPFMPipeline: argument names and aliases, generators per sample, latents=, step
callbacks, the progress bar, .to(), torch_dtype, model CPU offload, raw-module errors, and "demo"."""
import pytest
import torch
from diffusers import AutoencoderKL
from transformers import Dinov2Config, Dinov2Model

from rpfm import RPFMPipeline
from rpfm.codec import PixelCodec
from rpfm.demo import ASSET_DIR, demo_config
from rpfm.model import RPFM

from .conftest import randomize


@pytest.fixture(scope="module")
def pipe():
    p = RPFMPipeline(randomize(RPFM(demo_config()), std=0.03), PixelCodec(downsample=4))
    p.set_progress_bar_config(disable=True)
    return p


def _inputs(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1, torch.rand(batch, 3, 64, 64, generator=g)


def _latent(pipe, src, pose, **kw):
    return pipe(src, pose, output_type="latent", **kw).images


def test_num_inference_steps_and_its_alias(pipe):
    src, pose = _inputs()
    a = _latent(pipe, src, pose, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    b = _latent(pipe, src, pose, num_steps=3, generator=torch.Generator().manual_seed(0))
    c = _latent(pipe, src, pose, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert pipe(src, pose, num_inference_steps=3, output_type="latent").nfe == 3
    with pytest.raises(ValueError, match="num_inference_steps.*same option"):
        pipe(src, pose, num_inference_steps=3, num_steps=4)


def test_generator_list_gives_each_sample_its_own_noise(pipe):
    src, pose = _inputs(2)
    both = _latent(pipe, src, pose, num_inference_steps=2,
                   generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    for i, seed in enumerate((1, 2)):
        one = _latent(pipe, src[i:i + 1], pose[i:i + 1], num_inference_steps=2,
                      generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="generator: got a list of 1 generators for a batch of 2"):
        pipe(src, pose, generator=[torch.Generator()])
    with pytest.raises(TypeError, match="generator"):
        pipe(src, pose, generator=7)


def test_latents_are_the_initial_noise(pipe):
    src, pose = _inputs()
    cfg = pipe.config
    noise = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size,
                        generator=torch.Generator().manual_seed(5))
    a = _latent(pipe, src, pose, num_inference_steps=2, latents=noise)
    b = _latent(pipe, src, pose, num_inference_steps=2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"latents: expected shape \(1, 48, 16, 16\)"):
        pipe(src, pose, latents=torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match="either latents= .* or generator="):
        pipe(src, pose, latents=noise, generator=torch.Generator())


def test_callback_on_step_end_sees_every_step_and_can_replace_latents(pipe):
    src, pose = _inputs()
    seen = []

    def record(p, step, t, kwargs):
        assert p is pipe
        seen.append((step, float(t), kwargs["latents"].clone()))
        return kwargs

    # A callback forces the Python loop: compare with that loop bitwise, and with the default (the C++ loop with
    # hoisted per-step tables on CPU) up to float reassociation.
    ref = _latent(pipe, src, pose, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                  sampler_backend="eager")
    fast = _latent(pipe, src, pose, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    out = _latent(pipe, src, pose, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                  callback_on_step_end=record)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3]
    assert [t for _, t, _ in seen] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    torch.testing.assert_close(seen[-1][2], out, rtol=0, atol=0)    # the last step's latents are the result
    torch.testing.assert_close(out, ref, rtol=0, atol=0)            # a callback that changes nothing changes nothing
    torch.testing.assert_close(out, fast, rtol=1e-4, atol=1e-5)

    def zero_last(p, step, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 3 else kwargs

    assert _latent(pipe, src, pose, num_inference_steps=4, callback_on_step_end=zero_last).abs().max() == 0

    def replace(p, step, t, kwargs):
        return {"latents": kwargs["latents"] * 0}

    calls = []
    pipe(src, pose, solver="dopri5", output_type="latent",
         callback_on_step_end=lambda p, s, t, kw: calls.append(s) or kw)
    assert len(calls) > 5
    with pytest.raises(ValueError, match="dopri5.*cannot take replaced latents"):
        pipe(src, pose, solver="dopri5", callback_on_step_end=replace)
    with pytest.raises(RuntimeError, match="per-step callback"):
        pipe(src, pose, num_inference_steps=2, callback_on_step_end=record, sampler_backend="graph")
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(src, pose, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_progress_bar_and_its_config(pipe, capsys):
    src, pose = _inputs()
    pipe.set_progress_bar_config(desc="sampling-test")
    try:
        pipe(src, pose, num_inference_steps=3, output_type="latent")
        err = capsys.readouterr().err
        assert "sampling-test" in err and "3/3" in err
        pipe.set_progress_bar_config(disable=True)
        pipe(src, pose, num_inference_steps=3, output_type="latent")
        assert capsys.readouterr().err == ""
        with pytest.raises(TypeError, match="unknown options \\['colour_me'\\]"):
            pipe.set_progress_bar_config(colour_me=True)
    finally:
        pipe.set_progress_bar_config(disable=True)


def test_to_accepts_dtype_and_device_in_any_order(tmp_path):
    p = RPFMPipeline(RPFM(demo_config()), PixelCodec(downsample=4))
    assert p.to(torch.bfloat16).dtype == torch.bfloat16
    assert p.to("cpu", torch.float32).dtype == torch.float32
    assert p.to(torch.float16, "cpu").dtype == torch.float16 and p.device.type == "cpu"
    with pytest.raises(TypeError, match="to\\(\\): unexpected argument 3"):
        p.to(3)
    p.to(torch.float32).save_pretrained(tmp_path / "p")
    assert RPFMPipeline.from_pretrained(tmp_path / "p", torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="torch_dtype.*same option"):
        RPFMPipeline.from_pretrained(tmp_path / "p", torch_dtype=torch.bfloat16, dtype=torch.float16)


def test_raw_diffusers_and_transformers_modules_are_refused_with_the_wrapper_to_use():
    cfg = demo_config().replace(latent_channels=4, latent_downsample=8)
    vae = AutoencoderKL(block_out_channels=(8,), layers_per_block=1, norm_num_groups=8, latent_channels=4)
    with pytest.raises(TypeError, match=r"codec: expected an rpfm.codec.LatentCodec, got .*AutoencoderKL; wrap it: "
                                        r"rpfm.codec.SDVAECodec\(vae\)"):
        RPFMPipeline(RPFM(cfg), vae)
    dino = Dinov2Model(Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    with pytest.raises(TypeError, match=r"pose_encoder: .*Dinov2Model; wrap it: rpfm.features.GlobalFeatureExtractor"):
        RPFMPipeline(RPFM(demo_config()), PixelCodec(downsample=4), dino)
    with pytest.raises(TypeError, match="model: expected an rpfm.RPFM"):
        RPFMPipeline(torch.nn.Linear(2, 2), PixelCodec(downsample=4))


def test_model_cpu_offload_moves_components_only_for_their_stage(pipe, monkeypatch):
    src, pose = _inputs()
    ref = _latent(pipe, src, pose, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    p = RPFMPipeline(pipe.model, PixelCodec(downsample=4))
    p.set_progress_bar_config(disable=True)
    moves = []
    real_to = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        if module is p.codec:
            moves.append(str(args[0] if args else kwargs.get("device")))
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    p.enable_model_cpu_offload(device="cpu")
    moves.clear()
    out = p(src, pose, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent")
    torch.testing.assert_close(out.images, ref, rtol=0, atol=0)
    # encode source, encode pose, (no decode for latents): each visit goes to the device and back to the CPU
    assert moves == ["cpu", "cpu"] * 2
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="enable_model_cpu_offload.*not available"):
            p.enable_model_cpu_offload()


def test_from_pretrained_demo_and_a_local_demo_folder_wins(tmp_path, monkeypatch):
    shipped = RPFMPipeline.from_pretrained("demo")
    assert shipped.config == RPFMPipeline.from_pretrained(ASSET_DIR).config
    monkeypatch.chdir(tmp_path)
    mine = RPFMPipeline(RPFM(demo_config().replace(depth=1, hidden_size=36, num_heads=3)), PixelCodec(downsample=4))
    mine.save_pretrained("demo")
    assert mine.config != shipped.config
    assert RPFMPipeline.from_pretrained("demo").config == mine.config
    with pytest.raises(FileNotFoundError, match="no folder at 'not-here'"):
        RPFMPipeline.from_pretrained("not-here")


def test_untrained_factory_is_named_so_and_the_old_name_warns():
    from rpfm import demo

    pipe = demo.untrained_demo_pipeline()
    assert isinstance(pipe, RPFMPipeline)
    with pytest.warns(FutureWarning, match="UNTRAINED.*from_pretrained\\('demo'\\)"):
        demo.demo_pipeline()
