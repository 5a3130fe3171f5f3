"""The flow-matching trainer (spec §1 loss, §6 recipe): ``Trainer(cfg).fit()`` or ``train(cfg)``.

One optimizer step:

1. ``grad_accum`` micro-batches. For each: encode target, source and pose (2p - 1) with the frozen codec under
   no_grad (``sample=True``, as X-MDPT/LFM), DINOv2 tokens when the model uses the global branches (or read all of
   it from the feature cache); draw t ~ U(0, 1), the noise z1 and the condition keep-mask (p = ``cond_drop``) for
   the global batch and keep this rank's slice; loss = ``rpfm.flow.flow_matching_loss`` under bf16 autocast on GPU;
   backward of loss / grad_accum (DDP all-reduces on the last micro-batch only).
2. Stop with :class:`NonFiniteLossError` if the loss or the gradient norm is not finite (before the update, so no
   checkpoint ever holds its effect).
3. Optional clipping, AdamW (constant LR), EMA update, log, sample grid, checkpoint.

Randomness comes only from explicit generators whose states are checkpointed, so a resumed run repeats the
uninterrupted one exactly (bitwise on CPU in fp32):

- ``flow`` (shared by all ranks): per micro-batch, in this order, t (B,), the noise (B, C, h, w) and the keep mask
  (B,) for the global batch B, drawn on the CPU;
- ``codec`` (per rank, seeded from (seed, rank)): codec posterior sampling (SD-VAE; the pixel codec ignores it);
- data order: a DistributedSampler permutation per epoch seeded with seed + epoch, and the count of consumed
  batches (see ``rpfm.train.data``);
- the initial weights: ``torch.manual_seed(seed)`` inside a forked RNG (the global RNG is left alone).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..codec import LatentCodec, load_codec
from ..config import RPFMConfig
from ..features import GlobalFeatureExtractor, load_feature_extractor
from ..fileio import atomic_write_json, check_output_folder, remove_stale_temporaries
from ..flow import condition_keep_mask, flow_matching_loss, sample_time
from ..model import RPFM
from . import checkpoint as ckpt_mod
from . import distributed
from . import feature_store
from .config import TrainConfig, from_dict, load_config
from .data import CachedFeatures, CachedImageFeatures, EpochBatchSampler, build_dataset, check_dataset
from .ema import EMA
from .logs import LOG_NAME, TrainLog, require_tensorboard, run_steps, sample_grid, save_png, truncate_log

logger = logging.getLogger("rpfm.train")

# The fused Triton kernels are forward-only: training runs the differentiable eager ops (attention stays on auto:
# SDPA / flash-attn / xformers all have a backward).
TRAIN_BACKENDS = {op: "eager" for op in ("adaln_modulate", "gated_residual_adaln", "patchify", "unpatchify",
                                         "gelu_tanh")}
# TrainConfig fields that may change on resume without changing the loss trajectory.
_RESUME_SAFE = {"out_dir", "steps", "log_every", "ckpt_every", "keep_checkpoints", "sample_every", "sample_steps",
                "num_samples", "num_workers", "tensorboard", "progress", "resume", "device", "feature_cache_dir"}


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; training stopped before the update."""


@dataclass
class TrainResult:
    step: int                       # optimizer steps completed
    loss: float | None              # loss of the last step run in this call (None if none ran)
    checkpoint: Path | None         # the newest checkpoint
    out_dir: Path


def _as_config(cfg: TrainConfig | dict | str | os.PathLike) -> TrainConfig:
    if isinstance(cfg, TrainConfig):
        return cfg
    if isinstance(cfg, dict):
        return from_dict(cfg)
    if isinstance(cfg, (str, os.PathLike)):
        return load_config(cfg)
    raise TypeError(f"train config: expected a TrainConfig, a dict or a config file path, got {type(cfg).__name__}.")


