"""Guarded import of the compiled extension ``rpfm._C``. This is the only module that imports it.

- :data:`HAS_EXT` says whether ``rpfm._C`` loaded and matches the running torch; :data:`EXT_REASON` says why not
  (or what was loaded). Nothing here raises at import time: optional speed never breaks ``import rpfm``.
- The extension is marked unavailable when ``RPFM_DISABLE_EXT=1``, when it was never built (ImportError), when it
  fails to load (OSError / RuntimeError: an ABI mismatch or missing libtorch symbols), or when
  ``build_info()["torch_version"]`` differs from ``torch.__version__`` (compared as major.minor.patch).
- :func:`extension` returns the module or raises RuntimeError with the reason and the fix.

Build it with ``pip install --no-build-isolation -e .`` against the torch you run (see CMakeLists.txt).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import torch  # first: rpfm._C links libtorch without an RPATH, so torch must have loaded it already

BUILD_HINT = "pip install --no-build-isolation -e . (builds rpfm._C against the installed torch)"
REBUILD_HINT = "rebuild with pip install --no-build-isolation ."


def _release(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0'; '2.12.0a0+git1234' -> '2.12.0'."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return ".".join(m.groups()) if m else version


def _load_beside_install() -> ModuleType | None:
    """Find ``rpfm/_C*.so`` in another ``rpfm`` directory on sys.path and load it as ``rpfm._C``.

    This covers running from a source checkout (whose ``rpfm/`` has no .so) while a non-editable install put the
    module into site-packages. Editable installs do not need it: their import hook maps ``rpfm._C`` already.
    """
    here = Path(__file__).resolve().parent
    for entry in sys.path:
        pkg = Path(entry or ".").resolve() / "rpfm"
        if pkg == here or not pkg.is_dir():
            continue
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = pkg / f"_C{suffix}"
            if candidate.is_file():
                spec = importlib.util.spec_from_file_location("rpfm._C", candidate)
                if spec is None or spec.loader is None:
                    continue
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules["rpfm._C"] = module
                return module
    return None


def _load() -> tuple[ModuleType | None, dict | None, str]:
    if os.environ.get("RPFM_DISABLE_EXT", "") not in ("", "0"):
        return None, None, "disabled by RPFM_DISABLE_EXT=1 (unset it to use rpfm._C)"
    try:
        try:
            _C = importlib.import_module("rpfm._C")
        except ModuleNotFoundError as e:
            if e.name != "rpfm._C":
                raise
            _C = _load_beside_install()
            if _C is None:
                return None, None, f"rpfm._C is not built; build it with {BUILD_HINT}"
        info = dict(_C.build_info())
    except (ImportError, OSError, RuntimeError) as e:  # an installed but ABI-broken build raises the latter two
        return None, None, f"rpfm._C failed to load ({type(e).__name__}: {e}); {REBUILD_HINT}"
    built, running = info.get("torch_version", "?"), _release(torch.__version__)
    if built != running:
        return None, info, f"rpfm._C built for torch {built}, running {running}; {REBUILD_HINT}"
    where = f"CUDA {info['cuda_version']}, archs {info['archs']}" if info.get("cuda") else "CPU only"
    return _C, info, f"rpfm._C loaded ({where}; torch {built}; {info.get('compiler', '?')}) from {_C.__file__}"


_MODULE, _INFO, EXT_REASON = _load()
HAS_EXT: bool = _MODULE is not None
"""True when rpfm._C loaded and was built for the running torch."""


def build_info() -> dict | None:
    """How rpfm._C was built (torch_version, cuda, cuda_version, archs, compiler), or None if it did not load."""
    return None if _INFO is None else dict(_INFO)


def cpu_fused_ops() -> tuple[bool, str]:
    """(available, why): whether the loaded extension has the one-pass CPU kernels of csrc/cpu_fused.cpp
    (``torch.ops.rpfm.adaln_modulate``, ``gated_residual_adaln``, ``gelu_tanh_``)."""
    if not HAS_EXT:
        return False, EXT_REASON
    if not hasattr(torch.ops.rpfm, "gated_residual_adaln"):
        return False, f"rpfm._C predates the fused CPU kernels: {REBUILD_HINT}"
    return True, "rpfm._C one-pass CPU kernels (csrc/cpu_fused.cpp)"


def has_cuda() -> bool:
    """True when the loaded extension has its CUDA kernel and CUDA-graph capture compiled in."""
    return HAS_EXT and bool(_INFO and _INFO.get("cuda"))


def arch_unsupported(capability: tuple[int, int], archs: str) -> str | None:
    """Why CUDA code built for ``archs`` cannot run on a device of compute ``capability`` (None when it can).

    archs: build_info()["archs"], comma-separated CMake-style entries ("80,86,89,90,100+PTX"). A cubin for sm_XY
    runs on devices X.Z with Z >= Y (90a only on 9.0 exactly); "+PTX" embeds compute_XY, which the driver JIT-compiles
    for any device >= X.Y.
    """
    major, minor = capability
    entries = [a.strip() for a in archs.replace(";", ",").split(",") if a.strip()]
    for entry in entries:
        m = re.fullmatch(r"(\d+)(\d)([af]?)(\+PTX)?", entry)
        if m is None:
            continue
        a_major, a_minor, suffix, ptx = int(m[1]), int(m[2]), m[3], bool(m[4])
        if suffix == "a" and (major, minor) == (a_major, a_minor):
            return None
        if suffix != "a" and major == a_major and minor >= a_minor:
            return None
        if ptx and suffix != "a" and (major, minor) >= (a_major, a_minor):
            return None
    return (f"rpfm._C has CUDA code for sm_{archs or '(none)'} only, but the device has compute capability "
            f"{major}.{minor} (sm_{major}{minor}); rebuild it for this GPU: "
            f"pip install --no-build-isolation -C cmake.define.RPFM_CUDA_ARCHS=\"{major}{minor}\" .")


def cuda_unsupported(device: torch.device | str | None = None) -> str | None:
    """Why rpfm._C's CUDA code cannot run on ``device`` (None when it can): not built with CUDA, or built for other
    architectures than the device's (checked at run time, so an A100 or a B200 never meets "no kernel image")."""
    if not HAS_EXT:
        return EXT_REASON
    if not has_cuda():
        return "rpfm._C was built without CUDA (RPFM_WITH_CUDA=OFF or no nvcc at build time)"
    capability = torch.cuda.get_device_capability(device)
    return arch_unsupported(capability, str((_INFO or {}).get("archs", "")))


def extension() -> ModuleType:
    """The ``rpfm._C`` module, or RuntimeError with :data:`EXT_REASON` and the fix."""
    if _MODULE is None:
        raise RuntimeError(f"the compiled extension is unavailable: {EXT_REASON}")
    return _MODULE


__all__ = ["HAS_EXT", "EXT_REASON", "build_info", "has_cuda", "arch_unsupported", "cuda_unsupported", "extension"]
