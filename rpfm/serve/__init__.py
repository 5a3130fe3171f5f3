"""``rpfm serve``: a local web demo (Gradio) with three tabs over one loaded pipeline.

* **Generate**: a source photo (upload or a bundled sample) and a target pose (a photo whose pose is estimated, a
  keypoint JSON, or a preset) -> source | pose | result, with timing.
* **Animate**: a driving video or keypoint sequence -> an MP4 shown in the page, with progress.
* **Live**: a webcam stream -> pose estimation -> generated frames through ``pipe.stream`` (the source is encoded
  once per session), with frames/s. Gradio's streaming protocol keeps only the newest camera frame while the model
  is busy, so frames are dropped, never queued.

The parts, one concept per module:

* :mod:`rpfm.serve.uploads`: what the page accepts (image and video checks, size limits, square framing); every
  refusal is an :class:`~rpfm.serve.uploads.UploadError` with a message for the page.
* :mod:`rpfm.serve.context`: the loaded pipeline, samples, preset poses, locks and the temporary folder.
* :mod:`rpfm.serve.handlers`: the Generate and Animate actions as plain functions (testable without a browser).
* :mod:`rpfm.serve.live`: one live session (pose per camera frame -> streamed frame, frames/s).
* :mod:`rpfm.serve.app`: the Gradio page wired to those functions.
* :mod:`rpfm.serve.cli`: ``rpfm serve`` (model loading, temporary folder, launch, clean shutdown).

Gradio is imported only by :mod:`~rpfm.serve.app` and the ``rpfm serve`` command, so ``import rpfm`` never needs
it (install it with ``pip install "rpfm[serve]"``).
"""
