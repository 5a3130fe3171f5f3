"""Multi-process training with torchrun + DistributedDataParallel (NCCL on GPU, gloo on CPU).

One machine, all its GPUs (the config's ``batch_size`` is the global batch, split evenly across ranks)::

    torchrun --standalone --nproc_per_node=gpu -m rpfm.train.cli train --config run.json

Many machines (run the same command on every node; HOST0 is any node reachable by all, port open)::

    torchrun --nnodes=4 --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 --rdzv_id=rpfm-run-1 \\
        -m rpfm.train.cli train --config run.json

``--nnodes=2:4`` makes the job elastic in size; add ``--resume`` so restarted workers continue from the newest
checkpoint. ``rpfm train`` works in place of ``-m rpfm.train.cli train`` with ``torchrun --no-python ... rpfm train``.
Every node needs the same code, config and data paths, and ``out_dir`` on a filesystem rank 0 can write (only rank 0
writes checkpoints, logs and samples; the other ranks wait at a barrier around each checkpoint).

**Randomness across ranks.** The per-sample flow-matching randomness (t, the noise z1 and the condition-dropout
mask) is drawn for the *global* batch from a generator that every rank seeds identically and advances identically;
each rank keeps its slice (global positions r, r + W, ..., matching the DistributedSampler split). One optimizer
step on W ranks x batch b therefore equals one step on 1 rank x batch W*b up to float summation order, and a run
can be resumed on a different number of GPUs. What is rank-local (codec posterior sampling, DataLoader worker
seeds) comes from generators seeded from (seed, rank).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank / world size (1 and 0 when not launched by torchrun) and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None          # "nccl" / "gloo" when distributed, None for a single process
    owns_group: bool = False     # we initialised the process group and destroy it in cleanup()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} was requested but CUDA is not available. Use \"cpu\" or \"auto\".")
        if device == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(device)


def setup(device: str = "auto") -> DistEnv:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group if W > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, None)
    if device.startswith("cuda:"):
        raise ValueError(f"device: {device!r} pins every one of the {world} processes to one GPU. Use \"cuda\" or "
                         f"\"auto\" under torchrun (each rank takes cuda:LOCAL_RANK).")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
        owns = True
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend(), owns)


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        if env.backend == "nccl":
            dist.barrier(device_ids=[env.device.index])
        else:
            dist.barrier()


def all_reduce_mean(x: Tensor, env: DistEnv) -> Tensor:
    """Mean of a tensor over ranks (identity for one process)."""
    if not env.distributed:
        return x
    y = x.detach().clone().to(env.device)
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return (y / env.world_size).to(x.device)


def all_gather(x: Tensor, env: DistEnv) -> list[Tensor]:
    """Every rank's copy of a same-shaped tensor, in rank order, on the CPU."""
    if not env.distributed:
        return [x.detach().cpu()]
    y = x.detach().to(env.device)
    out = [torch.empty_like(y) for _ in range(env.world_size)]
    dist.all_gather(out, y)
    return [o.cpu() for o in out]


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """DDP-wrap the model for W > 1 (gradients are averaged across ranks in backward)."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def seed_for(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and labels such as ("codec", rank): independent streams per use."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
