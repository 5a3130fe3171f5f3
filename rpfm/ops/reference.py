"""Eager reference for every op that has a fast path. These functions are the spec.

Every fused kernel (Triton in ``rpfm.kernels``, C++ in ``rpfm._C``) has the same signature as its twin here and is
tested against it. ``upcast=True`` computes in fp32 and casts back: that is the "truth" the parity rule compares
against (``rpfm.testing.assert_close_to_ref``).

Shapes: B batch, T tokens, D hidden, H heads, Dh head dim, C channels, h x w latent grid, p patch size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _maybe_upcast(upcast: bool, *tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.float() for t in tensors) if upcast else tensors


# ---------------------------------------------------------------------------------------------------- adaLN
def adaln_modulate_ref(x: Tensor, shift: Tensor, scale: Tensor, *, eps: float = 1e-6, upcast: bool = False) -> Tensor:
    """LayerNorm without affine, then ``x_hat * (1 + scale) + shift`` (DiT's ``modulate(norm(x), ...)``).

    x: (B, T, D); shift, scale: (B, D), broadcast over tokens. Returns (B, T, D) in x's dtype.
    """
    dtype = x.dtype
    x, shift, scale = _maybe_upcast(upcast, x, shift, scale)
    h = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return (h * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)).to(dtype)


def gated_residual_adaln_ref(x: Tensor, y: Tensor, gate: Tensor, shift: Tensor, scale: Tensor, *,
                             eps: float = 1e-6, bias: Tensor | None = None, upcast: bool = False) -> tuple[Tensor, Tensor]:
    """The adaLN-Zero residual update followed by the next adaLN: ``x' = x + gate * (y + bias)``;
    ``h = adaln(x', ...)``.

    x, y: (B, T, D); gate, shift, scale: (B, D); bias: (D,) or None (the bias of the linear that made y, when the
    caller left it out of that matmul so this pass adds it). Returns (x', h), both (B, T, D) in x's dtype. Fusing
    the two lets a kernel read the residual stream once per sub-block instead of three times.
    """
    dtype = x.dtype
    x, y, gate = _maybe_upcast(upcast, x, y, gate)
    if bias is not None:
        y = y + (bias.float() if upcast else bias)
    x_new = x + gate.unsqueeze(1) * y
    h = adaln_modulate_ref(x_new, shift, scale, eps=eps, upcast=upcast)
    return x_new.to(dtype), h.to(dtype)


# ---------------------------------------------------------------------------------------------------- patchify
def patchify_ref(x: Tensor, ctx: Tensor | None = None, *, patch_size: int) -> Tensor:
    """Channel-concatenate ``x`` and ``ctx``, then cut p x p patches into tokens.

    x: (B, Cx, h, w); ctx: (B, Cc, h, w) or None. Returns (B, T, (Cx + Cc) * p * p) with T = (h/p)(w/p) tokens in
    row-major order and features ordered (c, p1, p2), i.e. the flattening of a Conv2d(kernel=stride=p) weight, so
    ``patches @ conv.weight.flatten(1).T + conv.bias`` equals the patch-embedding convolution.
    """
    if ctx is not None:
        x = torch.cat([x, ctx.to(x.dtype)], dim=1)
    B, C, h, w = x.shape
    p = patch_size
    x = x.reshape(B, C, h // p, p, w // p, p)          # (B, C, h/p, p1, w/p, p2)
    x = x.permute(0, 2, 4, 1, 3, 5)                    # (B, h/p, w/p, C, p1, p2)
    return x.reshape(B, (h // p) * (w // p), C * p * p)


def unpatchify_ref(y: Tensor, *, patch_size: int, channels: int) -> Tensor:
    """Inverse of DiT's final-layer layout: (B, T, p*p*C) -> (B, C, h, w).

    Feature index = (p1 * p + p2) * C + c (channel fastest), as in DiT's ``unpatchify``; the token grid is square.
    """
    B, T, _ = y.shape
    p, C = patch_size, channels
    g = math.isqrt(T)
    if g * g != T:
        raise ValueError(f"unpatchify: expected a square token grid, got T={T} tokens.")
    y = y.reshape(B, g, g, p, p, C)                    # (B, h/p, w/p, p1, p2, C)
    y = y.permute(0, 5, 1, 3, 2, 4)                    # (B, C, h/p, p1, w/p, p2)
    return y.reshape(B, C, g * p, g * p)


# ---------------------------------------------------------------------------------------------------- MLP
def gelu_tanh_ref(x: Tensor, *, upcast: bool = False) -> Tensor:
    """GELU with the tanh approximation (DiT's MLP activation). Any shape."""
    dtype = x.dtype
    (x,) = _maybe_upcast(upcast, x)
    return F.gelu(x, approximate="tanh").to(dtype)


def linear_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``: (..., K) x (N, K) -> (..., N) (``torch.nn.functional.linear``)."""
    return F.linear(x, weight, bias)


def linear_gelu_tanh_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, upcast: bool = False) -> Tensor:
    """``gelu_tanh(x @ weight.T + bias)``: the MLP's fc1 and its activation, (..., K) x (N, K) -> (..., N). A fast
    backend applies the GELU in the matmul's epilogue instead of a separate pass over the (..., N) activations."""
    dtype = x.dtype
    x, weight = _maybe_upcast(upcast, x, weight)
    bias = bias.float() if upcast and bias is not None else bias
    return F.gelu(F.linear(x, weight, bias), approximate="tanh").to(dtype)


# ---------------------------------------------------------------------------------------------------- attention
def attention_ref(q: Tensor, k: Tensor, v: Tensor, *, upcast: bool = False) -> Tensor:
    """Softmax attention written out (no fused kernel): the math backend.

    q, k, v: (B, T, H, Dh). Returns (B, T, H, Dh). Scale Dh^-1/2, no mask, no dropout.
    """
    dtype = q.dtype
    q, k, v = _maybe_upcast(upcast, q, k, v)
    scale = q.shape[-1] ** -0.5
    s = torch.einsum("bqhd,bkhd->bhqk", q * scale, k)   # (B, H, T, T)
    p = s.to(torch.promote_types(s.dtype, torch.float32)).softmax(dim=-1).to(v.dtype)  # softmax in >= fp32
    return torch.einsum("bhqk,bkhd->bqhd", p, v).to(dtype)


# ---------------------------------------------------------------------------------------------------- sampler step
def euler_cfg_step_ref(x: Tensor, v: Tensor, dt: Tensor, guidance: Tensor) -> Tensor:
    """One Euler step with classifier-free guidance, in place on x, which is also returned.

    x: (B, ...) the state. v: (2B, ...) velocities of the batched forward, conditional half first, then
    unconditional; or (B, ...) when guidance is off (then ``guidance`` is ignored). dt, guidance: 0-dim tensors
    (device scalars, so a captured graph can change them without recapture).
    ``x <- x + dt * (v_u + w * (v_c - v_u))``, computed in fp32 and stored in x's dtype.
    """
    B = x.shape[0]
    vf = v.float()
    if v.shape[0] == 2 * B:
        v_c, v_u = vf[:B], vf[B:]
        vf = v_u + guidance.float() * (v_c - v_u)
    x.copy_(x.float() + dt.float() * vf)
    return x
