"""Drop-in loading of checkpoints trained elsewhere: DiT / LFM / SiT-style and X-MDPT state dicts -> RPFM.

Conventions are translated here, at load time, never inside the model (style rule 5). What each layout holds is
in spec §5; the mapping is spec §5.4:

- **wrappers:** a bare state dict, or a training checkpoint ``{"model", "ema", "opt", "args", ...}`` (the EMA
  weights are taken by default), with ``module.`` (DDP / accelerate) and ``_orig_mod.`` (torch.compile) prefixes
  stripped.
- **DiT / LFM / SiT** (``source="dit"``): every backbone key maps 1:1; ``y_embedder`` is dropped; a 4-channel
  ``x_embedder`` goes into input channels 0..C-1 with the concatenated channels zeroed; a learned-sigma
  ``final_layer.linear`` (2C outputs) keeps the rows of channels c < C; the condition modules (absent) keep
  their fresh initialisation and are listed in the report.
- **X-MDPT** (``source="xmdpt"``): as DiT, plus its condition modules copied unchanged; the side blocks,
  relative-position biases, ``decoder_pos_embed`` and ``mask_token`` are dropped; its (learnable) ``pos_embed`` is
  replaced by the fixed sin-cos one; its 4-channel ``x_embedder`` also initialises ``src_embedder`` (X-MDPT's
  local source branch used that very embedder) and ``pose_embedder``.

The result of a DiT or X-MDPT conversion is a *starting point for fine-tuning* (the semantics change from
noise prediction to velocity); an RPFM checkpoint saved by another implementation in the spec §5.3 layout
converts with ``source="rpfm"`` (wrappers and prefixes only) and samples as-is.

Files: safetensors, or PyTorch ``.pt``/``.pth`` read with ``torch.load(weights_only=True)`` (the restricted
unpickler that builds tensors and plain containers only; ``argparse.Namespace`` from training ``args`` is the one
class additionally allowed). Pickled code is never executed.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .config import RPFMConfig
from .fileio import load_tensors
from .model import RPFM

SOURCES = ("auto", "rpfm", "dit", "lfm", "sit", "xmdpt")
_PREFIXES = ("module.", "_orig_mod.")
_XMDPT_DROP = re.compile(r"^(sideblocks|sideblocks_cross)\.|^decoder_pos_embed$|^mask_token$|\.rel_pos_bias\.")


@dataclass
class ConversionReport:
    """What a conversion did: keys copied, adapted (reshaped/sliced), dropped, and left at initialisation."""

    source: str
    copied: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: {len(self.copied)} copied, {len(self.adapted)} adapted, {len(self.dropped)} "
                f"dropped, {len(self.initialised)} left at initialisation")


# ---------------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file without executing pickled code (safetensors, or torch.load weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at '{path}'.")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler raises UnpicklingError/RuntimeError/... for unsafe content
        raise ValueError(
            f"checkpoint: '{path}' cannot be read safely ({type(e).__name__}: {e}). rpfm only loads tensors and "
            f"plain containers (torch.load weights_only=True). On a machine where you trust the file, re-save just "
            f"the weights: torch.save(torch.load(p, weights_only=False)['ema'], 'weights.pt'), or use "
            f"safetensors.") from e


def unwrap_state_dict(obj: dict, *, which: str = "ema") -> dict[str, Tensor]:
    """Pick the weights out of a training checkpoint and strip ``module.`` / ``_orig_mod.`` prefixes.

    which: "ema" (default; falls back to "model" when there is no EMA) or "model".
    """
    if which not in ("ema", "model"):
        raise ValueError(f"which: expected 'ema' or 'model', got {which!r}.")
    if not isinstance(obj, dict):
        raise TypeError(f"checkpoint: expected a dict (a state dict or a training checkpoint), got "
                        f"{type(obj).__name__}.")
    for key in ((which, "model") if which == "ema" else ("model",)):
        for name in (key, f"{key}_dict", f"{key}_state_dict", "state_dict"):
            if isinstance(obj.get(name), dict):
                obj = obj[name]
                break
        else:
            continue
        break
    state = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            continue
        for prefix in _PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    if not state:
        raise ValueError(f"checkpoint: no tensors found (top-level keys: {sorted(obj)[:10]}).")
    return state


def detect_source(state: dict[str, Tensor]) -> str:
    """'xmdpt' if X-MDPT condition modules or side blocks are present, 'rpfm' if RPFM's own new keys are, else
    'dit' (DiT, LFM and SiT share one layout)."""
    if any(k.startswith(("src_embedder.", "conv1d_local_pose.")) for k in state):
        return "rpfm"
    if any(k.startswith(("sideblocks", "mlp_dino_", "conv1d_")) or k == "mask_token" for k in state):
        return "xmdpt"
    if "x_embedder.proj.weight" in state and any(k.startswith("blocks.") for k in state):
        return "dit"
    raise ValueError("checkpoint: not a DiT/LFM/SiT, X-MDPT or RPFM state dict (no x_embedder/blocks keys). "
                     "Pass source=... explicitly if you know the layout.")


# ---------------------------------------------------------------------------------------------------- conversion
def convert_state_dict(state: dict[str, Tensor], config: RPFMConfig, *,
                       source: str = "auto") -> tuple[dict[str, Tensor], ConversionReport]:
    """Map a foreign state dict onto an RPFM of ``config``. Returns (full RPFM state dict, report)."""
    if source not in SOURCES:
        raise ValueError(f"source: unknown layout {source!r}. Choose one of {list(SOURCES)}.")
    if source == "auto":
        source = detect_source(state)
    source = "dit" if source in ("lfm", "sit") else source
    target = RPFM(config).state_dict()          # fresh init (incl. fixed pos_embed) for everything not copied
    report = ConversionReport(source)
    C, p = config.latent_channels, config.patch_size

    for k, v in state.items():
        if source == "xmdpt" and (_XMDPT_DROP.search(k) or k == "pos_embed"):
            report.dropped.append(k)
            continue
        if source in ("dit", "xmdpt") and (k.startswith("y_embedder.") or k == "pos_embed"):
            report.dropped.append(k)   # class embedding / learnable or same fixed positions: ours is fixed sin-cos
            continue
        if k not in target:
            raise ValueError(f"checkpoint: key {k!r} has no place in an RPFM with this config (source {source!r}). "
                             f"Check the config (depth, branches) or pass the right source.")
        want = target[k].shape
        if v.shape == want:
            target[k] = v.to(target[k].dtype)
            report.copied.append(k)
        elif k == "x_embedder.proj.weight" and v.shape[1] == C and want[1] > C and v.shape[0] == want[0]:
            w = torch.zeros(want, dtype=target[k].dtype)
            w[:, :C] = v                                      # noisy latent channels; concatenated ones start at 0
            target[k] = w
            report.adapted[k] = f"{tuple(v.shape)} -> {tuple(want)}: input channels 0..{C - 1}, rest zero"
        elif k.startswith("final_layer.linear.") and v.shape[0] == p * p * 2 * C and want[0] == p * p * C:
            # learned sigma: output index (p1 * p + p2) * 2C + c; keep c < C (the mean / velocity channels)
            rows = v.reshape(p, p, 2 * C, *v.shape[1:])[:, :, :C].reshape(want)
            target[k] = rows.to(target[k].dtype)
            report.adapted[k] = f"{tuple(v.shape)} -> {tuple(want)}: kept channels c < {C} (learned sigma dropped)"
        else:
            raise ValueError(f"checkpoint: {k!r} has shape {tuple(v.shape)} but this config needs {tuple(want)}. "
                             f"The checkpoint's model size (depth/width/patch/resolution) differs from the config.")

    if source == "xmdpt" and "x_embedder.proj.weight" in state and state["x_embedder.proj.weight"].shape[1] == C:
        for name in ("src_embedder", "pose_embedder"):
            for part in ("weight", "bias"):
                key = f"{name}.proj.{part}"
                if key in target and key not in state:
                    target[key] = state[f"x_embedder.proj.{part}"].to(target[key].dtype)
                    report.adapted[key] = f"from X-MDPT x_embedder.proj.{part} (its local source branch embedder)"
    taken = set(report.copied) | set(report.adapted)
    report.initialised = sorted(k for k in target if k not in taken and k != "pos_embed")
    return target, report


def load_foreign_model(path: str | os.PathLike, config: RPFMConfig, *, source: str = "auto",
                       which: str = "ema") -> tuple[RPFM, ConversionReport]:
    """Read ``path`` safely, convert it for ``config``, and return the loaded model and the report."""
    state, report = convert_state_dict(unwrap_state_dict(read_checkpoint(path), which=which), config,
                                       source=source)
    model = RPFM(config)
    model.load_state_dict(state, strict=True)
    return model, report
