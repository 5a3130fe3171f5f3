"""Launch configuration (block sizes, warps) and the launch-time input checks shared by the kernels.

Row kernels (adaLN, gated residual) keep one whole row of D features in registers, upcast to fp32, so a row wider
than ``MAX_BLOCK_D`` is refused up front with a message naming the op and the fix, instead of failing to compile or
spilling badly (the Triton layer-norm tutorial's 64 KB-per-row rule, counted in fp32 since that is what we hold).
"""
from __future__ import annotations

import functools

import torch
import triton

MAX_BLOCK_D = 16384            # fp32 elements per row held in registers (64 KiB), the tutorial's cap
ELEMENTWISE_BLOCK = 1024       # elements per program for elementwise kernels (gelu, unpatchify planes)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FP_FUSION = True
"""``enable_fp_fusion`` of every launch (multiply-add contraction), pinned: triton 3.9 warns that its default moves
in 3.10, and the kernels' numerics must not change with a triton upgrade. .ci/check_triton_compile.py uses it too."""


# ---------------------------------------------------------------------------------------------------- configs
@functools.lru_cache(maxsize=None)  # pure; called on every launch, so keep host overhead down
def row_config(op: str, D: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for a kernel that reduces over rows of ``D`` features."""
    block = triton.next_power_of_2(D)
    if block > MAX_BLOCK_D:
        raise ValueError(f"{op}: hidden size D={D} exceeds the max block of {MAX_BLOCK_D} features a row kernel "
                         f"holds in registers. Use the eager backend (RPFM_{op.upper()}_BACKEND=eager).")
    return block, min(max(block // 256, 1), 8)  # ~8 fp32 values per thread, 1..8 warps


def elementwise_config(n: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for a flat elementwise kernel over ``n`` elements."""
    return ELEMENTWISE_BLOCK, 4


@functools.lru_cache(maxsize=None)
def tile_config(F: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_F, num_warps) for patchify: tiles of BLOCK_T tokens x all F = C*p*p features."""
    block_f = triton.next_power_of_2(F)
    if block_f > MAX_BLOCK_D:
        raise ValueError(f"patchify: C*p*p={F} features per token exceeds the max block of {MAX_BLOCK_D}. "
                         f"Use the eager backend (RPFM_PATCHIFY_BACKEND=eager).")
    block_t = max(1, min(64, 4096 // block_f))
    return block_t, block_f, 4


# ---------------------------------------------------------------------------------------------------- checks
def _interpreted(kernel) -> bool:
    """True when ``kernel`` was decorated under TRITON_INTERPRET=1 (then CPU tensors are fine)."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_inputs(op: str, kernel, **tensors: torch.Tensor | None) -> torch.device:
    """All given tensors are floating tensors on one device, and that device can run ``kernel``. Returns it."""
    given = {name: t for name, t in tensors.items() if t is not None}
    for name, t in given.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}.")
    devices = {t.device for t in given.values()}
    if len(devices) != 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in given.items())
        raise ValueError(f"{op}: all inputs must be on one device, got {where}.")
    (device,) = devices
    if device.type != "cuda" and not _interpreted(kernel):
        raise RuntimeError(f"{op}: the Triton kernel needs CUDA tensors, got {device}. Use the eager backend "
                           f"(RPFM_{op.upper()}_BACKEND=eager), or set TRITON_INTERPRET=1 before importing "
                           f"rpfm.kernels to run it on CPU for testing.")
    return device


def check_shape(op: str, name: str, t: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {what} = {tuple(expected)}, got {tuple(t.shape)}.")


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Kernels index rows with arbitrary outer strides but need unit stride in the last dim; copy otherwise."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def modulation(op: str, name: str, t: torch.Tensor, B: int, D: int) -> tuple[torch.Tensor, int]:
    """A (B, D) per-sample or (1, D) shared modulation vector, with its batch stride (0 when shared)."""
    if t.dim() != 2 or t.shape[0] not in (1, B) or t.shape[1] != D:
        raise ValueError(f"{op}: {name} must have shape (B, D) = ({B}, {D}) or (1, {D}), got {tuple(t.shape)}.")
    t = last_dim_contiguous(t)
    return t, (t.stride(0) if t.shape[0] == B and B > 1 else 0)
