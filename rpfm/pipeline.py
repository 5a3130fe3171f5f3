"""RPFMPipeline: source photo + target pose -> generated person image (diffusers conventions).

A pipeline folder (``save_pretrained`` / ``from_pretrained``)::

    config.json          {"model": RPFMConfig fields, "codec": {...}, "pose_encoder": "pose_encoder" | null,
                          "source_encoder": "source_encoder" | null, "rpfm_version": ...}
    model.safetensors    the RPFM weights (EMA weights for released models); never pickle
    codec/               the latent codec (a diffusers AutoencoderKL folder, or a weight-free pixel codec)
    pose_encoder/        DINOv2-B (transformers folder), when the model uses the global pose branch
    source_encoder/      DINOv2-G, when the model uses the global source branch
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import config as config_mod
from . import samplers
from .codec import LatentCodec, load_codec
from .components import check_component_types
from .features import GlobalFeatureExtractor, load_feature_extractor
from .fileio import (atomic_write_json, check_tensors, load_tensors, read_json, read_metadata,
                     remove_stale_temporaries, save_tensors)
from . import _ext
from .checks import Checks
from .flow import GuidedVelocity, check_guidance_scale
from .graph_sampler import GraphSamplerCache, log_fallback_once as _log_fallback_once
from .images import to_image_tensor, to_output
from .model import RPFM, Condition
from .noise import initial_noise
from .offload import onload
from .progress import ProgressBar, check_progress_options

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_KEYS = ("_class_name", "rpfm_version", "model", "codec", "pose_encoder", "source_encoder")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
SAMPLER_BACKENDS = ("auto", "graph", "eager")
GRAPH_SOLVERS = ("euler", "heun")


@dataclass
class RPFMOutput:
    """images: list of PIL images, (B, H, W, 3) float array in [0, 1], (B, 3, H, W) tensor in [0, 1], or the
    latents for ``output_type="latent"``. nfe: velocity evaluations (a batched CFG call counts once).
    backends: which implementation ran each op and the sampler, so timings are attributable."""

    images: Any
    nfe: int
    backends: dict = field(default_factory=dict)


class RPFMPipeline:
    """Pose-guided person image synthesis with RPFM.

    Example::

        pipe = RPFMPipeline.from_pretrained("demo")            # or a folder; .to("cuda", torch.bfloat16)
        out = pipe(source_image, target_pose, num_inference_steps=60, guidance_scale=1.1,
                   generator=torch.Generator().manual_seed(0))
        out.images[0].save("out.png")
    """

    def __init__(self, model: RPFM, codec: LatentCodec, pose_encoder: GlobalFeatureExtractor | None = None,
                 source_encoder: GlobalFeatureExtractor | None = None):
        check_component_types(model, codec, pose_encoder, source_encoder)
        cfg = model.config
        if codec.latent_channels != cfg.latent_channels or codec.downsample != cfg.latent_downsample:
            raise ValueError(f"codec: produces {codec.latent_channels}-channel latents at 1/{codec.downsample} "
                             f"resolution but the model expects latent_channels={cfg.latent_channels}, "
                             f"latent_downsample={cfg.latent_downsample}. Use the codec the model was trained with.")
        for name, enc, needed, dim in (("pose_encoder", pose_encoder, "global_pose", cfg.pose_feature_dim),
                                       ("source_encoder", source_encoder, "global_source", cfg.source_feature_dim)):
            if needed in cfg.branches and enc is None:
                raise ValueError(f"{name}: the model uses the {needed} branch and needs a feature extractor with "
                                 f"{dim}-d tokens; got None.")
            if enc is not None and enc.feature_dim != dim:
                raise ValueError(f"{name}: gives {enc.feature_dim}-d tokens, the model expects {dim}.")
        self.model = model.eval()
        self.codec = codec.eval()
        self.pose_encoder = pose_encoder.eval() if pose_encoder is not None else None
        self.source_encoder = source_encoder.eval() if source_encoder is not None else None
        self._graphs = GraphSamplerCache()   # captured samplers per shape; rebuilt when weights move
        self._offload_device: torch.device | None = None   # set by enable_model_cpu_offload()
        self._progress_config: dict[str, Any] = {}

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> config_mod.RPFMConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.pos_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.pos_embed.dtype

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.codec, self.pose_encoder, self.source_encoder) if m is not None]

    def to(self, *args: Any, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> "RPFMPipeline":
        """Move every component (model, codec, feature extractors) to a device and/or dtype, in any order, like
        ``torch.nn.Module.to``: ``pipe.to("cuda")``, ``pipe.to(torch.bfloat16)``, ``pipe.to("cuda", torch.bfloat16)``.
        A device move ends model CPU offload (see :meth:`enable_model_cpu_offload`)."""
        for arg in args:
            if arg is None:
                continue
            if isinstance(arg, torch.dtype) and dtype is None:
                dtype = arg
            elif isinstance(arg, (str, torch.device)) and not isinstance(arg, torch.dtype) and device is None:
                device = arg
            else:
                raise TypeError(f"to(): unexpected argument {arg!r}. Pass at most one device (e.g. 'cuda') and one "
                                "dtype (e.g. torch.bfloat16), positionally or as device=/dtype=.")
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {dtype}.")
        if device is not None:
            device = check_device(device)
            self._offload_device = None
        for m in self._modules():
            m.to(device=device, dtype=dtype)
        self.model.reset_backends()
        self._graphs.clear()
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> "RPFMPipeline":
        """Keep the codec and the DINOv2 encoders in CPU memory and move each to ``device`` only for its stage
        (encode source, encode pose, decode); the DiT stays on ``device``. Lowers peak device memory at the cost of
        weight copies per call (see ``rpfm.offload``). ``pipe.to(device)`` turns it off."""
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"enable_model_cpu_offload: device {str(device)!r} is not available on this machine "
                               "(no CUDA). Offload only helps with an accelerator; on a CPU simply use the pipeline.")
        self.model.to(device)
        for m in (self.codec, self.pose_encoder, self.source_encoder):
            if m is not None:
                m.to("cpu")
        self._offload_device = device
        self.model.reset_backends()
        self._graphs.clear()
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Options for the sampling progress bar (tqdm keywords), e.g. ``disable=True`` or ``desc="sampling"``."""
        self._progress_config = check_progress_options(kwargs)

    def progress_bar(self, total: int) -> ProgressBar:
        """A progress bar over ``total`` sampler steps, configured by :meth:`set_progress_bar_config`."""
        return ProgressBar(total, **{"desc": "rpfm", "unit": "step", "leave": False, **self._progress_config})

    def set_backends(self, **backends: str) -> "RPFMPipeline":
        """Require op backends, e.g. ``pipe.set_backends(attention="sdpa")`` (see the README's ops table);
        resolved now for the pipeline's device and dtype, raising with the reason and the fix if one cannot run.
        ``pipe.set_backends()`` returns to automatic selection."""
        self.model.set_backends(**backends)
        self._graphs.clear()
        self.model.opset(self.device, self.dtype)
        return self

    def stream(self, source_image: Any, *, num_steps: int = 10, guidance_scale: float = 1.1, solver: str = "euler",
               generator: torch.Generator | None = None, shared_noise: bool = True, output_type: str = "pil",
               sampler_backend: str = "auto", resize: bool = False):
        """A :class:`rpfm.streaming.PoseStreamer` for ``source_image``: ``frame = streamer(pose)`` per pose, with
        the source's latent, tokens and condition share computed once here. See ``rpfm.streaming``."""
        from .streaming import PoseStreamer

        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: unknown value {output_type!r}. Choose one of {list(OUTPUT_TYPES)}.")
        return PoseStreamer(self, source_image, num_steps=num_steps, guidance_scale=guidance_scale, solver=solver,
                            generator=generator, shared_noise=shared_noise, output_type=output_type,
                            sampler_backend=sampler_backend, resize=resize)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the pipeline folder (see the module docstring). Each file is written atomically."""
        from . import __version__

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path, [CONFIG_NAME, WEIGHTS_NAME])     # a killed save's
        self.codec.save_pretrained(path / "codec")
        for name in ("pose_encoder", "source_encoder"):
            enc = getattr(self, name)
            if enc is not None:
                enc.save_pretrained(path / name)
        state = {k: v for k, v in self.model.state_dict().items()}
        save_tensors(state, path / WEIGHTS_NAME, metadata={
            "format": "pt", "rpfm_version": __version__, "rpfm_config": json.dumps(config_mod.to_dict(self.config),
                                                                                    sort_keys=True),
            "rpfm_config_sha256": config_mod.fingerprint(self.config)})
        atomic_write_json(path / CONFIG_NAME, {
            "_class_name": "RPFMPipeline", "rpfm_version": __version__,
            "model": config_mod.to_dict(self.config), "codec": "codec",
            "pose_encoder": "pose_encoder" if self.pose_encoder is not None else None,
            "source_encoder": "source_encoder" if self.source_encoder is not None else None,
        })
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, torch_dtype: torch.dtype | None = None,
                        codec: LatentCodec | None = None, pose_encoder: GlobalFeatureExtractor | None = None,
                        source_encoder: GlobalFeatureExtractor | None = None) -> "RPFMPipeline":
        """Load a pipeline folder, or ``"demo"``: the demo model shipped with rpfm (a local folder named ``demo``
        wins). Components passed explicitly replace the folder's (e.g. an SD-VAE kept elsewhere). ``torch_dtype``
        (diffusers' name) and ``dtype`` are the same option. Weights are read with safetensors only."""
        from .demo import resolve_pretrained

        if torch_dtype is not None:
            if dtype is not None and dtype != torch_dtype:
                raise ValueError(f"torch_dtype: got torch_dtype={torch_dtype} and dtype={dtype}; they are the same "
                                 "option, pass one.")
            dtype = torch_dtype
        path = resolve_pretrained(path)
        if not path.is_dir():
            raise FileNotFoundError(f"from_pretrained: no folder at '{path}'. Pass the folder written by "
                                    f"save_pretrained() (it holds {CONFIG_NAME} and {WEIGHTS_NAME}).")
        meta = read_json(path / CONFIG_NAME, "pipeline config")
        if not isinstance(meta, dict) or "model" not in meta:
            raise ValueError(f"pipeline config: '{path / CONFIG_NAME}' has no 'model' section; it is not an rpfm "
                             f"pipeline folder.")
        unknown = sorted(k for k in meta if k not in CONFIG_KEYS)
        if unknown:
            warnings.warn(f"pipeline config: '{path / CONFIG_NAME}' has unknown keys {unknown}; they are ignored "
                          f"(known: {list(CONFIG_KEYS)}). Check them for typos.", UserWarning, stacklevel=2)
        cfg = config_mod.from_dict(meta["model"])
        model = RPFM(cfg)
        load_model_weights(model, path / WEIGHTS_NAME)
        if codec is None:
            codec = load_codec(path / (meta.get("codec") or "codec"))
        if pose_encoder is None and meta.get("pose_encoder"):
            pose_encoder = load_feature_extractor(path / meta["pose_encoder"])
        if source_encoder is None and meta.get("source_encoder"):
            source_encoder = load_feature_extractor(path / meta["source_encoder"])
        pipe = cls(model, codec, pose_encoder, source_encoder)
        if device is not None or dtype is not None:
            pipe.to(device, dtype)
        return pipe

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def encode_source(self, source_image: Any, *, resize: bool = False,
                      checks: Checks | None = None) -> tuple[Tensor, Tensor | None]:
        """The source's half of the condition: its latent z_s (B, C, h, w) and its share of the aggregation,
        g_s + l_s (B, 1, D) (None when both source branches are off). Computed once per source. ``checks``: where
        the value check of a device tensor input is deferred (``rpfm.checks``); None checks now."""
        cfg, dev, dt = self.config, self.device, self.dtype
        box = None
        if resize == "crop":
            from .framing import estimate_person_box

            box = ([estimate_person_box(s, owner=self) for s in source_image]    # None: centre crop
                   if isinstance(source_image, (list, tuple)) else estimate_person_box(source_image, owner=self))
        src = to_image_tensor(source_image, name="source_image", size=cfg.image_size, value_range="[-1,1]",
                              device=dev, dtype=dt, resize=resize, box=box, checks=checks)  # (B, 3, H, W), [-1, 1]
        with onload(self.codec, self._offload_device):
            z_s = self.codec.encode(src).to(dev, dt)                                # (B, C, h, w)
        f_src = None
        if "global_source" in cfg.branches:
            with onload(self.source_encoder, self._offload_device):
                f_src = self.source_encoder(src).to(dev, dt)                        # (B, 257, 1536)
        return z_s, self.model.source_branches(z_s=z_s, f_src=f_src)

    @torch.no_grad()
    def encode_pose(self, target_pose: Any, *, resize: bool = False, name: str = "target_pose",
                    checks: Checks | None = None) -> tuple[Tensor, Tensor | None]:
        """The pose's half: the pose latent z_p (B, C, h, w) and g_p + l_p (B, 1, D) (or None). Accepts
        keypoints or rendered skeletons (see ``__call__``)."""
        return self._encode_pose_tensor(self._pose_tensor(target_pose, resize=resize, name=name, checks=checks))

    def _pose_tensor(self, target_pose: Any, *, resize: bool = False, name: str = "target_pose",
                    checks: Checks | None = None) -> Tensor:
        """The rendered pose (B, 3, H, W) in [0, 1], in the pipeline's device and dtype."""
        cfg = self.config
        return to_image_tensor(_render_keypoints(target_pose, cfg.image_size, resize), name=name,
                               size=cfg.image_size, value_range="[0,1]", device=self.device, dtype=self.dtype,
                               resize=resize, checks=checks)                        # (B, 3, H, W) in [0, 1]

    @torch.no_grad()
    def _encode_pose_tensor(self, pose: Tensor) -> tuple[Tensor, Tensor | None]:
        """:meth:`encode_pose` from the rendered pose (B, 3, H, W) in [0, 1]: shapes only, no host sync (the
        streamer captures it in a CUDA graph)."""
        cfg, dev, dt = self.config, self.device, self.dtype
        with onload(self.codec, self._offload_device):
            z_p = self.codec.encode(pose * 2 - 1).to(dev, dt)                       # pose latent from [-1, 1]
        f_pose = None
        if "global_pose" in cfg.branches:
            with onload(self.pose_encoder, self._offload_device):
                f_pose = self.pose_encoder(pose).to(dev, dt)                        # (B, 257, 768)
        return z_p, self.model.pose_branches(z_p=z_p, f_pose=f_pose)

    @torch.no_grad()
    def encode_condition(self, source_image: Any, target_pose: Any, *, resize: bool = False,
                         checks: Checks | None = None) -> Condition:
        """Everything that depends only on (source, pose), computed once per sample (never per step):
        VAE latents of the source and the rendered pose, DINOv2 tokens, and the aggregated vector y."""
        z_s, source_part = self.encode_source(source_image, resize=resize, checks=checks)
        z_p, pose_part = self.encode_pose(target_pose, resize=resize, checks=checks)
        if z_s.shape[0] != z_p.shape[0]:
            raise ValueError(f"target_pose: batch size {z_p.shape[0]} does not match source_image batch size "
                             f"{z_s.shape[0]}. Pass one pose per source image (or a single one of each).")
        return self.model.combine_condition(source_part, pose_part, z_s=z_s, z_p=z_p)

    def prepare_noise(self, batch_size: int, generator: Any = None, latents: Tensor | None = None,
                      checks: Checks | None = None) -> Tensor:
        """x1 ~ N(0, I): (B, C, h, w) float32 (the ODE state is fp32 whatever the model's dtype), drawn on the
        generator's device (CPU if none) so seeds agree across devices; ``generator`` may be a list with one per
        sample; ``latents`` is the noise itself (see ``rpfm.noise``)."""
        cfg = self.config
        return initial_noise(batch_size, (cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                             generator=generator, latents=latents, device=self.device, dtype=torch.float32,
                             checks=checks)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, C, h, w) at t = 0 -> images (B, 3, H, W) float32, roughly in [-1, 1] (not clamped)."""
        with onload(self.codec, self._offload_device):
            return self.codec.decode(latents.to(self.dtype)).float()

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(self, source_image: Any, target_pose: Any, *, num_inference_steps: int | None = None,
                 guidance_scale: float = 1.1, solver: str = "euler", generator: Any = None,
                 latents: Tensor | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: Any = None, callback_on_step_end_tensor_inputs: list[str] | None = None,
                 sampler_backend: str = "auto", resize: bool | str = False, atol: float = 1e-5, rtol: float = 1e-5,
                 pose_from: str = "auto", pose_estimator: Any = None,
                 num_steps: int | None = None) -> RPFMOutput | tuple:
        """Generate the source person in the target pose.

        Args:
            source_image: the person photo: a PIL image, a path, an (H, W, 3) uint8/float array, a (3, H, W) or
                (B, 3, H, W) tensor in [-1, 1], or a list of PIL images. Must be image_size x image_size unless
                ``resize=True``.
            target_pose: the target pose, one per source: ``rpfm.pose.Keypoints`` (OpenPose-18, any frame; rendered
                with the X-MDPT renderer) or a list of them, or an already rendered skeleton image (RGB, values in
                [0, 1]; same accepted types as ``source_image``).
            num_inference_steps: fixed solver steps, default 60 (Euler: NFE = steps; Heun: 2 x). Ignored by
                dopri5. ``num_steps`` is the same option under its earlier name.
            guidance_scale: classifier-free guidance w >= 0; 1.0 skips the unconditional pass (paper: 1.1 at 256).
            solver: "euler", "heun" or "dopri5" (adaptive, atol/rtol).
            generator: a torch.Generator for reproducible noise, or a list with one per sample.
            latents: the initial noise x1 at t = 1, (B, C, h, w) (instead of drawing it with ``generator``).
            output_type: "pil", "np", "pt" or "latent".
            callback_on_step_end: ``fn(pipe, step, t, callback_kwargs) -> dict`` called after every solver step
                (diffusers' convention): ``callback_kwargs["latents"]`` is the state after the step, and a returned
                ``{"latents": x}`` replaces it. The CUDA-graph sampler cannot call Python per step, so a callback
                makes ``sampler_backend="auto"`` use the eager loop (``"graph"`` raises). With dopri5 it runs after
                every velocity evaluation and cannot replace the latents.
            callback_on_step_end_tensor_inputs: the tensors passed in ``callback_kwargs``; only ["latents"].
            sampler_backend: "auto" (the C++ CUDA-graph sampler on CUDA for fixed-step solvers when built, else
                eager), "graph" (require it) or "eager".
            pose_from: how to read ``target_pose``: "auto" (Keypoints are rendered, images are rendered skeletons),
                "keypoints", "image" (a rendered skeleton), or "photo": a photo of a person (PIL image, (H, W, 3)
                uint8 array, path, or a list) whose pose is estimated, mapped to the model frame and rendered.
            pose_estimator: the estimator for pose_from="photo" (``rpfm.pose.load_estimator(...)``); default
                BlazePose, built on first use and kept on the pipeline. A photo with nobody in it raises ValueError.

            resize: how to bring inputs of another size to image_size x image_size: False (refuse), "stretch"
                (or True), "crop" or "fit" (aspect kept); see ``rpfm.images``.

        Returns:
            :class:`RPFMOutput` (or ``(images,)`` when ``return_dict=False``). A progress bar runs over the steps
            (:meth:`set_progress_bar_config` configures or disables it).

        Raises:
            ValueError for a bad input (NaN/Inf, values outside the range). For device tensors the check is reduced
            on the device and read just before returning (``rpfm.checks``), so it does not stall the device.
        """
        num_steps = _steps_alias(num_inference_steps, num_steps)
        step_callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        guidance_scale = check_guidance_scale(guidance_scale)
        samplers.check_solver(solver)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: unknown value {output_type!r}. Choose one of {list(OUTPUT_TYPES)}.")
        if sampler_backend not in SAMPLER_BACKENDS:
            raise ValueError(f"sampler_backend: unknown value {sampler_backend!r}. Choose one of "
                             f"{list(SAMPLER_BACKENDS)}.")

        if pose_from != "auto" or pose_estimator is not None:
            from .pose.estimate import resolve_target_pose

            target_pose = resolve_target_pose(target_pose, pose_from, pose_estimator, owner=self)
        checks = Checks()       # value checks of device inputs: reduced on the device now, read before returning
        cond = self.encode_condition(source_image, target_pose, resize=resize, checks=checks)
        x1 = self.prepare_noise(cond.batch_size, generator, latents, checks=checks)
        with self.progress_bar(num_steps) if solver != "dopri5" else contextlib.nullcontext() as bar:
            x0, nfe, sampler_name = self._sample(cond, x1, num_steps=num_steps, guidance_scale=guidance_scale,
                                                 solver=solver, sampler_backend=sampler_backend, atol=atol,
                                                 rtol=rtol, callback=step_callback, progress=bar)
        if output_type == "latent":
            images = x0
        else:
            images = to_output(self.decode(x0), output_type, checks=checks)
        checks.resolve()        # waits only for the inputs' statistics (early in the stream); raises for a bad input
        backends = {**self.model.opset(self.device, self.dtype).names, "sampler": sampler_name}
        if not return_dict:
            return (images,)
        return RPFMOutput(images=images, nfe=nfe, backends=backends)

    def _graph_unavailable(self, solver: str) -> str | None:
        """Why the graph sampler cannot serve this call (None if it can)."""
        if solver not in GRAPH_SOLVERS:
            return f"solver={solver!r} is adaptive; the graph sampler runs fixed-step {list(GRAPH_SOLVERS)} only"
        if not _ext.HAS_EXT:
            return _ext.EXT_REASON
        if self.device.type == "cuda":
            return _ext.cuda_unsupported(self.device)   # no CUDA in the build, or not built for this GPU's arch
        return None

    def _auto_graph(self) -> bool:
        """Whether sampler_backend="auto" uses the graph sampler on this pipeline's device: the captured CUDA graph
        on GPUs, the same C++ loop (with the per-step work hoisted) on CPU."""
        return self.device.type in ("cuda", "cpu")

    def _step_callback(self, callback_on_step_end: Any, tensor_inputs: list[str] | None):
        """Adapt diffusers' ``callback_on_step_end(pipe, step, t, kwargs)`` to the samplers' ``(step, t, x)``."""
        if tensor_inputs is not None and (not isinstance(tensor_inputs, (list, tuple))
                                          or set(tensor_inputs) - {"latents"}):
            raise ValueError(f"callback_on_step_end_tensor_inputs: only ['latents'] is available, got "
                             f"{tensor_inputs!r}.")
        if callback_on_step_end is None:
            return None
        if not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end: expected a function fn(pipe, step, t, callback_kwargs) -> dict, "
                            f"got {type(callback_on_step_end).__name__}.")

        def step_callback(step: int, t: Tensor, x: Tensor) -> Tensor | None:
            out = callback_on_step_end(self, step, t, {"latents": x})
            if out is not None and not isinstance(out, dict):
                raise TypeError(f"callback_on_step_end: must return a dict (e.g. callback_kwargs) or None, got "
                                f"{type(out).__name__}.")
            new = (out or {}).get("latents", x)
            return None if new is x else new

        return step_callback

    def _sample(self, cond: Condition, x1: Tensor, *, num_steps: int, guidance_scale: float, solver: str,
                sampler_backend: str, atol: float, rtol: float, callback: Any = None,
                progress: ProgressBar | None = None) -> tuple[Tensor, int, str]:
        """Integrate from x1 (B, C, h, w) at t = 1 to t = 0: (x0, nfe, sampler name). ``callback(step, t, x)`` per
        step forces the eager loop; ``progress`` advances once per step (all at once after a graph replay)."""
        why_not = self._graph_unavailable(solver)
        if callback is not None and why_not is None:
            why_not = "a per-step callback needs the Python loop"
        if sampler_backend == "graph" and why_not:
            raise RuntimeError(f"sampler_backend='graph' is unavailable: {why_not}. Use sampler_backend='eager' "
                               f"(or 'auto', which falls back by itself).")
        guided = guidance_scale != 1.0
        key = self._graphs.key(x1, cond.y.dtype, num_steps=num_steps, guided=guided, solver=solver)
        if sampler_backend == "auto" and why_not is None:
            why_not = self._graphs.failure(key)      # capture failed for this key before: do not retry it
        use_graph = sampler_backend == "graph" or (sampler_backend == "auto" and why_not is None
                                                   and self._auto_graph())
        if use_graph:
            try:
                sampler = self._graphs.get(self.model, cond, x1, num_steps=num_steps, guided=guided, solver=solver)
                x0 = sampler(cond, x1, guidance_scale)
            except Exception as e:   # warm-up or capture failed: auto falls back (once, logged); graph re-raises
                if sampler_backend == "graph":
                    raise
                why_not = f"warm-up or capture failed for {key} ({type(e).__name__}: {e})"
                self._graphs.mark_failed(key, why_not)
                _log_fallback_once(why_not)
            else:
                if progress is not None:
                    progress.set(num_steps)
                kind = "cuda-graph" if self.device.type == "cuda" else "cpp-loop"
                return x0, sampler.nfe, f"{kind}-{solver}"
        if (sampler_backend == "auto" and why_not and callback is None and self.device.type == "cuda"
                and solver in GRAPH_SOLVERS):
            _log_fallback_once(why_not)
        step_fn = callback
        if progress is not None and solver != "dopri5":
            def step_fn(step: int, t: Tensor, x: Tensor) -> Tensor | None:
                progress.update(1)
                return callback(step, t, x) if callback is not None else None
        f = GuidedVelocity(self.model, cond, guidance_scale)
        result = samplers.sample(f, x1, solver=solver, num_steps=num_steps, atol=atol, rtol=rtol, callback=step_fn)
        return result.x0, result.nfe, f"eager-{solver}"


def _steps_alias(num_inference_steps: int | None, num_steps: int | None) -> int:
    """``num_inference_steps`` (diffusers) and ``num_steps`` (rpfm's earlier name) are one option; default 60."""
    if num_inference_steps is not None and num_steps is not None and num_inference_steps != num_steps:
        raise ValueError(f"num_inference_steps: got num_inference_steps={num_inference_steps} and "
                         f"num_steps={num_steps}; they are the same option (num_steps is the older name), pass one.")
    steps = num_inference_steps if num_inference_steps is not None else num_steps
    return samplers.check_num_steps(60 if steps is None else steps)


def load_model_weights(model: RPFM, path: Path) -> None:
    """Load safetensors weights into ``model``, refusing any mismatch with a list of what differs: keys, shapes,
    dtypes (an int64 tensor where the model has floats), NaN/Inf values, and -- for files that record it (written
    by save_pretrained since it does) -- a model config other than the one the weights were saved with."""
    state = load_tensors(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
                   for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        def head(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

        parts = [f"missing keys: {head(missing)}" if missing else "",
                 f"unexpected keys: {head(unexpected)}" if unexpected else "",
                 f"shape mismatches: {head(wrong)}" if wrong else ""]
        raise ValueError(f"weights: '{path}' does not match the folder's config.json ("
                         + "; ".join(p for p in parts if p) + "). The config and the weights come from different "
                         "models: re-save with save_pretrained(), or convert a checkpoint trained elsewhere with "
                         "`rpfm convert`.")
    _check_saved_config(read_metadata(path), model.config, path)
    check_tensors(state, expected, f"weights: '{path}'")
    model.load_state_dict(state, strict=True)


def _check_saved_config(meta: dict[str, str], config: config_mod.RPFMConfig, path: Path) -> None:
    """The config fingerprint in the weights' metadata must be the config's (files without one are not checked)."""
    saved = meta.get("rpfm_config_sha256")
    if saved is None or saved == config_mod.fingerprint(config):
        return
    try:
        fields = json.loads(meta.get("rpfm_config", ""))
        now = config_mod.to_dict(config)
        diff = "; ".join(f"{k}: weights {fields.get(k)!r} vs config.json {now.get(k)!r}"
                         for k in sorted(set(fields) | set(now)) if fields.get(k) != now.get(k))
    except (ValueError, AttributeError):
        diff = "the recorded config is unreadable"
    raise ValueError(f"weights: '{path}' were saved with another model config than the folder's config.json "
                     f"({diff}). Restore the config.json saved with these weights, or re-save the pipeline with "
                     "save_pretrained().")


def check_device(device: str | torch.device, *, name: str = "device") -> torch.device:
    """A torch.device that exists on this machine, or ValueError/RuntimeError (naming ``name``) saying why not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: {str(device)!r} is not a device name. Use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{name}: {str(device)!r} was requested but CUDA is not available on this machine "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Use cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"{name}: {str(device)!r} does not exist; this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s).")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"{name}: {str(device)!r} was requested but MPS is not available. Use cpu.")
    return dev


def _render_keypoints(target_pose: Any, image_size: int, resize: bool | str = False) -> Any:
    """Keypoints (or a list of them) -> rendered pose tensors (B, 3, S, S), framed into the model's square as a
    photo of their frame would be with ``resize`` ("crop": around the joints; "fit": padded; else stretched);
    anything else passes through."""
    from .framing import check_resize, model_pose_image
    from .pose.keypoints import Keypoints

    mode = check_resize(resize)
    if isinstance(target_pose, Keypoints):
        target_pose = [target_pose]
    if isinstance(target_pose, (list, tuple)) and target_pose and all(isinstance(k, Keypoints) for k in target_pose):
        blank = [i for i, k in enumerate(target_pose) if not k.inside_mask().any()]
        if blank:
            warnings.warn(f"target_pose: {len(blank)} of {len(target_pose)} poses (e.g. index {blank[:5]}) have no "
                          "joint inside their frame (all missing or off-image): the model gets a blank skeleton. "
                          "Check the keypoints' frame (image_size) and coordinates.", UserWarning, stacklevel=2)
        return torch.stack([model_pose_image(k, image_size, mode) for k in target_pose])
    return target_pose

