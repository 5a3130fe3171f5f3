"""Patchify (with the conditioning concat) and unpatchify as single gather kernels: pure data movement, bit-exact.

Must match: ``rpfm.ops.reference.patchify_ref`` and ``rpfm.ops.reference.unpatchify_ref``.
Fused: patchify reads x and ctx in place (any strides) and writes the token layout directly, so the channel concat
``cat([x, ctx])`` and the permute copy are never materialised; ctx is cast to x's dtype on load, as the reference
does. Unpatchify reads the (B, T, p*p*C) tokens (any strides) and writes the (B, C, h, w) image contiguously.
Not fused: the patch-embedding matmul and the positional-embedding add (patchify) and the final linear layer
(unpatchify). Forward only.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._heuristics import FP_FUSION, check_inputs, elementwise_config, tile_config


@triton.jit
def _patchify_kernel(X, CTX, OUT, Cx, T, F, Wg,
                     sxb, sxc, sxh, sxw, scb, scc, sch, scw,
                     P: tl.constexpr, HAS_CTX: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    tok = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)   # token index, row-major over the (h/p, w/p) grid
    f = tl.arange(0, BLOCK_F)                                    # feature index, ordered (c, p1, p2)
    c = f // (P * P)
    row = (tok // Wg)[:, None] * P + ((f // P) % P)[None, :]    # (BLOCK_T, BLOCK_F) pixel row in the latent
    col = (tok % Wg)[:, None] * P + (f % P)[None, :]            # pixel column
    mask = (tok < T)[:, None] & (f < F)[None, :]
    from_x = (c < Cx)[None, :]
    val = tl.load(X + b * sxb + c[None, :] * sxc + row * sxh + col * sxw, mask=mask & from_x, other=0.0)
    if HAS_CTX:
        from_ctx = (c >= Cx)[None, :]
        cv = tl.load(CTX + b * scb + (c - Cx)[None, :] * scc + row * sch + col * scw, mask=mask & from_ctx,
                     other=0.0)
        val = tl.where(from_x, val, cv.to(OUT.dtype.element_ty))
    tl.store(OUT + (b * T + tok[:, None]) * F + f[None, :], val, mask=mask)


@triton.jit
def _unpatchify_kernel(Y, OUT, C, G, HW, syb, syt, syf, P: tl.constexpr, BLOCK: tl.constexpr):
    bc = tl.program_id(1).to(tl.int64)                           # one (sample, channel) plane per grid row
    b = bc // C
    c = bc % C
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)         # flat pixel index in the (h, w) output plane
    mask = idx < HW
    r = idx // (G * P)
    s = idx % (G * P)
    tok = (r // P) * G + s // P
    feat = ((r % P) * P + s % P) * C + c                         # channel fastest, as DiT's final layer
    v = tl.load(Y + b * syb + tok * syt + feat * syf, mask=mask)
    tl.store(OUT + bc * HW + idx, v, mask=mask)


def _check_patch_size(op: str, patch_size) -> int:
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"{op}: patch_size must be a positive int, got {patch_size!r}.")
    return patch_size


def patchify_triton(x: Tensor, ctx: Tensor | None = None, *, patch_size: int) -> Tensor:
    """x: (B, Cx, h, w); ctx: (B, Cc, h, w) or None. Returns contiguous (B, (h/p)(w/p), (Cx + Cc) p p) in x's dtype."""
    op = "patchify"
    p = _check_patch_size(op, patch_size)
    check_inputs(op, _patchify_kernel, x=x, ctx=ctx)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (B, C, h, w), got shape {tuple(x.shape)}.")
    B, Cx, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"{op}: the latent size (h, w) = ({h}, {w}) must be divisible by patch_size={p}.")
    if ctx is not None and (ctx.dim() != 4 or (ctx.shape[0], ctx.shape[2], ctx.shape[3]) != (B, h, w)):
        raise ValueError(f"{op}: ctx must be (B, Cc, h, w) with (B, h, w) = ({B}, {h}, {w}) like x, "
                         f"got shape {tuple(ctx.shape)}.")
    Cc = 0 if ctx is None else ctx.shape[1]
    T, F = (h // p) * (w // p), (Cx + Cc) * p * p
    out = torch.empty((B, T, F), device=x.device, dtype=x.dtype)
    if out.numel():
        block_t, block_f, num_warps = tile_config(F)
        c = x if ctx is None else ctx             # a dummy pointer when HAS_CTX is False
        _patchify_kernel[(triton.cdiv(T, block_t), B)](x, c, out, Cx, T, F, w // p, *x.stride(), *c.stride(),
                                                       P=p, HAS_CTX=ctx is not None, BLOCK_T=block_t,
                                                       BLOCK_F=block_f, num_warps=num_warps,
                                                       enable_fp_fusion=FP_FUSION)
    return out


def unpatchify_triton(y: Tensor, *, patch_size: int, channels: int) -> Tensor:
    """y: (B, T, p*p*C) with a square token grid. Returns contiguous (B, C, h, w), h = w = sqrt(T) * p."""
    op = "unpatchify"
    p = _check_patch_size(op, patch_size)
    check_inputs(op, _unpatchify_kernel, y=y)
    if y.dim() != 3:
        raise ValueError(f"{op}: y must be (B, T, p*p*C), got shape {tuple(y.shape)}.")
    B, T, F = y.shape
    if F != p * p * channels:
        raise ValueError(f"{op}: y's last dim must be p*p*C = {p}*{p}*{channels} = {p * p * channels}, got {F}.")
    g = math.isqrt(T)
    if g * g != T:
        raise ValueError(f"unpatchify: expected a square token grid, got T={T} tokens.")
    out = torch.empty((B, channels, g * p, g * p), device=y.device, dtype=y.dtype)
    if out.numel():
        block, num_warps = elementwise_config(out[0, 0].numel())
        HW = (g * p) ** 2
        _unpatchify_kernel[(triton.cdiv(HW, block), B * channels)](y, out, channels, g, HW, *y.stride(), P=p,
                                                                  BLOCK=block, num_warps=num_warps,
                                                                  enable_fp_fusion=FP_FUSION)
    return out
