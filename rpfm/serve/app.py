"""The Gradio page of ``rpfm serve``: three tabs wired to :mod:`rpfm.serve.handlers` and :mod:`rpfm.serve.live`.

Nothing here computes: each event calls a plain handler and turns an :class:`~rpfm.serve.uploads.UploadError` (or a
ValueError/TypeError from the pipeline) into a message in the page; any other exception is logged with its
traceback and shown as an error, and the server keeps serving. Generate and Animate share one queue slot (the
``"model"`` concurrency group), so concurrent users wait their turn, with their place shown in the page.

Element ids (``elem_id``) are the contract the browser tests drive; keep them stable.
"""
from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from . import handlers
from .context import ServeContext
from .live import LiveSession
from .uploads import MAX_VIDEO_FRAMES, UploadError

logger = logging.getLogger("rpfm.serve")

USER_ERRORS = (UploadError, ValueError, TypeError, FileNotFoundError)
LIVE_STREAM_EVERY = 0.1     # seconds between camera frames sent by the page (newer frames replace pending ones)
LIVE_TIME_LIMIT = 300       # seconds one live stream may run before the user restarts it (frees the slot)
QUEUE_SIZE = 32
CSS = "#gen-report, #anim-report, #live-status {min-height: 2.5em}"


def photo_input(**kwargs: Any) -> gr.Image:
    """An image upload whose file path reaches the handler unopened, so rpfm's checks judge it (with a message for
    the page) instead of PIL failing inside Gradio's preprocessing. (Not a subclass: Gradio writes a .pyi stub
    beside the source file of every component subclass.)"""
    image = gr.Image(type="filepath", sources=["upload", "clipboard"], **kwargs)
    decode = image.preprocess

    def preprocess(payload):
        if payload is None or payload.path is None:   # nothing, or a pasted image (a data: URL): Gradio decodes it
            return decode(payload)
        return str(payload.path)

    image.preprocess = preprocess
    return image


def _error(e: Exception) -> str:
    return f"**Error:** {e}"


def _unexpected(where: str, e: Exception) -> gr.Error:
    logger.exception("rpfm serve: %s failed", where)
    return gr.Error(f"{where} failed unexpectedly ({type(e).__name__}: {e}). The server keeps running; see its "
                    "log.")


def _thumb(kp: Any, size: int = 128) -> Image.Image:
    from ..pose.render import render_pose

    drawn = render_pose(kp.resize((2 * size, 2 * size)))    # drawn large, then reduced: thin limbs at any model size
    return Image.fromarray((drawn * 255).round().astype(np.uint8)).resize((size, size), Image.LANCZOS)


# ============================================================================================ tabs
def _generate_tab(ctx: ServeContext, first_sample: Any) -> None:
    with gr.Row():
        with gr.Column():
            source = photo_input(label="Source photo (one person; padded to a square)", value=first_sample,
                                 elem_id="gen-source", height=300)
            gr.Examples([[str(p)] for _, p in ctx.samples], inputs=[source], label="Bundled samples")
        with gr.Column():
            pose_source = gr.Radio(list(handlers.POSE_SOURCES), value="preset", label="Target pose from",
                                   elem_id="gen-pose-source")
            preset = gr.State(0)
            gallery = gr.Gallery([(_thumb(p.keypoints), p.name) for p in ctx.presets], label="Preset poses",
                                 columns=6, height=150, allow_preview=False, selected_index=0, interactive=False,
                                 elem_id="gen-presets")
            with gr.Row():
                pose_photo = photo_input(label="...or a photo of someone in the pose", elem_id="gen-pose-photo",
                                         height=200)
                pose_file = gr.File(label="...or a keypoint file (OpenPose/rpfm JSON, .npy, .txt)",
                                    file_types=[".json", ".npy", ".txt"], elem_id="gen-pose-file", height=200)
    with gr.Row():
        steps = gr.Slider(1, handlers.MAX_STEPS, value=20, step=1, label="Steps", elem_id="gen-steps")
        guidance = gr.Slider(0.0, 3.0, value=1.0, step=0.05, label="Guidance (1.0 = off)", elem_id="gen-guidance")
        seed = gr.Number(0, precision=0, label="Seed", elem_id="gen-seed")
        solver = gr.Dropdown(["euler", "heun", "dopri5"], value="euler", label="Solver", elem_id="gen-solver")
    run = gr.Button("Generate", variant="primary", elem_id="gen-run")
    with gr.Row():
        out_source = gr.Image(label="Source (as the model sees it)", interactive=False, format="png",
                              elem_id="gen-out-source")
        out_pose = gr.Image(label="Target pose", interactive=False, format="png", elem_id="gen-out-pose")
        out_result = gr.Image(label="Result", interactive=False, format="png", elem_id="gen-out-result")
    report = gr.Markdown(elem_id="gen-report")

    def pick_preset(evt: gr.SelectData):
        return evt.index, "preset"

    gallery.select(pick_preset, None, [preset, pose_source], queue=False)
    pose_photo.upload(lambda: "photo", None, pose_source, queue=False)
    pose_file.upload(lambda: "keypoints", None, pose_source, queue=False)

    def on_generate(src, how, idx, photo, kp_file, n, w, s, solv):
        try:
            g = handlers.generate(ctx, src, how, preset=idx, pose_photo=photo, pose_keypoints=kp_file, steps=n,
                                  guidance=w, seed=s, solver=solv)
        except USER_ERRORS as e:
            return None, None, None, _error(e)
        except Exception as e:
            raise _unexpected("Generate", e) from None
        return g.source, g.pose, g.result, g.report

    run.click(on_generate, [source, pose_source, preset, pose_photo, pose_file, steps, guidance, seed, solver],
              [out_source, out_pose, out_result, report], concurrency_id="model", api_name="generate")


