"""The RPFM velocity on a fixed time grid with every per-step computation that does not depend on x done once.

Per sampling call (not per step), :meth:`HoistedVelocity.update` fills static tables:

- ``temb``: the timestep embeddings of the K grid points, (K, D) — the sinusoid + MLP of every step at once;
- ``mods``: the adaLN modulation of every block and of the final layer for every step, one matmul
  (K * B_in, D) x (D, (6 * depth + 2) * D) before the loop instead of depth + 1 small matmuls per step (the adaLN
  weights are ~34 % of the per-step weights of the B/2 model); laid out (K, 6 * depth + 2, B_in, D) so each
  modulation vector a step reads is a contiguous (B_in, D) block;
- ``h0``: the patch embedding of the constant context channels (source and pose latents) plus bias and positions,
  (B_in, T, D): per step only the C noisy channels are embedded, h = patches(x) @ W_x^T + h0.

``velocity(x_in, k)`` then equals ``model.velocity(x_in, t_k, cond)`` (:meth:`rpfm.model.RPFM.velocity`, the eager
twin) to matmul rounding. The tables live in buffers allocated once (outside inference mode), so a captured CUDA
graph keeps reading them after ``update`` rewrites them in place for a new condition.

Shapes: K grid points, B_in the (CFG-doubled) batch, T tokens, D hidden, C latent channels, p patch size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import RPFM, Condition


class HoistedVelocity:
    """``velocity(x_in, k)`` of ``model`` for ``cond`` at grid point ``t[k]`` (see the module docstring).

    model: the RPFM network. cond: the condition of the batch the sampler evaluates (already doubled for CFG),
    y (B_in, D), ctx (B_in, 2C, h, w) or None. t: (K,) float32 grid. Call :meth:`update` after changing the
    condition's values or the weights; the op backends are resolved at construction (rebuild to change them).
    """

    def __init__(self, model: RPFM, cond: Condition, t: Tensor):
        cfg = model.config
        self.model = model
        self.dtype, self.device = cond.y.dtype, cond.y.device
        self.op = model.opset(self.device, self.dtype)
        self.t = t
        K, B_in, D = t.shape[0], cond.batch_size, cfg.hidden_size
        self.n_mods = 6 * cfg.depth + 2
        self.cpp = cfg.latent_channels * cfg.patch_size ** 2                      # noisy-latent features per token
        opts = dict(dtype=self.dtype, device=self.device)
        with torch.inference_mode(False):
            self.temb = torch.empty(K, D, **opts)                                  # (K, D)
            self.mods = torch.empty(K, self.n_mods, B_in, D, **opts)              # (K, 6 depth + 2, B_in, D)
            self.h0 = torch.empty(B_in, cfg.num_tokens, D, **opts)               # (B_in, T, D)
            self.w_x = torch.empty(D, self.cpp, **opts)                            # (D, C p p)
        self.rows = [list(self.mods[k].unbind(0)) for k in range(K)]             # K x (6 depth + 2) x (B_in, D)
        self.update(cond)

    @torch.no_grad()
    def update(self, cond: Condition) -> None:
        """Recompute the tables for ``cond`` (same shapes) and the current weights, in place."""
        model, cfg = self.model, self.model.config
        K, B_in, D = self.mods.shape[0], self.mods.shape[2], cfg.hidden_size
        temb = model.t_embedder(self.t.to(self.device)).to(self.dtype)                      # (K, D)
        self.temb.copy_(temb)
        c = F.silu(temb[:, None, :] + cond.y[None])                                          # (K, B_in, D)
        linears = [blk.adaLN_modulation[1] for blk in model.blocks] + [model.final_layer.adaLN_modulation[1]]
        weight = torch.cat([lin.weight for lin in linears])                                  # (n_mods D, D)
        bias = torch.cat([lin.bias for lin in linears])                                      # (n_mods D,)
        mods = F.linear(c.reshape(K * B_in, D), weight, bias)                                # (K B_in, n_mods D)
        self.mods.copy_(mods.view(K, B_in, self.n_mods, D).transpose(1, 2))
        w = model.x_embedder.proj.weight.flatten(1)                                          # (D, 3C p p)
        self.w_x.copy_(w[:, :self.cpp])
        h0 = model.pos_embed + model.x_embedder.proj.bias                                    # (1, T, D)
        if cond.ctx is not None:
            ctx_patches = self.op.patchify(cond.ctx, None, patch_size=cfg.patch_size)        # (B_in, T, 2C p p)
            h0 = h0 + F.linear(ctx_patches, w[:, self.cpp:])                                 # (B_in, T, D)
        self.h0.copy_(h0.expand_as(self.h0))

    def __call__(self, x_in: Tensor, k: int) -> Tensor:
        """x_in: (B_in, C, h, w) in the model's dtype; k: grid index. Returns v (B_in, C, h, w)."""
        op, D = self.op, self.h0.shape[-1]
        patches = op.patchify(x_in, None, patch_size=self.model.config.patch_size)          # (B_in, T, C p p)
        h = torch.addmm(self.h0.view(-1, D), patches.reshape(-1, self.cpp), self.w_x.t())  # (B_in T, D)
        return self.model.blocks_forward(h.view_as(self.h0), self.rows[k], op)
