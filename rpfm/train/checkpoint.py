"""Training checkpoints: written atomically, safetensors only (never pickle), verified on load.

Layout::

    out_dir/checkpoints/
        latest                    the name of the newest complete checkpoint, e.g. "step_00001000"
        step_00001000/
            model.safetensors     the trained model's state dict
            ema.safetensors       the EMA model's full state dict (sampling and export use these weights)
            optimizer.safetensors AdamW state flattened to tensors: "state.{param index}.{exp_avg|exp_avg_sq|step}"
            rng.safetensors       generator states (uint8): "flow" (shared by all ranks), "codec.rank{r}"
            trainer_state.json    step, data position, optimizer param groups, the TrainConfig, the RPFMConfig,
                                  and the size + sha256 of every file above

Writing: the files go into a hidden ``.tmp-step_*`` folder (each written to a temporary name and renamed, then
fsynced), ``trainer_state.json`` last; the folder is renamed into place and only then is ``latest`` replaced
(atomically). A crash at any point leaves the previous checkpoint complete and ``latest`` pointing at it; leftover
temporary folders and files are ignored, and removed when training starts again and by the next save. The newest
``keep`` checkpoints are kept.

Loading checks that every file is present with the recorded size and hash (a truncated or corrupted file gives an
error naming it and the previous checkpoint) and that the checkpoint's model config equals the run's.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from .. import config as model_config_mod
from ..config import RPFMConfig
from ..fileio import (atomic_write_bytes, atomic_write_json, load_tensors, read_json, remove_stale_temporaries,
                      save_tensors, sha256_file)

FORMAT = "rpfm-train-checkpoint"
VERSION = 1
STATE_NAME = "trainer_state.json"
LATEST_NAME = "latest"
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors")
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (incomplete, corrupted, or from another model config)."""


def checkpoint_root(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint folders (they have trainer_state.json), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest(root: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest`` names, else the highest-step complete-looking folder, else None."""
    root = Path(root)
    pointer = root / LATEST_NAME
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if _STEP_DIR.match(candidate.name) and (candidate / STATE_NAME).is_file():
            return candidate
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, a ``checkpoints/`` folder or a run's ``out_dir`` -> the checkpoint folder to load."""
    path = Path(path)
    if (path / STATE_NAME).is_file():
        return path
    for root in (path, checkpoint_root(path)):
        latest = find_latest(root)
        if latest is not None:
            return latest
    raise FileNotFoundError(f"checkpoint: no checkpoint at '{path}'. Pass a step_XXXXXXXX folder, the run's "
                            f"checkpoints/ folder or its out_dir.")


# ---------------------------------------------------------------------------------------------------- optimizer
def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """torch optimizer state_dict -> (tensors for safetensors, JSON for the rest)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------------- save
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(out_dir: str | os.PathLike, step: int, *, model: dict[str, Tensor], ema: dict[str, Tensor],
                    optimizer: dict[str, Any], rng: dict[str, Tensor], train_config: dict[str, Any],
                    model_config: RPFMConfig | dict[str, Any], extra: dict[str, Any] | None = None, keep: int = 3) -> Path:
    """Write ``out_dir/checkpoints/step_{step:08d}`` atomically, point ``latest`` at it, prune to ``keep``."""
    from .. import __version__

    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        opt_tensors, opt_meta = flatten_optimizer(optimizer)
        meta = {"format": FORMAT, "step": str(step)}
        for name, tensors in zip(TENSOR_FILES, (model, ema, opt_tensors, rng)):
            save_tensors({k: v.detach().cpu() for k, v in tensors.items()}, tmp / name, metadata=meta)
        files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                 for name in TENSOR_FILES}
        atomic_write_json(tmp / STATE_NAME, {
            "format": FORMAT, "version": VERSION, "rpfm_version": __version__, "step": step,
            "optimizer": opt_meta, "train_config": train_config,
            "model_config": _config_dict(model_config), "files": files, **(extra or {})})
        _fsync_dir(tmp)
        trash = root / f".old-{final.name}-{os.getpid()}"
        if final.exists():                         # re-saving a step (e.g. resumed from an older checkpoint)
            os.replace(final, trash)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(root / LATEST_NAME, (final.name + "\n").encode())
    shutil.rmtree(trash, ignore_errors=True)
    _prune(root, keep=keep, current=final)
    return final


def _prune(root: Path, *, keep: int, current: Path) -> None:
    # Only this trajectory's checkpoints (steps <= the current one): after resuming from an older checkpoint, newer
    # folders belong to the abandoned run; they are left alone (and replaced when this run reaches their step).
    step = int(_STEP_DIR.match(current.name).group(1))
    ours = [p for s, p in list_checkpoints(root) if s <= step]
    for path in ours[:-keep]:
        if path != current:
            shutil.rmtree(path, ignore_errors=True)
    remove_stale(root)


def remove_stale(root: Path) -> None:
    """Remove what killed saves leave in ``root``: ``.tmp-step_*`` / ``.old-step_*`` folders and temporaries of
    ``latest``. Only the process that saves (rank 0) calls this, at start-up and after each save."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith((".tmp-step_", ".old-step_")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    remove_stale_temporaries(root, [LATEST_NAME])


# ---------------------------------------------------------------------------------------------------- load
@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]                 # trainer_state.json
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]             # a torch optimizer state_dict
    rng: dict[str, Tensor]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def _previous_hint(path: Path) -> str:
    m = _STEP_DIR.match(path.name)
    step = int(m.group(1)) if m else None
    older = [p for s, p in list_checkpoints(path.parent) if p != path and (step is None or s < step)]
    if older:
        return (f" The previous checkpoint '{older[-1]}' is untouched: resume from it with --resume {older[-1]} "
                f"(resume=\"{older[-1]}\"), or delete '{path}'.")
    return " No earlier checkpoint exists in that folder."


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        state = read_json(path / STATE_NAME, "checkpoint")
    except ValueError as e:
        raise CheckpointError(f"{e}{_previous_hint(path)}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint: '{path / STATE_NAME}' is not an rpfm training checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else None!r}, expected {FORMAT!r}).")
    return state


