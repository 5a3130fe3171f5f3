"""Model CPU offload (diffusers' ``enable_model_cpu_offload``): the frozen encoders and the decoder wait in CPU
memory and visit the accelerator only for their stage, so device memory holds the DiT plus one of them at a time.

The DiT itself stays on the execution device (it runs every step). Moving a component costs a host-device copy of
its weights per use (SD-VAE ~335 MB, DINOv2-G ~4.5 GB in fp32), so offload trades speed for memory: use it when
the encoders do not fit next to the DiT.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

OFFLOAD_DEVICE = torch.device("cpu")


@contextlib.contextmanager
def onload(module: torch.nn.Module | None, execution_device: torch.device | None) -> Iterator[None]:
    """Move ``module`` to ``execution_device`` for the ``with`` block and back to the CPU after it.

    ``execution_device`` None means offload is off: nothing moves.
    """
    if module is None or execution_device is None:
        yield
        return
    module.to(execution_device)
    try:
        yield
    finally:
        module.to(OFFLOAD_DEVICE)
        if execution_device.type == "cuda":
            torch.cuda.empty_cache()


__all__ = ["onload", "OFFLOAD_DEVICE"]
