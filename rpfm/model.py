"""The RPFM network: a DiT with adaLN-Zero, input concatenation and four-branch conditional aggregation.

Follows spec §2 (DiT/LFM backbone, X-MDPT condition modules, RPFM's 12-channel input and 4th branch). Parameter
names are DiT's for the backbone and X-MDPT's for the condition modules (spec §5.3), so converted checkpoints
load with ``strict=True``.

The network is split in two so that nothing that depends only on the condition runs inside the sampling loop:

- :meth:`RPFM.prepare_condition` (once per sample): the aggregated vector y (B, D) and the concatenated
  context latents [z_s, z_p] (B, 2C, h, w).
- :meth:`RPFM.velocity` (once per step): v = v_theta(x_t, t | condition).

:meth:`RPFM.forward` composes the two with DiT's call order ``model(x, t, *, conditions...)``.

Shapes: B batch, T tokens, D hidden, H heads, Dh head dim, C latent channels, h x w latent grid, p patch size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from . import ops
from .config import RPFMConfig


# ---------------------------------------------------------------------------------------------------- embedders
class PatchEmbed(nn.Module):
    """timm-style patch embedding: Conv2d(kernel = stride = p), flattened row-major to tokens (key ``proj``)."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)        # (B, C, h, w) -> (B, T, D)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """The same map on pre-cut patches (B, T, C*p*p) from ``ops.patchify``: one matmul on a contiguous operand."""
        return torch.nn.functional.linear(patches, self.proj.weight.flatten(1), self.proj.bias)


class TimestepEmbedder(nn.Module):
    """Scalar t in [0, 1] -> (B, D): 256 sinusoidal frequencies (cos half first), then an MLP (DiT)."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    @staticmethod
    def frequencies(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]                  # (B, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: Tensor) -> Tensor:
        emb = self.frequencies(t, self.frequency_size).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)                                     # (B, D)


