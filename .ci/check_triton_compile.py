"""Compile every Triton kernel ahead of time for sm_80, sm_90 and sm_100 in fp32, fp16 and bf16, without a GPU.

    .venv/bin/python .ci/check_triton_compile.py            # all kernels x archs x dtypes; exit 1 on any failure

Each kernel is compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` at the launch
configurations the launchers use (``kernels/_heuristics.py``; the row kernels at every preset's hidden size), with
the same ``enable_fp_fusion`` as the launches. Triton assembles the PTX with the ptxas that ships in its wheel
(``-v``; the report is captured), and any register spill (spill stores/loads > 0 bytes) fails the check like a
compile error.
Takes seconds; needs triton and nothing else (no CUDA driver, no GPU).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

ARCHS = (80, 90, 100)
DTYPES = ("fp32", "fp16", "bf16")
SPILL_RE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
REGS_RE = re.compile(r"Used (\d+) registers")


@dataclass
class Case:
    kernel: str                      # attribute name in its module
    module: str                      # rpfm.kernels.<module>
    signature: dict[str, str]        # arg -> triton type ("*{dt}" is filled per dtype), constexprs as "constexpr"
    constexprs: dict[str, object] = field(default_factory=dict)
    num_warps: int = 4
    label: str = ""


def spills(ptxas_output: str) -> tuple[int, int]:
    """(max registers, total spill bytes) from ``ptxas -v`` output."""
    regs = max((int(m) for m in REGS_RE.findall(ptxas_output)), default=0)
    spill = sum(int(a) + int(b) for a, b in SPILL_RE.findall(ptxas_output))
    return regs, spill


def cases() -> list[Case]:
    from rpfm.config import PRESETS
    from rpfm.kernels import _heuristics as h

    ptr = "*{dt}"
    out = [Case("_gelu_tanh_kernel", "gelu", {"X": ptr, "OUT": ptr, "N": "i32", "BLOCK": "constexpr"},
                {"BLOCK": h.ELEMENTWISE_BLOCK}, h.elementwise_config(1)[1])]
    for D in sorted({p.hidden_size for p in PRESETS.values()}):
        block_d, warps = h.row_config("adaln_modulate", D)
        ints = {n: "i32" for n in ("T", "D", "stride_xb", "stride_xt", "stride_shift_b", "stride_scale_b")}
        out.append(Case("_adaln_modulate_kernel", "adaln",
                        {"X": ptr, "SHIFT": ptr, "SCALE": ptr, "OUT": ptr, **ints, "eps": "fp32",
                         "BLOCK_D": "constexpr"}, {"BLOCK_D": block_d}, warps, f"D={D}"))
        ints = {n: "i32" for n in ("T", "D", "stride_xb", "stride_xt", "stride_yb", "stride_yt", "stride_gate_b",
                                   "stride_shift_b", "stride_scale_b")}
        out.append(Case("_gated_residual_adaln_kernel", "gated_residual",
                        {"X": ptr, "Y": ptr, "GATE": ptr, "SHIFT": ptr, "SCALE": ptr, "X_OUT": ptr, "H_OUT": ptr,
                         **ints, "eps": "fp32", "BLOCK_D": "constexpr"}, {"BLOCK_D": block_d}, warps, f"D={D}"))
    for cfg in {(p.latent_channels * 3 if p.input_concat else p.latent_channels, p.patch_size)
                for p in PRESETS.values()}:
        channels, p = cfg
        block_t, block_f, warps = h.tile_config(channels * p * p)
        ints = {n: "i32" for n in ("Cx", "T", "F", "Wg", "sxb", "sxc", "sxh", "sxw", "scb", "scc", "sch", "scw")}
        for has_ctx in (True, False):
            out.append(Case("_patchify_kernel", "patchify",
                            {"X": ptr, "CTX": ptr, "OUT": ptr, **ints, "P": "constexpr", "HAS_CTX": "constexpr",
                             "BLOCK_T": "constexpr", "BLOCK_F": "constexpr"},
                            {"P": p, "HAS_CTX": has_ctx, "BLOCK_T": block_t, "BLOCK_F": block_f}, warps,
                            f"F={channels * p * p}, ctx={has_ctx}"))
        ints = {n: "i32" for n in ("C", "G", "HW", "syb", "syt", "syf")}
        out.append(Case("_unpatchify_kernel", "patchify",
                        {"Y": ptr, "OUT": ptr, **ints, "P": "constexpr", "BLOCK": "constexpr"},
                        {"P": p, "BLOCK": h.ELEMENTWISE_BLOCK}, h.elementwise_config(1)[1], f"p={p}"))
    return out


def compile_case(case: Case, arch: int, dtype: str) -> str | None:
    """None when it compiles without spills, else the reason."""
    import contextlib
    import importlib
    import io

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from rpfm.kernels._heuristics import FP_FUSION

    fn = getattr(importlib.import_module(f"rpfm.kernels.{case.module}"), case.kernel)
    signature = {k: v.format(dt=dtype) for k, v in case.signature.items()}
    src = ASTSource(fn=fn, signature=signature, constexprs=case.constexprs)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):   # triton prints ptxas -v output (TRITON_DUMP_PTXAS_LOG)
            triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": case.num_warps, "enable_fp_fusion": FP_FUSION})
    except Exception as e:  # noqa: BLE001 - any compiler error is a failure to report
        return f"compile error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    regs, spill = spills(log.getvalue())
    if not regs:
        return "no ptxas report (was the kernel served from a cache?)"
    if spill:
        return f"register spill: {spill} bytes ({regs} registers)"
    return None


def main() -> int:
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")   # the launches pass enable_fp_fusion explicitly too
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"               # really run ptxas (no cache hits) ...
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"               # ... and print its -v report (registers, spills)
    import triton

    failures, total = [], 0
    for case in cases():
        for arch in ARCHS:
            for dtype in DTYPES:
                total += 1
                why = compile_case(case, arch, dtype)
                name = f"{case.kernel}[{case.label or '-'}] sm_{arch} {dtype}"
                if why:
                    failures.append(f"{name}: {why}")
    print(f"check_triton_compile: triton {triton.__version__}, {total} compilations "
          f"({len(cases())} kernel configs x archs {list(ARCHS)} x {list(DTYPES)})")
    for f in failures:
        print(f"check_triton_compile: FAILED {f}", file=sys.stderr)
    print("check_triton_compile: " + ("OK" if not failures else f"{len(failures)} FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
