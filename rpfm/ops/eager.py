"""Register the eager reference as the lowest-priority backend of every op, so one is always available.

The registry calls backends without ``upcast``: the eager backend computes in the storage dtype (what plain
PyTorch does); ``upcast=True`` is the fp32 truth the parity tests use.
"""
from __future__ import annotations

from . import reference as ref
from .registry import register

for _op, _fn in (("adaln_modulate", ref.adaln_modulate_ref), ("gated_residual_adaln", ref.gated_residual_adaln_ref),
                 ("patchify", ref.patchify_ref), ("unpatchify", ref.unpatchify_ref),
                 ("gelu_tanh", ref.gelu_tanh_ref), ("euler_cfg_step", ref.euler_cfg_step_ref),
                 ("linear", ref.linear_ref), ("linear_gelu_tanh", ref.linear_gelu_tanh_ref)):
    register(_op, "eager", priority=0)(_fn)
