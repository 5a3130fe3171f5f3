"""Turn pytest-benchmark JSON files into one Markdown table (median time, GB/s or TFLOP/s, device time)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    out = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "tflops" in info:
            metric = f"{info['tflops']} TFLOP/s ({info.get('fraction_of_peak_device', '?')} of peak, device)"
        elif "ms_per_step" in info:
            metric = f"{info['ms_per_step']} ms/step"
        else:
            metric = f"{info.get('GB/s', '?')} GB/s"
        device = (f"{info['device_ms']} ms" if "device_ms" in info else f"{info.get('device_us', '?')} µs")
        device_rate = info.get("tflops_device", info.get("GB/s_device", "?"))
        out.append(f"| {b['group']} | {b['name'].split('[')[-1].rstrip(']')} | {b['stats']['median'] * 1e3:.3f} | "
                   f"{metric} | {device} | {device_rate} |")
    return out


def main(paths: list[str]) -> int:
    lines = ["| group | case | median ms (host-synced) | rate | device time (CUDA graph) | device rate |",
             "|---|---|---|---|---|---|"]
    for p in paths:
        if Path(p).is_file():
            lines += rows(Path(p))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