def build_codec(spec: dict | str, cfg: RPFMConfig) -> LatentCodec:
    codec = load_codec(spec)
    if codec.latent_channels != cfg.latent_channels or codec.downsample != cfg.latent_downsample:
        raise ValueError(f"codec: {spec!r} gives {codec.latent_channels}-channel latents at 1/{codec.downsample} "
                         f"resolution, but the model config has latent_channels={cfg.latent_channels}, "
                         f"latent_downsample={cfg.latent_downsample}. Make them agree (the pixel codec with "
                         f"downsample f has 3*f*f channels).")
    return codec


def build_encoders(train_cfg: TrainConfig, cfg: RPFMConfig) -> tuple[GlobalFeatureExtractor | None, ...]:
    out = []
    for name, branch, dim in (("pose_encoder", "global_pose", cfg.pose_feature_dim),
                              ("source_encoder", "global_source", cfg.source_feature_dim)):
        if branch not in cfg.branches:
            out.append(None)
            continue
        path = getattr(train_cfg, name)
        if path is None:
            raise ValueError(f"train config: '{name}' is required: the model uses the {branch} branch "
                             f"({dim}-d DINOv2 tokens). Give a DINOv2 folder, or drop {branch!r} from the model's "
                             f"branches.")
        enc = load_feature_extractor(path)
        if enc.feature_dim != dim:
            raise ValueError(f"{name}: '{path}' gives {enc.feature_dim}-d tokens, the model expects {dim}.")
        out.append(enc)
    return tuple(out)


