"""``rpfm.env_report()``: versions, devices, and for every op the backend in use and why others are not."""
from __future__ import annotations

import importlib
import platform


def _version(name: str) -> str:
    try:
        return getattr(importlib.import_module(name), "__version__", "installed")
    except (ImportError, OSError, RuntimeError) as e:
        return f"not available ({type(e).__name__})"


def env_report(print_report: bool = True) -> dict:
    """Collect (and by default print) what rpfm runs on. Returns the report as a dict."""
    import torch

    from . import __version__, ops
    from ._ext import EXT_REASON, HAS_EXT

    report = {
        "rpfm": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "packages": {name: _version(name) for name in ("triton", "flash_attn", "xformers", "diffusers",
                                                       "transformers", "torchdiffeq")},
        "extension": {"available": HAS_EXT, "reason": EXT_REASON},
        "ops": ops.report(),
    }
    if print_report:
        print(format_report(report))
    return report


def format_report(report: dict) -> str:
    lines = [f"rpfm {report['rpfm']}  python {report['python']}  torch {report['torch']}  device {report['device']}"]
    lines.append("packages: " + ", ".join(f"{k} {v}" for k, v in report["packages"].items()))
    ext = report["extension"]
    lines.append(f"rpfm._C: {'available' if ext['available'] else 'unavailable'} ({ext['reason']})")
    for op, entry in report["ops"].items():
        lines.append(f"{op}: cpu -> {entry['selected_cpu']}, cuda -> {entry['selected_cuda']}")
        for name, b in entry["backends"].items():
            lines.append(f"    {name:<11} {'ok ' if b['available'] else 'no '} {b['reason']}")
    return "\n".join(lines)
