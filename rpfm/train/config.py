"""TrainConfig: one frozen dataclass for a training run, read from JSON (or YAML when PyYAML is installed).

The recipe defaults are spec §6: AdamW(lr 1e-4 constant, betas (0.9, 0.999), eps 1e-8, weight decay 0), EMA 0.9999
every optimizer step, condition dropout 0.1, no clipping, bf16 autocast on CUDA ("auto"), fp32 on CPU.

``batch_size`` is the **global** batch of one forward/backward pass, summed over all ranks (each of W ranks gets
batch_size / W samples); one optimizer step sees ``batch_size * grad_accum`` samples. The same config therefore
trains the same model (same data order, same t / noise / dropout per sample) on 1 GPU or on many.

Example (JSON)::

    {"model": "RPFM-B/2", "codec": "weights/sd-vae-ft-mse",
     "pose_encoder": "weights/dinov2-base", "source_encoder": "weights/dinov2-giant",
     "dataset": {"name": "folder", "root": "data/deepfashion"},
     "out_dir": "runs/rpfm-b2", "batch_size": 240, "steps": 200000}
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config as model_config_mod
from ..config import RPFMConfig
from .schedule import check_schedule

PRECISIONS = ("auto", "fp32", "bf16")
REQUIRED = ("model", "codec", "dataset", "out_dir", "batch_size", "steps")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Unknown keys and wrong types raise ``ValueError``."""

    model: str | dict                     # a preset name (rpfm.PRESETS) or a dict of RPFMConfig fields
    codec: dict | str                     # a load_codec() dict, e.g. {"type": "pixel", "downsample": 4}, or a folder
    dataset: dict                         # {"name": registered dataset, ...its options}
    out_dir: str                          # checkpoints/, log.jsonl, samples/ go here
    batch_size: int                       # global batch per forward pass (all ranks together)
    steps: int                            # optimizer steps in total (a resumed run stops at the same step)
    pose_encoder: str | None = None       # DINOv2-B folder; required when the model uses "global_pose"
    source_encoder: str | None = None     # DINOv2-G folder; required when the model uses "global_source"
    lr: float = 1e-4
    lr_decay_start: float | None = None   # None: constant lr (spec §6); f in [0, 1): cosine tail from f * steps
    lr_min_ratio: float = 0.0             # the tail ends at lr * lr_min_ratio (rpfm.train.schedule)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    cond_drop: float = 0.1                # probability of the null condition per sample (training only)
    grad_clip: float | None = None        # max global grad norm; None = no clipping (the norm is logged anyway)
    grad_accum: int = 1                   # forward/backward passes per optimizer step
    seed: int = 0
    precision: str = "auto"               # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"
    device: str = "auto"                  # "auto", "cpu", "cuda" (torchrun: cuda:LOCAL_RANK)
    log_every: int = 10                   # steps between JSONL log lines
    ckpt_every: int = 1000                # steps between checkpoints (and one at the last step)
    keep_checkpoints: int = 3             # the newest K are kept
    sample_every: int = 0                 # steps between sample grids (0 = never)
    sample_steps: int = 10                # Euler steps for the sample grids
    num_samples: int = 4                  # rows in a sample grid
    num_workers: int = 0                  # DataLoader worker processes per rank
    feature_cache: bool = False           # precompute latents / DINOv2 tokens once (augmentation-free datasets)
    feature_cache_dir: str | None = None  # keep that cache on disk here, keyed by data + encoders (pair folders)
    tensorboard: bool = False             # also log to out_dir/tensorboard (needs the tensorboard package)
    progress: bool = True                 # progress bar (tqdm if installed, else a plain line per log step)
    resume: bool | str = False            # True: the latest checkpoint in out_dir (if any); or a checkpoint path

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ helpers
    def model_config(self) -> RPFMConfig:
        """The RPFMConfig this run trains (a preset, or a dict of fields, optionally {"preset": ..., overrides})."""
        return resolve_model_config(self.model)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["betas"] = list(self.betas)
        return json.loads(json.dumps(out))     # deep copy, JSON types only

    def replace(self, **changes: Any) -> "TrainConfig":
        return from_dict({**self.to_dict(), **changes})


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from a dict; unknown or missing keys raise ValueError listing the valid ones."""
    if not isinstance(data, dict):
        raise ValueError(f"train config: expected a mapping of settings, got {type(data).__name__}.")
    valid = valid_keys()
    unknown = sorted(k for k in data if k not in valid)
    if unknown:
        raise ValueError(f"train config: unknown keys {unknown}. Valid keys: {valid}.")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"train config: missing required keys {missing}. Required: {list(REQUIRED)}; all valid "
                         f"keys: {valid}.")
    return TrainConfig(**data)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a .json or .yaml/.yml file (YAML needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no file at '{path}'.")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: '{path}' is not valid JSON ({e}).") from e
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ValueError(f"--config: '{path}' is YAML but PyYAML is not installed. Install it "
                             f"(pip install pyyaml) or write the config as JSON.") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--config: '{path}' is not valid YAML ({e}).") from e
    else:
        raise ValueError(f"--config: expected a .json, .yaml or .yml file, got '{path}'.")
    return from_dict(data)


def resolve_model_config(spec: str | dict) -> RPFMConfig:
    if isinstance(spec, str):
        return model_config_mod.get_preset(spec)
    spec = dict(spec)
    preset = spec.pop("preset", None)
    if preset is not None:
        return model_config_mod.get_preset(preset).replace(**spec)
    return model_config_mod.from_dict(spec)


# ---------------------------------------------------------------------------------------------------- checks
def _fail(name: str, expected: str, got: Any) -> None:
    raise ValueError(f"train config: '{name}' must be {expected}, got {got!r} ({type(got).__name__}).")


def _int(cfg: TrainConfig, name: str, minimum: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        _fail(name, f"an int >= {minimum}", v)


def _float(cfg: TrainConfig, name: str, lo: float, hi: float, *, lo_open: bool = False,
           hi_open: bool = False) -> None:
    v = getattr(cfg, name)
    # PyYAML reads 1e-4 (no dot) as a string; accept numeric strings for float fields.
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    lo_s, hi_s = ("(" if lo_open else "["), (")" if hi_open else "]")
    expected = f"a number in {lo_s}{lo}, {hi}{hi_s}"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(name, expected, getattr(cfg, name))
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        _fail(name, expected, getattr(cfg, name))
    object.__setattr__(cfg, name, float(v))


def _bool(cfg: TrainConfig, name: str) -> None:
    if not isinstance(getattr(cfg, name), bool):
        _fail(name, "true or false", getattr(cfg, name))


def _validate(cfg: TrainConfig) -> None:
    if not isinstance(cfg.model, (str, dict)):
        _fail("model", f"a preset name (one of {sorted(model_config_mod.PRESETS)}) or a dict of RPFMConfig fields",
              cfg.model)
    try:
        resolve_model_config(cfg.model)
    except (ValueError, TypeError) as e:
        raise ValueError(f"train config: 'model' is not a valid model config: {e}") from e
    if not isinstance(cfg.codec, (str, dict)):
        _fail("codec", 'a load_codec dict such as {"type": "pixel", "downsample": 4} or a codec folder path',
              cfg.codec)
    for name in ("pose_encoder", "source_encoder"):
        if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), str):
            _fail(name, "a DINOv2 folder path or null", getattr(cfg, name))
    if not isinstance(cfg.dataset, dict) or not isinstance(cfg.dataset.get("name"), str):
        _fail("dataset", 'a dict with a "name" (e.g. {"name": "tensors", "path": "pairs.safetensors"})',
              cfg.dataset)
    if not isinstance(cfg.out_dir, str) or not cfg.out_dir:
        _fail("out_dir", "a folder path", cfg.out_dir)
    for name, minimum in (("batch_size", 1), ("steps", 1), ("grad_accum", 1), ("seed", 0), ("log_every", 1),
                          ("ckpt_every", 1), ("keep_checkpoints", 1), ("sample_every", 0), ("sample_steps", 1),
                          ("num_samples", 1), ("num_workers", 0)):
        _int(cfg, name, minimum)
    _float(cfg, "lr", 0.0, math.inf, lo_open=True, hi_open=True)
    check_schedule(cfg, _fail)
    _float(cfg, "eps", 0.0, math.inf, lo_open=True, hi_open=True)
    _float(cfg, "weight_decay", 0.0, math.inf, hi_open=True)
    _float(cfg, "ema_decay", 0.0, 1.0)
    _float(cfg, "cond_drop", 0.0, 1.0)
    betas = cfg.betas
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 for b in betas)):
        _fail("betas", "a pair of numbers in [0, 1), e.g. [0.9, 0.999]", betas)
    object.__setattr__(cfg, "betas", (float(betas[0]), float(betas[1])))
    if cfg.grad_clip is not None:
        _float(cfg, "grad_clip", 0.0, math.inf, lo_open=True, hi_open=True)
    if cfg.precision not in PRECISIONS:
        _fail("precision", f"one of {list(PRECISIONS)}", cfg.precision)
    if not isinstance(cfg.device, str) or not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        _fail("device", '"auto", "cpu", "cuda" or "cuda:N"', cfg.device)
    for name in ("feature_cache", "tensorboard", "progress"):
        _bool(cfg, name)
    if cfg.feature_cache_dir is not None:
        if not isinstance(cfg.feature_cache_dir, str) or not cfg.feature_cache_dir:
            _fail("feature_cache_dir", "a folder path or null", cfg.feature_cache_dir)
        if not cfg.feature_cache:
            _fail("feature_cache_dir", "null unless feature_cache is true (it stores that cache)",
                  cfg.feature_cache_dir)
    if not isinstance(cfg.resume, (bool, str)):
        _fail("resume", "true, false or a checkpoint path", cfg.resume)
