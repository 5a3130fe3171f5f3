"""Progress bars for long loops: a tqdm bar on stderr when tqdm imports, else a plain stderr line.

One helper serves the sampler (``RPFMPipeline.set_progress_bar_config``, diffusers' convention), ``rpfm generate``
batches, ``rpfm eval`` and ``rpfm animate``. Options are tqdm's keyword arguments (``disable``, ``desc``, ``leave``,
``position``, ``file``, ...); ``disable=True`` turns the bar off.
"""
from __future__ import annotations

import sys
import time
from typing import Any


class ProgressBar:
    """``update(n)`` / ``set(done)`` / ``close()``; also a context manager. ``total`` counts units of ``unit``."""

    def __init__(self, total: int, *, desc: str = "", unit: str = "it", **options: Any):
        self.total, self.done, self.desc, self.unit = int(total), 0, desc, unit
        self.disabled = bool(options.pop("disable", False))
        self._bar = None
        self._t0 = time.perf_counter()
        self._file = options.get("file", sys.stderr)
        if self.disabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        options = {"file": sys.stderr, "dynamic_ncols": True, **options}
        self._bar = tqdm(total=self.total, desc=desc or None, unit=unit, **options)

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        """Move the bar to ``done`` units (never backwards)."""
        done = max(self.done, int(done))
        step, self.done = done - self.done, done
        if self.disabled or step == 0:
            return
        if self._bar is not None:
            self._bar.update(step)
            return
        rate = self.done / max(time.perf_counter() - self._t0, 1e-9)
        end = "\n" if self.done >= self.total else ""
        print(f"\r{self.desc} {self.done}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s)", end=end,
              file=self._file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()   # show the final count even if the loop ended inside tqdm's mininterval
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_progress_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``set_progress_bar_config`` keywords early (tqdm would only complain on the next call)."""
    try:
        from tqdm.std import tqdm      # tqdm.auto's class hides the keywords behind **kwargs
    except ImportError:
        return dict(options)
    import inspect

    valid = set(inspect.signature(tqdm.__init__).parameters) - {"self", "iterable", "total", "args", "kwargs"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"set_progress_bar_config: unknown options {unknown}. Valid tqdm options: {sorted(valid)} "
                        "(e.g. disable=True, desc='sampling', leave=False).")
    return dict(options)


__all__ = ["ProgressBar", "check_progress_options"]
