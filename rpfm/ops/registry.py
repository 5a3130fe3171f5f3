"""Backend registry: every op with alternatives picks one implementation once, with graceful fallback.

Rules (style.md §2.3, after diffusers' attention dispatch and Liger's implementation registry):

- A backend registers with ``@register(op, name, priority, probe=..., constraints=...)``. ``probe()`` runs once,
  lazily, and returns ``(available, reason)``; it must catch ImportError/OSError/RuntimeError itself (an installed
  but ABI-broken wheel raises the latter two) or it is treated as unavailable with the exception as the reason.
- ``constraints`` are cheap checks on metadata only (device, dtype, shapes); they never look at values, so selection
  is safe under CUDA-graph capture. Each returns None when satisfied or a reason string.
- **Auto** selection (the default) takes the highest-priority available backend whose constraints pass and never
  fails. **Explicit** selection (env ``RPFM_<OP>_BACKEND``, ``use_backend(op, name)``, or ``RPFM_FORCE_EAGER=1``
  for every op) raises with the reason and the fix when the named backend cannot run.
- Callers resolve once (at model load or module construction) and keep the function; nothing is looked up per step.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

logger = logging.getLogger("rpfm.ops")

Probe = Callable[[], "tuple[bool, str]"]
Constraint = Callable[..., "str | None"]


@dataclass
class Backend:
    op: str
    name: str
    priority: int
    fn: Callable
    probe: Probe | None = None
    constraints: Sequence[Constraint] = ()
    install_hint: str = ""
    _probed: tuple[bool, str] | None = field(default=None, repr=False)

    def availability(self) -> tuple[bool, str]:
        if self._probed is None:
            if self.probe is None:
                self._probed = (True, "always available")
            else:
                try:
                    self._probed = tuple(self.probe())  # type: ignore[assignment]
                except (ImportError, OSError, RuntimeError, AttributeError) as e:  # broken wheel, ABI mismatch
                    self._probed = (False, f"probe failed: {type(e).__name__}: {e}")
        return self._probed  # type: ignore[return-value]

    def check(self, **meta) -> str | None:
        for constraint in self.constraints:
            reason = constraint(**meta)
            if reason:
                return reason
        return None


_REGISTRY: dict[str, dict[str, Backend]] = {}
_OVERRIDES = threading.local()  # use_backend() stack, per thread
EAGER = "eager"


def register(op: str, name: str, *, priority: int, probe: Probe | None = None,
             constraints: Sequence[Constraint] = (), install_hint: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as backend ``name`` of ``op``. Higher priority is preferred in auto mode."""

    def deco(fn: Callable) -> Callable:
        _REGISTRY.setdefault(op, {})[name] = Backend(op, name, priority, fn, probe, tuple(constraints), install_hint)
        return fn

    return deco


def ops() -> list[str]:
    return sorted(_REGISTRY)


def backends(op: str) -> list[Backend]:
    if op not in _REGISTRY:
        raise ValueError(f"op: unknown op {op!r}. Registered ops: {ops()}.")
    return sorted(_REGISTRY[op].values(), key=lambda b: -b.priority)


_ENV_ALIASES = {"attention": ("RPFM_ATTN_BACKEND",)}   # short names users expect, read after the canonical one


def _env_name(op: str) -> str:
    return f"RPFM_{op.upper()}_BACKEND"


def _env_value(op: str) -> str | None:
    for name in (_env_name(op), *_ENV_ALIASES.get(op, ())):
        value = os.environ.get(name)
        if value:
            return value
    return None


def requested(op: str) -> str | None:
    """The explicitly requested backend for ``op`` (context manager first, then env), or None for auto."""
    stack = getattr(_OVERRIDES, "stack", [])
    for entry_op, name in reversed(stack):
        if entry_op in (op, "*"):
            return _fallback_for_force(op, name)
    env = _env_value(op)
    if env:
        return env
    if os.environ.get("RPFM_FORCE_EAGER", "") not in ("", "0"):
        return _fallback_for_force(op, EAGER)
    return None


def _fallback_for_force(op: str, name: str) -> str:
    # "eager" is the universal name for the reference; attention calls its reference "math".
    if name == EAGER and EAGER not in _REGISTRY.get(op, {}) and "math" in _REGISTRY.get(op, {}):
        return "math"
    return name


def resolve(op: str, **meta) -> Backend:
    """Pick the backend for ``op`` given metadata (device, dtype, shapes). See the module docstring for the rules."""
    candidates = backends(op)
    name = requested(op)
    if name is not None:
        chosen = _REGISTRY[op].get(name)
        if chosen is None:
            raise ValueError(f"{op} backend {name!r} is not registered. Registered: {[b.name for b in candidates]}. "
                             f"Unset {_env_name(op)} or pick one of those.")
        ok, reason = chosen.availability()
        if not ok:
            hint = f" Fix: {chosen.install_hint}." if chosen.install_hint else ""
            raise RuntimeError(f"{op} backend {name!r} was requested but is unavailable: {reason}.{hint} "
                               f"Or unset {_env_name(op)} for automatic selection.")
        why = chosen.check(**meta)
        if why:
            raise RuntimeError(f"{op} backend {name!r} was requested but cannot run here: {why}. "
                               f"Unset {_env_name(op)} for automatic selection.")
        return chosen
    no_triton = os.environ.get("RPFM_DISABLE_TRITON", "") not in ("", "0")
    for backend in candidates:
        if no_triton and backend.name == "triton":
            continue
        ok, _ = backend.availability()
        if ok and backend.check(**meta) is None:
            logger.debug("rpfm.ops: %s -> %s", op, backend.name)
            return backend
    raise RuntimeError(f"{op}: no backend can run with {meta}; this is a bug (the eager backend always can).")


@contextlib.contextmanager
def use_backend(op: str, name: str) -> Iterator[None]:
    """Force ``name`` for ``op`` (or for every op with ``op="*"``, e.g. ``use_backend("*", "eager")``) in this
    thread. Modules resolve at construction, so build or reload the model inside the block."""
    if op != "*":
        backends(op)  # validates op
    stack = getattr(_OVERRIDES, "stack", None)
    if stack is None:
        stack = _OVERRIDES.stack = []
    stack.append((op, name))
    try:
        yield
    finally:
        stack.pop()


def report() -> dict[str, dict]:
    """For every op: the backend auto/explicit selection picks for CUDA and CPU, and why others were skipped."""
    out: dict[str, dict] = {}
    for op in ops():
        entry: dict = {"backends": {}}
        for b in backends(op):
            ok, reason = b.availability()
            entry["backends"][b.name] = {"available": ok, "reason": reason, "priority": b.priority}
        for device in ("cpu", "cuda"):
            try:
                entry[f"selected_{device}"] = resolve(op, device=device, dtype=None).name
            except (RuntimeError, ValueError) as e:
                entry[f"selected_{device}"] = f"error: {e}"
        out[op] = entry
    return out