def verify_files(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Every recorded file exists with its recorded size and sha256; raises CheckpointError naming the file."""
    path = Path(path)
    for name in TENSOR_FILES:
        record = state.get("files", {}).get(name)
        file = path / name
        if record is None:
            raise CheckpointError(f"checkpoint: '{path / STATE_NAME}' does not list {name}; the checkpoint is "
                                  f"incomplete.{_previous_hint(path)}")
        if not file.is_file():
            raise CheckpointError(f"checkpoint: '{file}' is missing.{_previous_hint(path)}")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise CheckpointError(f"checkpoint: '{file}' is truncated or damaged ({size} bytes, expected "
                                  f"{record['bytes']}).{_previous_hint(path)}")
        if sha256_file(file) != record["sha256"]:
            raise CheckpointError(f"checkpoint: '{file}' is corrupted (sha256 differs from the one recorded when it "
                                  f"was written).{_previous_hint(path)}")


def config_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """['field: checkpoint X vs run Y', ...] for every differing key."""
    return [f"{k}: checkpoint {saved.get(k)!r} vs run {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def _config_dict(model_config: RPFMConfig | dict[str, Any]) -> dict[str, Any]:
    """The architecture record of a checkpoint: an RPFMConfig's fields, or a plain dict (e.g. a codec's)."""
    return dict(model_config) if isinstance(model_config, dict) else model_config_mod.to_dict(model_config)


def load_checkpoint(path: str | os.PathLike, *, model_config: RPFMConfig | dict[str, Any] | None = None) -> Checkpoint:
    """Verify and read a checkpoint folder (see :func:`resolve_checkpoint` for what ``path`` may be).
    ``model_config`` (an RPFMConfig, or the architecture dict a codec run records) must equal the saved one."""
    path = resolve_checkpoint(path)
    state = read_state(path)
    if model_config is not None:
        diff = config_diff(state.get("model_config", {}), _config_dict(model_config))
        if diff:
            raise CheckpointError(f"checkpoint: '{path}' was trained with a different model config ("
                                  + "; ".join(diff) + "). Resume with the same model settings, or start a new run "
                                  "in another out_dir.")
    verify_files(path, state)
    tensors = {}
    for name in TENSOR_FILES:
        try:
            tensors[name] = load_tensors(path / name)
        except ValueError as e:
            raise CheckpointError(f"checkpoint: {e}{_previous_hint(path)}") from e
    optimizer = unflatten_optimizer(tensors["optimizer.safetensors"], state["optimizer"])
    return Checkpoint(path, state, tensors["model.safetensors"], tensors["ema.safetensors"], optimizer,
                      tensors["rng.safetensors"])


# ---------------------------------------------------------------------------------------------------- export
def export_pipeline(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the checkpoint's EMA weights as an ``RPFMPipeline.from_pretrained`` folder, with the codec and the
    feature extractors named in its training config. ``ckpt_dir`` may also be a run's out_dir (newest checkpoint)."""
    from ..codec import load_codec
    from ..features import load_feature_extractor
    from ..model import RPFM
    from ..pipeline import RPFMPipeline
    from .config import from_dict as train_from_dict

    path = resolve_checkpoint(ckpt_dir)
    state = read_state(path)
    verify_files(path, state)
    train_cfg = train_from_dict(state["train_config"])
    cfg = model_config_mod.from_dict(state["model_config"])
    model = RPFM(cfg)
    model.load_state_dict(load_tensors(path / "ema.safetensors"), strict=True)
    codec = load_codec(train_cfg.codec)
    pose = load_feature_extractor(train_cfg.pose_encoder) if "global_pose" in cfg.branches else None
    source = load_feature_extractor(train_cfg.source_encoder) if "global_source" in cfg.branches else None
    return RPFMPipeline(model, codec, pose, source).save_pretrained(out_dir)
