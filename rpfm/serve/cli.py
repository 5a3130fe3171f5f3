"""``rpfm serve``: load a pipeline, start the web demo on loopback, and clean up on Ctrl+C or SIGTERM.

Every file the server writes (uploads, generated images and videos, the bundled samples it serves) lives in one
temporary folder, printed at start and removed at exit. Gradio is told to fetch nothing: analytics off, no share
link, no server-side rendering; its front end ships inside the wheel.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_PORT = 7860


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``rpfm serve`` on the top-level ``subparsers``."""
    p = subparsers.add_parser(
        "serve", help="start the web demo (Generate, Animate, Live webcam tabs) on this machine",
        description="Start a Gradio web app over one pipeline: Generate (photo + pose -> image), Animate (driving "
        "video or keypoint sequence -> MP4) and Live (webcam -> pose -> generated frames). Without --model it "
        "runs the demo model shipped with rpfm. Needs gradio: pip install 'rpfm[serve]'.",
        epilog="example: rpfm serve            (then open http://127.0.0.1:7860)")
    p.add_argument("--model", default=None, help="pipeline folder (default: the demo model shipped with rpfm)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; 0.0.0.0 serves your network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.set_defaults(func=cmd_serve)
    return p


def _quiet_gradio(tmp: Path) -> None:
    """Environment for Gradio, set before it is imported: files in ``tmp``, nothing sent anywhere."""
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp / "examples")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_CACHE_EXAMPLES"] = "false"
    os.environ["GRADIO_FLAGGING_MODE"] = "never"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def _stop_on_sigterm() -> None:
    def handler(signum, frame):   # a plain kill ends the server like Ctrl+C, so the folder is removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..cli import _device
    from .uploads import MAX_UPLOAD_MB

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: expected 0 to 65535, got {args.port}.")
    device = _device(args.device)
    if args.model is not None and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model: no pipeline folder at '{args.model}'.")
    with tempfile.TemporaryDirectory(prefix="rpfm-serve-") as tmp:
        tmp = Path(tmp)
        _quiet_gradio(tmp)
        try:
            from .app import build_app, launch
        except ImportError as e:
            raise RuntimeError(f"rpfm serve needs gradio ({e}). Install it with pip install 'rpfm[serve]'.") from None
        from .context import load_context

        t0 = time.perf_counter()
        ctx = load_context(args.model, tmp, device=str(device))
        app = build_app(ctx)
        _stop_on_sigterm()
        try:
            url = launch(app, host=args.host, port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                         allowed=[str(tmp)])
        except OSError as e:
            ctx.close()
            raise RuntimeError(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({e}). Pick another "
                               "port with --port.") from None
        print(f"rpfm serve: {url} ({ctx.model_name}, {device}, ready in {time.perf_counter() - t0:.1f} s); "
              f"files in {tmp} (removed at exit). Stop with Ctrl+C.", flush=True)
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("rpfm serve: stopping", file=sys.stderr, flush=True)
        finally:
            app.close()
            ctx.close()
    return 0


__all__ = ["add_cli", "cmd_serve"]