def _gelu_ln(in_features: int, hidden: int) -> nn.Sequential:
    """X-MDPT's projection: Linear -> GELU (exact) -> LayerNorm(eps 1e-12). Keys ``.0`` and ``.2``."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12))


def _token_pool(num_tokens: int, hidden: int) -> nn.Sequential:
    """X-MDPT's token reduction: Conv1d(tokens -> 1, kernel 1) -> GELU -> LayerNorm: (B, N, D) -> (B, 1, D).

    The Conv1d treats tokens as channels and D as length: a learned weighted sum over tokens plus a bias.
    """
    return nn.Sequential(nn.Conv1d(num_tokens, 1, kernel_size=1), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12))


# ---------------------------------------------------------------------------------------------------- blocks
class Attention(nn.Module):
    """timm Attention: qkv with bias, softmax(q k^T / sqrt(Dh)) v, output projection. No qk-norm, no dropout."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, attention=ops.reference.attention_ref, linear=ops.reference.linear_ref,
                out_bias: bool = True) -> Tensor:
        """x (B, T, D) -> (B, T, D). ``out_bias=False`` leaves ``proj.bias`` out (the caller adds it later)."""
        B, T, D = x.shape
        qkv = linear(x, self.qkv.weight, self.qkv.bias).view(B, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.unbind(2)                                                 # 3 x (B, T, H, Dh)
        o = attention(q, k, v)                                                  # (B, T, H, Dh)
        return linear(o.reshape(B, T, D), self.proj.weight, self.proj.bias if out_bias else None)


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2, hidden 4D (timm Mlp as DiT uses it)."""

    def __init__(self, hidden_size: int, mlp_ratio: float):
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        self.fc1 = nn.Linear(hidden_size, inner)
        self.fc2 = nn.Linear(inner, hidden_size)

    def forward(self, x: Tensor, gelu=ops.reference.gelu_tanh_ref, linear=ops.reference.linear_ref,
                linear_gelu=None, out_bias: bool = True) -> Tensor:
        """x (B, T, D) -> (B, T, D). ``linear_gelu(x, w, b)`` computes fc1 + GELU in one op when given;
        ``out_bias=False`` leaves ``fc2.bias`` out (the caller adds it later)."""
        if linear_gelu is not None:
            hidden = linear_gelu(x, self.fc1.weight, self.fc1.bias)               # (B, T, 4D), fused epilogue
        else:
            hidden = gelu(linear(x, self.fc1.weight, self.fc1.bias))
        return linear(hidden, self.fc2.weight, self.fc2.bias if out_bias else None)


class DiTBlock(nn.Module):
    """A DiT block with adaLN-Zero conditioning (keys attn.*, mlp.*, adaLN_modulation.1.*)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """The textbook block (DiT's forward), kept as the readable spec of what :meth:`RPFM.velocity` fuses."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + LayerNorm + Linear(D -> p*p*C_out)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ---------------------------------------------------------------------------------------------------- condition
@dataclass
class Condition:
    """Everything the per-step forward needs that depends only on the sample's condition.

    y: (B, D) aggregated condition vector after ``mlp_final`` and the keep mask (zeros = the null condition).
    ctx: (B, 2C, h, w) the concatenated [source latent, pose latent], or None when input concatenation is off.
    """

    y: Tensor
    ctx: Tensor | None

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    def with_null(self) -> "Condition":
        """The CFG batch (2B): conditional half first, then the same inputs with y zeroed (spec §1.7)."""
        ctx = None if self.ctx is None else torch.cat([self.ctx, self.ctx])
        return Condition(torch.cat([self.y, torch.zeros_like(self.y)]), ctx)

    def to(self, *args, **kwargs) -> "Condition":
        return Condition(self.y.to(*args, **kwargs), None if self.ctx is None else self.ctx.to(*args, **kwargs))


# ---------------------------------------------------------------------------------------------------- the model
class RPFM(nn.Module):
    """v_theta(x_t, t | z_s, z_p, f_pose, f_src): the RPFM velocity network.

    Example::

        model = RPFM(PRESETS["RPFM-B/2"])
        v = model(x_t, t, z_s=z_s, z_p=z_p, f_pose=f_pose, f_src=f_src)   # (B, 4, 32, 32)
    """

    def __init__(self, config: RPFMConfig):
        super().__init__()
        self.config = cfg = config
        D, p, C = cfg.hidden_size, cfg.patch_size, cfg.latent_channels
        self.x_embedder = PatchEmbed(cfg.in_channels, D, p)
        self.t_embedder = TimestepEmbedder(D)
        # Fixed 2-D sin-cos positions, stored as a frozen parameter like DiT/LFM (so DiT checkpoints carry it).
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, D), requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p, C)
        # Condition aggregation (spec §2.3): one module per branch, X-MDPT names.
        branches = set(cfg.branches)
        if "global_pose" in branches:
            self.mlp_dino_pose = _gelu_ln(cfg.pose_feature_dim, D)
            self.conv1d_pose = _token_pool(cfg.num_global_tokens, D)
        if "global_source" in branches:
            self.mlp_dino_img = _gelu_ln(cfg.source_feature_dim, D)
            self.conv1d_global = _token_pool(cfg.num_global_tokens, D)
        if "local_source" in branches:
            self.src_embedder = PatchEmbed(C, D, p)
            self.conv1d_local = _token_pool(cfg.num_tokens, D)
        if "local_pose" in branches:
            self.pose_embedder = PatchEmbed(C, D, p)
            self.conv1d_local_pose = _token_pool(cfg.num_tokens, D)
        if branches:
            self.mlp_final = _gelu_ln(D, D)
        self.initialize_weights()
        self._opsets: dict[tuple[str, torch.dtype], ops.OpSet] = {}
        self._explicit_backends: dict[str, str] = {}

    # ------------------------------------------------------------------ init (DiT + X-MDPT, spec §2.2)
    def initialize_weights(self) -> None:
        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(xavier)
        grid = self.config.latent_size // self.config.patch_size
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed_2d(self.config.hidden_size, grid)).unsqueeze(0))
        for embedder in (self.x_embedder, getattr(self, "src_embedder", None), getattr(self, "pose_embedder", None)):
            if embedder is not None:
                nn.init.xavier_uniform_(embedder.proj.weight.view(embedder.proj.weight.shape[0], -1))
                nn.init.zeros_(embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: every residual branch starts as the identity, the output as zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for name in ("mlp_dino_pose", "mlp_dino_img", "mlp_final"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name)[0].weight, std=0.02)
                nn.init.zeros_(getattr(self, name)[0].bias)
        for name in ("conv1d_pose", "conv1d_global", "conv1d_local", "conv1d_local_pose"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name)[0].weight, std=0.02)  # bias keeps PyTorch's default (X-MDPT)

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ backends
    def opset(self, device: torch.device, dtype: torch.dtype) -> ops.OpSet:
        """The op implementations for this device type and dtype, resolved once and cached.

        Call :meth:`reset_backends` after changing ``RPFM_*_BACKEND`` or inside ``ops.use_backend``.
        """
        key = (device.type, dtype)
        if key not in self._opsets:
            self._opsets[key] = ops.resolve_opset(device, dtype, head_dim=self.config.head_dim,
                                                  explicit=self._explicit_backends)
        return self._opsets[key]

    def set_backends(self, **backends: str) -> None:
        """Require backends per op, e.g. ``set_backends(attention="flash_attn", adaln_modulate="eager")``;
        ``set_backends()`` returns to automatic selection. Checked at the next :meth:`opset` resolution, which
        raises with the reason and the fix if a requested backend cannot run on that device and dtype."""
        unknown = sorted(set(backends) - set(ops.OP_NAMES))
        if unknown:
            raise ValueError(f"set_backends: unknown ops {unknown}. Ops: {list(ops.OP_NAMES)}.")
        self._explicit_backends = dict(backends)
        self.reset_backends()

    def reset_backends(self) -> None:
        self._opsets.clear()

    # ------------------------------------------------------------------ condition (once per sample)
    def prepare_condition(self, *, z_s: Tensor, z_p: Tensor, f_pose: Tensor | None = None,
                          f_src: Tensor | None = None, keep_mask: Tensor | None = None) -> Condition:
        """Aggregate the condition (spec §2.3): y = mlp_final(g_p + g_s + l_s + l_p), masked by ``keep_mask``.

        z_s, z_p: (B, C, h, w) source and pose latents. f_pose: (B, N, pose_feature_dim), f_src:
        (B, N, source_feature_dim) global tokens (required only when the global branches are on).
        keep_mask: (B,) in {0, 1}; 0 gives the null condition (y = 0). Returns a :class:`Condition`.

        Composed of :meth:`source_branches` and :meth:`pose_branches`, so a stream of poses for one source can
        compute the source half once (:meth:`combine_condition`).
        """
        source = self.source_branches(z_s=z_s, f_src=f_src)
        if z_p.shape[0] != z_s.shape[0]:
            raise ValueError(f"z_p: batch size {z_p.shape[0]} does not match z_s ({z_s.shape[0]}). Pass one pose "
                             f"per source.")
        return self.combine_condition(source, self.pose_branches(z_p=z_p, f_pose=f_pose), z_s=z_s, z_p=z_p,
                                      keep_mask=keep_mask)

    def source_branches(self, *, z_s: Tensor, f_src: Tensor | None = None) -> Tensor | None:
        """g_s + l_s: the source's share of the aggregation, (B, 1, D), or None when both branches are off."""
        cfg = self.config
        _check_latent("z_s", z_s, cfg)
        parts = []
        if "global_source" in cfg.branches:
            _check_tokens("f_src", f_src, z_s.shape[0], cfg.num_global_tokens, cfg.source_feature_dim)
            parts.append(self.conv1d_global(self.mlp_dino_img(f_src)))                       # (B, 1, D)
        if "local_source" in cfg.branches:
            parts.append(self.conv1d_local(self.src_embedder(z_s) + self.pos_embed))          # (B, 1, D)
        return _sum(parts)

    def pose_branches(self, *, z_p: Tensor, f_pose: Tensor | None = None) -> Tensor | None:
        """g_p + l_p: the target pose's share of the aggregation, (B, 1, D), or None when both are off."""
        cfg = self.config
        _check_latent("z_p", z_p, cfg)
        parts = []
        if "global_pose" in cfg.branches:
            _check_tokens("f_pose", f_pose, z_p.shape[0], cfg.num_global_tokens, cfg.pose_feature_dim)
            parts.append(self.conv1d_pose(self.mlp_dino_pose(f_pose)))                       # (B, 1, D)
        if "local_pose" in cfg.branches:
            parts.append(self.conv1d_local_pose(self.pose_embedder(z_p) + self.pos_embed))   # (B, 1, D)
        return _sum(parts)

    def combine_condition(self, source: Tensor | None, pose: Tensor | None, *, z_s: Tensor, z_p: Tensor,
                          keep_mask: Tensor | None = None) -> Condition:
        """y = mlp_final(source + pose) (B, D), the keep mask, and the context latents [z_s, z_p]."""
        cfg = self.config
        B = z_p.shape[0]
        if source is not None and source.shape[0] != B:
            source = source.expand(B, -1, -1)                 # one cached source, a batch of poses
            z_s = z_s.expand(B, -1, -1, -1)
        total = _sum([p for p in (source, pose) if p is not None])
        if total is not None:
            y = self.mlp_final(total.squeeze(1))                                             # (B, D)
        else:  # ablation 2: no aggregation, c = t_emb only
            y = z_p.new_zeros(B, cfg.hidden_size, dtype=self.pos_embed.dtype)
        if keep_mask is not None:
            if keep_mask.shape != (B,):
                raise ValueError(f"keep_mask: expected shape ({B},), got {tuple(keep_mask.shape)}.")
            y = y * keep_mask.to(y.dtype).unsqueeze(1)
        ctx = torch.cat([z_s, z_p], dim=1) if cfg.input_concat else None                    # (B, 2C, h, w)
        return Condition(y, ctx)

    # ------------------------------------------------------------------ velocity (once per step)
    def velocity(self, x: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """v = v_theta(x_t, t | cond). x: (B, C, h, w); t: (B,) or 0-dim in [0, 1]; cond for the same B.

        The block loop fuses each gated residual with the *next* LayerNorm + modulate
        (``ops.gated_residual_adaln``), which is exactly :meth:`DiTBlock.forward` reassociated.
        """
        cfg = self.config
        op = self.opset(x.device, x.dtype)
        B = x.shape[0]
        if t.dim() == 0:
            t = t.expand(B)                                       # torchdiffeq passes a 0-dim t
        patches = op.patchify(x, cond.ctx, patch_size=cfg.patch_size)            # (B, T, 3C*p*p)
        h = self.x_embedder.embed_patches(patches) + self.pos_embed              # (B, T, D)
        c = torch.nn.functional.silu(self.t_embedder(t).to(cond.y.dtype) + cond.y)  # (B, D), SiLU of adaLN input
        mods = [m for blk in self.blocks for m in blk.adaLN_modulation[1](c).chunk(6, dim=1)]
        mods += self.final_layer.adaLN_modulation[1](c).chunk(2, dim=1)
        return self.blocks_forward(h, mods, op)

    def blocks_forward(self, h: Tensor, mods, op: ops.OpSet) -> Tensor:
        """The per-step trunk after the patch embedding: every block, the final layer, unpatchify.

        h: (B, T, D) embedded tokens (positions added). mods: 6 * depth + 2 tensors (B, D), block i's
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) at 6i..6i+5, then the final (shift, scale).
        Returns the velocity (B, C, h, w). :mod:`rpfm.hoisted` calls it with modulations computed before the loop.
        """
        cfg = self.config
        fold = op.residual_takes_bias          # proj / fc2 biases added by the residual op instead of the matmul
        u = op.adaln_modulate(h, mods[0], mods[1])                              # depth >= 1 (config)
        for i, blk in enumerate(self.blocks):
            gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[6 * i + 2: 6 * i + 6]
            a = blk.attn(u, op.attention, op.linear, out_bias=not fold)           # (B, T, D)
            h, u = op.gated_residual_adaln(h, a, gate_msa, shift_mlp, scale_mlp,
                                           bias=blk.attn.proj.bias if fold else None)
            m = blk.mlp(u, op.gelu_tanh, op.linear, op.linear_gelu_tanh, out_bias=not fold)   # (B, T, D)
            nxt_shift, nxt_scale = mods[6 * i + 6], mods[6 * i + 7]               # next block's, or the final's
            h, u = op.gated_residual_adaln(h, m, gate_mlp, nxt_shift, nxt_scale,
                                           bias=blk.mlp.fc2.bias if fold else None)
        out = op.linear(u, self.final_layer.linear.weight, self.final_layer.linear.bias)   # (B, T, p*p*C)
        return op.unpatchify(out, patch_size=cfg.patch_size, channels=cfg.latent_channels)  # (B, C, h, w)

    def forward(self, x: Tensor, t: Tensor, *, z_s: Tensor, z_p: Tensor, f_pose: Tensor | None = None,
                f_src: Tensor | None = None, keep_mask: Tensor | None = None) -> Tensor:
        """v_theta(x_t, t, z_s, z_p, f_pose, f_src); see :meth:`prepare_condition` and :meth:`velocity`."""
        _check_latent("x", x, self.config)
        cond = self.prepare_condition(z_s=z_s, z_p=z_p, f_pose=f_pose, f_src=f_src, keep_mask=keep_mask)
        if cond.batch_size != x.shape[0]:
            raise ValueError(f"x: batch size {x.shape[0]} does not match the condition batch {cond.batch_size}.")
        return self.velocity(x, t, cond)

    def forward_textbook(self, x: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """DiT's own forward (concat, conv patch-embed, DiTBlock.forward, FinalLayer): the readable reference that
        :meth:`velocity` must equal. Used by tests; never by samplers."""
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        h_in = x if cond.ctx is None else torch.cat([x, cond.ctx], dim=1)        # (B, 3C, h, w)
        h = self.x_embedder(h_in) + self.pos_embed                                # (B, T, D)
        c = self.t_embedder(t) + cond.y                                           # (B, D)
        for block in self.blocks:
            h = block(h, c)
        out = self.final_layer(h, c)                                              # (B, T, p*p*C)
        return ops.reference.unpatchify_ref(out, patch_size=self.config.patch_size, channels=self.config.latent_channels)


# ---------------------------------------------------------------------------------------------------- checks
def _sum(parts: list[Tensor]) -> Tensor | None:
    return torch.stack(parts).sum(0) if parts else None


def _check_latent(name: str, z: Tensor, cfg: RPFMConfig) -> None:
    expected = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    if not isinstance(z, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, {', '.join(map(str, expected))}), "
                        f"got {type(z).__name__}.")
    if z.dim() != 4 or tuple(z.shape[1:]) != expected:
        raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, expected))}) for image_size "
                         f"{cfg.image_size}, got {tuple(z.shape)}. Encode images of {cfg.image_size}x"
                         f"{cfg.image_size} with the model's codec.")
    if not z.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {z.dtype}.")


def _check_tokens(name: str, f: Tensor | None, B: int, N: int, C: int) -> None:
    if f is None:
        raise ValueError(f"{name}: this model's config uses the global branches and needs {name} of shape "
                         f"({B}, {N}, {C}); got None. Compute it with the pipeline's feature extractor.")
    if tuple(f.shape) != (B, N, C):
        raise ValueError(f"{name}: expected shape ({B}, {N}, {C}), got {tuple(f.shape)}.")


# ---------------------------------------------------------------------------------------------------- positions
def sincos_pos_embed_2d(dim: int, grid_size: int) -> np.ndarray:
    """MAE/DiT fixed 2-D sin-cos embedding: (grid*grid, dim); first half encodes w (columns), second half h."""
    gh = np.arange(grid_size, dtype=np.float64)
    gw = np.arange(grid_size, dtype=np.float64)
    grid = np.meshgrid(gw, gh)                         # w first, as DiT
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_size, grid_size)
    emb_h = _sincos_1d(dim // 2, grid[0])
    emb_w = _sincos_1d(dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1).astype(np.float32)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