def _animate_tab(ctx: ServeContext, first_sample: Any) -> None:
    with gr.Row():
        with gr.Column():
            source = photo_input(label="Source photo", value=first_sample, elem_id="anim-source", height=300)
            gr.Examples([[str(p)] for _, p in ctx.samples], inputs=[source], label="Bundled samples")
        with gr.Column():
            video = gr.File(label="Driving video (MP4, MOV, WebM, ...): poses estimated per frame",
                            file_types=["video"], elem_id="anim-video")
            keypoints = gr.File(label="...or a keypoint sequence: one JSON list, or one keypoint file per frame",
                                file_types=[".json", ".npy", ".txt"], file_count="multiple", elem_id="anim-keypoints")
            with gr.Row():
                steps = gr.Slider(1, 50, value=10, step=1, label="Steps per frame", elem_id="anim-steps")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="anim-seed")
            gr.Markdown(f"At most {MAX_VIDEO_FRAMES} driving frames are used.")
    run = gr.Button("Animate", variant="primary", elem_id="anim-run")
    result = gr.Video(label="Result (pose | generated)", interactive=False, autoplay=True, loop=True,
                      elem_id="anim-out")
    report = gr.Markdown(elem_id="anim-report")

    def on_animate(src, vid, kps, n, s, progress=gr.Progress()):   # noqa: B008 (how Gradio injects progress)
        progress(0, desc="reading the driving poses")

        def update(done: int, total: int) -> None:
            progress(done / total, desc=f"{done}/{total} frames")

        try:
            path, text = handlers.animate_clip(ctx, src, video=vid, keypoint_files=kps, steps=n, seed=s,
                                               progress=update)
        except USER_ERRORS as e:
            return None, _error(e)
        except Exception as e:
            raise _unexpected("Animate", e) from None
        return str(path), text

    run.click(on_animate, [source, video, keypoints, steps, seed], [result, report], concurrency_id="model",
              api_name="animate")


def _live_tab(ctx: ServeContext, first_sample: Any) -> None:
    gr.Markdown("Allow the camera, then press record: every camera frame's pose is estimated and the source "
                "person is generated in it. While the model is busy newer camera frames replace older ones "
                "(dropped, never queued), so the picture stays current.")
    with gr.Row():
        with gr.Column():
            source = photo_input(label="Source photo", value=first_sample, elem_id="live-source", height=200)
            steps = gr.Slider(1, 30, value=10, step=1, label="Steps per frame", elem_id="live-steps")
            camera = gr.Image(label="Camera", sources=["webcam"], type="numpy", streaming=True,
                              elem_id="live-camera")
        with gr.Column():
            output = gr.Image(label="Pose | generated", interactive=False, format="png", elem_id="live-out")
            status = gr.Markdown(elem_id="live-status")
    session = gr.State(None, delete_callback=lambda s: s.close() if s is not None else None)

    def on_frame(frame, src, n, live: LiveSession | None):
        if frame is None:
            return gr.skip(), gr.skip(), live
        key = (src, int(n))
        try:
            if live is None or live.key != key:
                if live is not None:
                    live.close()
                live = LiveSession(ctx, handlers.source_image(ctx, src), steps=int(n), key=key)
            image, text = live(frame)
        except USER_ERRORS as e:
            return None, _error(e), live
        except Exception as e:
            raise _unexpected("Live", e) from None
        return image, text, live

    camera.stream(on_frame, [camera, source, steps, session], [output, status, session],
                  stream_every=LIVE_STREAM_EVERY, time_limit=LIVE_TIME_LIMIT, concurrency_id="live",
                  concurrency_limit=4, show_progress="hidden", api_name="live")


# ============================================================================================ page
def build_app(ctx: ServeContext) -> gr.Blocks:
    """The page for ``ctx``: Generate, Animate and Live tabs (see the package docstring)."""
    size = ctx.image_size
    first = str(ctx.samples[0][1]) if ctx.samples else None
    with gr.Blocks(title="rpfm: pose-guided person image synthesis", analytics_enabled=False,
                   delete_cache=(900, 3600)) as app:
        gr.Markdown(f"# rpfm: pose-guided person image synthesis\nRunning {ctx.model_name} ({size}x{size} images, "
                    f"{ctx.pipe.device.type}). Pick or upload a person and a pose.")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                _generate_tab(ctx, first)
            with gr.Tab("Animate", id="animate", elem_id="tab-animate"):
                _animate_tab(ctx, first)
            with gr.Tab("Live", id="live", elem_id="tab-live"):
                _live_tab(ctx, first)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


def launch(app: gr.Blocks, *, host: str, port: int, max_file_size: str, allowed: list[str]) -> str:
    """Start the server in the background (returns its local URL). Nothing is fetched or shared: no share link,
    no analytics, no server-side rendering (no Node server), no MCP server, no run history."""
    _, url, _ = app.launch(server_name=host, server_port=port, prevent_thread_lock=True, share=False, quiet=True,
                           show_error=True, max_file_size=max_file_size, footer_links=[], run_history=False,
                           ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
                           allowed_paths=allowed, css=CSS)
    return url


__all__ = ["build_app", "launch"]