class Trainer:
    """Train an RPFM model as configured. ``dataset`` overrides ``cfg.dataset`` (e.g. an in-memory dataset)."""

    def __init__(self, cfg: TrainConfig | dict | str | os.PathLike, *, dataset: Dataset | None = None):
        self.cfg = cfg = _as_config(cfg)
        self.model_config = mcfg = cfg.model_config()
        self.out_dir = check_output_folder(cfg.out_dir, "out_dir")   # before any work: not a file, writable
        self.codec = build_codec(cfg.codec, mcfg)
        self.pose_encoder, self.source_encoder = build_encoders(cfg, mcfg)
        self.raw_dataset = dataset if dataset is not None else build_dataset(cfg.dataset)
        check_dataset(self.raw_dataset, batch_size=cfg.batch_size, image_size=mcfg.image_size)

        if cfg.tensorboard:
            require_tensorboard()                             # fail before any work, not at the first log line
        self.env = env = distributed.setup(cfg.device)
        self.device = env.device
        if cfg.batch_size % env.world_size:
            raise ValueError(f"batch_size: {cfg.batch_size} (the global batch) is not divisible by the "
                             f"{env.world_size} processes; use a multiple of {env.world_size}.")
        self.autocast_dtype = self._resolve_precision()
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")        # TF32 for the fp32 parts (spec §6)
        self.codec.to(self.device)
        for enc in (self.pose_encoder, self.source_encoder):
            if enc is not None:
                enc.to(self.device)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = RPFM(mcfg)
        self.model.set_backends(**TRAIN_BACKENDS)
        self.model.to(self.device).train()
        self.ema = EMA(self.model, cfg.ema_decay)
        self.ema.module.set_backends()                        # sampling: automatic (fast) backends
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                           weight_decay=cfg.weight_decay)
        self.flow_gen = torch.Generator().manual_seed(distributed.seed_for(cfg.seed, "flow"))
        self.codec_gen = torch.Generator().manual_seed(distributed.seed_for(cfg.seed, "codec", env.rank))
        self.step = 0
        self.consumed = 0                                     # global micro-batches consumed
        self.last_checkpoint: Path | None = None
        self.batches_per_epoch = EpochBatchSampler.batches_per_epoch(len(self.raw_dataset), cfg.batch_size)
        self._sample_pipe = None
        self._log: TrainLog | None = None

        self._start_or_resume()
        self.ddp = distributed.wrap_model(self.model, env)
        self.dataset = self._build_cache() if cfg.feature_cache else self.raw_dataset

    # ------------------------------------------------------------------ setup
    def _resolve_precision(self) -> torch.dtype | None:
        p, cuda = self.cfg.precision, self.device.type == "cuda"
        if p == "fp32" or (p == "auto" and not cuda):
            return None
        if cuda and not torch.cuda.is_bf16_supported():
            if p == "bf16":
                raise ValueError("precision: 'bf16' was requested but this GPU does not support bfloat16. Use "
                                 "'fp32' (or 'auto').")
            return None
        return torch.bfloat16

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _start_or_resume(self) -> None:
        cfg, root = self.cfg, ckpt_mod.checkpoint_root(self.out_dir)
        if cfg.resume is False:
            existing = ckpt_mod.find_latest(root)
            if existing is not None:
                raise ValueError(f"out_dir: '{self.out_dir}' already holds checkpoints (newest: {existing.name}). "
                                 f"Pass --resume (resume=true) to continue that run, or choose another out_dir.")
            path = None
        elif cfg.resume is True:
            path = ckpt_mod.find_latest(root)
            if path is None:
                logger.info("resume: no checkpoint in '%s'; starting from step 0.", root)
        else:
            path = ckpt_mod.resolve_checkpoint(cfg.resume)
        if path is not None:
            self.load_state(ckpt_mod.load_checkpoint(path, model_config=self.model_config))
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir, ["train_config.json", LOG_NAME])   # left by a killed run
            remove_stale_temporaries(self.out_dir / "samples")
            ckpt_mod.remove_stale(root)
            truncate_log(self.out_dir / LOG_NAME, self.step)      # one trajectory: drop steps past the checkpoint
            atomic_write_json(self.out_dir / "train_config.json", cfg.to_dict())

    def load_state(self, ckpt: ckpt_mod.Checkpoint) -> None:
        """Restore model, EMA, optimizer, generators and data position from a verified checkpoint."""
        cfg = self.cfg
        self.model.load_state_dict(ckpt.model, strict=True)
        self.ema.load_state_dict(ckpt.ema)
        self.optimizer.load_state_dict(ckpt.optimizer)
        for group in self.optimizer.param_groups:             # the run's config wins over the saved hyper-parameters
            group.update(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.flow_gen.set_state(ckpt.rng["flow"])
        key = f"codec.rank{self.env.rank}"
        if key in ckpt.rng:
            self.codec_gen.set_state(ckpt.rng[key])
        else:
            logger.warning("resume: the checkpoint has no codec generator for rank %d (it was written by %d "
                           "processes); seeding it fresh.", self.env.rank, ckpt.state.get("world_size", 1))
        self.step = ckpt.step
        self.consumed = int(ckpt.state["consumed_batches"])
        self.last_checkpoint = ckpt.path
        saved = {k: v for k, v in ckpt.state.get("train_config", {}).items() if k not in _RESUME_SAFE}
        current = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_SAFE}
        diff = ckpt_mod.config_diff(saved, current)
        if diff:
            logger.warning("resume: the training config differs from the checkpoint's (%s); continuing with the new "
                           "values, so the run will not repeat the original trajectory.", "; ".join(diff))
        logger.info("resumed from '%s' at step %d.", ckpt.path, self.step)

    # ------------------------------------------------------------------ data
    @torch.no_grad()
    def encode_images(self, batch: dict[str, Tensor], generator: torch.Generator | None,
                      keys: tuple[str, ...] = ("z0", "z_s", "z_p", "f_pose", "f_src")) -> dict[str, Tensor]:
        """Images -> what the loss needs: z0, z_s, z_p (B, C, h, w) and f_pose / f_src (B, N, C') when used
        (only ``keys``; the codec draws its posterior samples in the order z0, z_s, z_p)."""
        dev = self.device
        src = batch["source"].to(dev, torch.float32, non_blocking=True)          # (B, 3, H, W) in [-1, 1]
        tgt = batch["target"].to(dev, torch.float32, non_blocking=True)          # (B, 3, H, W) in [-1, 1]
        pose = batch["target_pose"].to(dev, torch.float32, non_blocking=True)    # (B, 3, H, W) in [0, 1]
        out = {}
        for key, images in (("z0", tgt), ("z_s", src), ("z_p", pose * 2 - 1)):
            if key in keys:
                out[key] = self.codec.encode(images, sample=True, generator=generator).float()
        with self._autocast():
            if self.pose_encoder is not None and "f_pose" in keys:
                out["f_pose"] = self.pose_encoder(pose).float()                  # (B, 257, 768)
            if self.source_encoder is not None and "f_src" in keys:
                out["f_src"] = self.source_encoder(src).float()                  # (B, 257, 1536)
        return out

    def encode_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if "z0" in batch:                                                        # from the feature cache
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return self.encode_images(batch, self.codec_gen)

    @torch.no_grad()
    def _build_image_cache(self) -> CachedImageFeatures:
        """Pair datasets without augmentation: encode every image (and its skeleton) once, in sorted name order."""
        ds = self.raw_dataset
        names = sorted({n for pair in ds.pairs for n in pair})
        row = {n: i for i, n in enumerate(names)}
        pairs = torch.tensor([[row[s], row[t]] for s, t in ds.pairs], dtype=torch.int64).reshape(-1, 2)
        seed = distributed.seed_for(self.cfg.seed, "cache")
        step = max(1, self.cfg.batch_size // self.env.world_size)
        keys = ("z_s", "z_p", "f_pose", "f_src")
        store, key = self.cfg.feature_cache_dir, None
        if store:                          # the same data, encoders, seed and batching: load instead of encoding
            key = feature_store.cache_key((ds.image_and_pose(n) for n in names), codec=self.codec,
                                          pose_encoder=self.pose_encoder, source_encoder=self.source_encoder,
                                          seed=seed, batch=step, keys=keys)
            hit = feature_store.load(store, key)
            if hit is not None:
                logger.info("feature cache: %d images loaded from '%s'.", len(names),
                            feature_store.cache_path(store, key))
                return CachedImageFeatures(hit[0], pairs)
        gen = torch.Generator().manual_seed(seed)
        parts: dict[str, list[Tensor]] = {}
        for start in range(0, len(names), step):
            images, poses = zip(*(ds.image_and_pose(n) for n in names[start:start + step]))
            src = torch.stack(images)
            enc = self.encode_images({"source": src, "target": src, "target_pose": torch.stack(poses)}, gen,
                                     keys=keys)
            for ours, theirs in (("z", "z_s"), ("z_pose", "z_p"), ("f_pose", "f_pose"), ("f_src", "f_src")):
                if theirs in enc:
                    parts.setdefault(ours, []).append(enc[theirs].cpu())
        logger.info("feature cache: %d images encoded once for %d pairs.", len(names), len(pairs))
        images = {k: torch.cat(v) for k, v in parts.items()}
        if store and self.env.rank == 0:
            path = feature_store.save(store, key, images, pairs)
            logger.info("feature cache: saved to '%s'.", path)
        return CachedImageFeatures(images, pairs)

    @torch.no_grad()
    def _build_cache(self) -> CachedFeatures | CachedImageFeatures:
        """Encode the whole dataset once, in order, with a generator every rank seeds the same way."""
        if hasattr(self.raw_dataset, "image_and_pose") and not getattr(self.raw_dataset, "augment", True):
            return self._build_image_cache()
        gen = torch.Generator().manual_seed(distributed.seed_for(self.cfg.seed, "cache"))
        loader = DataLoader(self.raw_dataset, batch_size=self.cfg.batch_size // self.env.world_size, shuffle=False,
                            num_workers=self.cfg.num_workers)
        parts: dict[str, list[Tensor]] = {}
        for batch in loader:
            for k, v in self.encode_images(batch, gen).items():
                parts.setdefault(k, []).append(v.cpu())
        logger.info("feature cache: %d items encoded.", len(self.raw_dataset))
        return CachedFeatures({k: torch.cat(v) for k, v in parts.items()})

    def batches(self) -> Iterator[dict[str, Tensor]]:
        """This rank's micro-batches forever, from the current data position (``self.consumed``)."""
        cfg, env = self.cfg, self.env
        cached = isinstance(self.dataset, (CachedFeatures, CachedImageFeatures))
        while True:
            epoch, start = divmod(self.consumed, self.batches_per_epoch)
            if hasattr(self.raw_dataset, "set_epoch"):
                self.raw_dataset.set_epoch(epoch)
            sampler = EpochBatchSampler(self.dataset, batch_size=cfg.batch_size, rank=env.rank,
                                        world_size=env.world_size, seed=cfg.seed, epoch=epoch, start=start)
            workers = 0 if cached else cfg.num_workers
            loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers,
                                pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(
                                    distributed.seed_for(cfg.seed, "workers", env.rank, epoch)))
            yield from loader

    def draw_randomness(self) -> tuple[Tensor, Tensor, Tensor]:
        """t (b,), noise (b, C, h, w), keep mask (b,) for this rank's slice of one global micro-batch."""
        cfg, mcfg, env = self.cfg, self.model_config, self.env
        B = cfg.batch_size
        t = sample_time(B, generator=self.flow_gen)
        noise = torch.randn((B, mcfg.latent_channels, mcfg.latent_size, mcfg.latent_size), generator=self.flow_gen)
        keep = condition_keep_mask(B, p_drop=cfg.cond_drop, generator=self.flow_gen)
        mine = slice(env.rank, None, env.world_size)                              # global positions r, r + W, ...
        return t[mine].to(self.device), noise[mine].to(self.device), keep[mine].to(self.device)

    # ------------------------------------------------------------------ step
    def loss_fn(self, latents: dict[str, Tensor], t: Tensor, noise: Tensor, keep: Tensor) -> Tensor:
        """Eq. 6 on one micro-batch (runs under autocast)."""
        return flow_matching_loss(self.ddp, latents["z0"], z_s=latents["z_s"], z_p=latents["z_p"],
                                  f_pose=latents.get("f_pose"), f_src=latents.get("f_src"), keep_mask=keep, t=t,
                                  noise=noise)

    def train_step(self, batches: Iterator[dict[str, Tensor]]) -> tuple[float, float]:
        """One optimizer step (``grad_accum`` micro-batches). Returns (loss, grad norm before clipping)."""
        cfg, env = self.cfg, self.env
        self.model.train()
        losses = []
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            self.consumed += 1
            latents = self.encode_batch(batch)
            t, noise, keep = self.draw_randomness()
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not env.distributed) else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(latents, t, noise, keep)
                (loss / cfg.grad_accum).backward()
            losses.append(loss.detach().float())
        loss_value = distributed.all_reduce_mean(torch.stack(losses).mean(), env).item()
        grad_norm = self._grad_norm()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self._stop_nonfinite(self.step + 1, loss_value, grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        return loss_value, grad_norm

    def _grad_norm(self) -> float:
        if self.cfg.grad_clip is not None:
            return float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))
        grads = [p.grad for p in self.params if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))

    def _stop_nonfinite(self, step: int, loss: float, grad_norm: float) -> None:
        what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm} (loss {loss})"
        last = f"'{self.last_checkpoint}'" if self.last_checkpoint else "none (no checkpoint was written yet)"
        raise NonFiniteLossError(
            f"training stopped at step {step}: the {what}. The update was not applied and no checkpoint was written "
            f"after it; the last good checkpoint is {last}. Lower lr, set grad_clip, try precision \"fp32\" or check "
            f"the data, then resume from that checkpoint.")

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        """Train until ``cfg.steps`` optimizer steps, logging, sampling and checkpointing on the way."""
        cfg, env = self.cfg, self.env
        log = TrainLog(self.out_dir, total=cfg.steps, initial=self.step, log_every=cfg.log_every,
                       progress=cfg.progress, tensorboard=cfg.tensorboard, enabled=env.is_main)
        self._log = log
        loss = run_steps(self, log, self.batches(), steps=cfg.steps, sample_every=cfg.sample_every,
                         ckpt_every=cfg.ckpt_every, samples=env.is_main)
        return TrainResult(self.step, loss, self.last_checkpoint, self.out_dir)

    def close(self) -> None:
        distributed.cleanup(self.env)

    # ------------------------------------------------------------------ checkpoints and samples
    def save_checkpoint(self) -> Path:
        """Every rank calls this (generator states are gathered); rank 0 writes, between two barriers."""
        env = self.env
        for name, module in (("model", self.model), ("EMA", self.ema.module)):
            if not bool(torch.stack([torch.isfinite(p).all() for p in module.parameters()]).all()):
                raise NonFiniteLossError(f"step {self.step}: the {name} weights contain NaN/inf; not writing a "
                                         f"checkpoint. The last good checkpoint is {self.last_checkpoint or 'none'}.")
        codec_states = distributed.all_gather(self.codec_gen.get_state(), env)
        rng = {"flow": self.flow_gen.get_state(), **{f"codec.rank{r}": s for r, s in enumerate(codec_states)}}
        distributed.barrier(env)
        path = ckpt_mod.checkpoint_root(self.out_dir) / ckpt_mod.step_name(self.step)
        if env.is_main:
            path = ckpt_mod.save_checkpoint(
                self.out_dir, self.step, model=self.model.state_dict(), ema=self.ema.state_dict(),
                optimizer=self.optimizer.state_dict(), rng=rng, train_config=self.cfg.to_dict(),
                model_config=self.model_config, keep=self.cfg.keep_checkpoints,
                extra={"consumed_batches": self.consumed, "world_size": env.world_size,
                       "batches_per_epoch": self.batches_per_epoch})
        distributed.barrier(env)
        self.last_checkpoint = path
        return path

    def _sampling_pipeline(self):
        if self._sample_pipe is None:
            from ..pipeline import RPFMPipeline

            self._sample_pipe = RPFMPipeline(self.ema.module, self.codec, self.pose_encoder, self.source_encoder)
            self._sample_pipe.set_progress_bar_config(disable=True)   # the training bar is the one to watch
        return self._sample_pipe

    @torch.no_grad()
    def save_samples(self) -> Path:
        """A grid (source | target pose | generated with the EMA weights | ground truth) for the first
        ``num_samples`` dataset items, with fixed noise so grids of different steps are comparable."""
        cfg = self.cfg
        items = [self.raw_dataset[i] for i in range(min(cfg.num_samples, len(self.raw_dataset)))]
        src, pose, tgt = (torch.stack([it[k] for it in items]).float() for k in ("source", "target_pose", "target"))
        src, pose = src.clamp(-1, 1), pose.clamp(0, 1)        # e.g. interpolation overshoot from augmentation
        generator = torch.Generator().manual_seed(distributed.seed_for(cfg.seed, "samples"))
        out = self._sampling_pipeline()(src, pose, num_steps=cfg.sample_steps, guidance_scale=1.0,
                                        generator=generator, output_type="pt", sampler_backend="eager")
        image = sample_grid(src, pose, out.images, tgt)
        path = save_png(image, self.out_dir / "samples" / f"{ckpt_mod.step_name(self.step)}.png")
        if self._log is not None and self._log.tb is not None:
            import numpy as np

            self._log.tb.add_image("samples", np.asarray(image), self.step, dataformats="HWC")
        return path


def train(cfg: TrainConfig | dict | str | os.PathLike, *, dataset: Dataset | None = None) -> TrainResult:
    """Build a :class:`Trainer`, run it to ``cfg.steps``, and leave the process group (if it made one)."""
    trainer = Trainer(cfg, dataset=dataset)
    try:
        return trainer.fit()
    finally:
        trainer.close()

