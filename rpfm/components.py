"""Type checks for the pipeline's components, with the fix for the usual mistake: a raw diffusers or transformers
module where rpfm expects its wrapper.

``RPFMPipeline(model, codec, pose_encoder, source_encoder)`` takes rpfm's wrappers:

* ``model``: :class:`rpfm.RPFM`;
* ``codec``: a :class:`rpfm.codec.LatentCodec` (``SDVAECodec(AutoencoderKL)`` for an SD-VAE, ``PixelCodec``);
* ``pose_encoder`` / ``source_encoder``: :class:`rpfm.features.GlobalFeatureExtractor` (``GlobalFeatureExtractor
  (Dinov2Model)``) or None.
"""
from __future__ import annotations

from typing import Any

_WRAP_HINTS = {
    "AutoencoderKL": "wrap it: rpfm.codec.SDVAECodec(vae) (or load a folder with rpfm.codec.load_codec(path))",
    "Dinov2Model": "wrap it: rpfm.features.GlobalFeatureExtractor(dinov2) (or load a folder with "
                   "rpfm.features.load_feature_extractor(path))",
}


def _describe(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _hint(obj: Any, default: str) -> str:
    for klass in type(obj).__mro__:
        if klass.__name__ in _WRAP_HINTS:
            return _WRAP_HINTS[klass.__name__]
    return default


def check_component_types(model: Any, codec: Any, pose_encoder: Any, source_encoder: Any) -> None:
    """Raise TypeError naming the argument, the expected wrapper, what arrived and how to wrap it."""
    from .codec import LatentCodec
    from .features import GlobalFeatureExtractor
    from .model import RPFM

    if not isinstance(model, RPFM):
        raise TypeError(f"model: expected an rpfm.RPFM, got {_describe(model)}. Build one with rpfm.RPFM(config) "
                        "or load a pipeline folder with RPFMPipeline.from_pretrained(path).")
    if not isinstance(codec, LatentCodec):
        raise TypeError(f"codec: expected an rpfm.codec.LatentCodec, got {_describe(codec)}; "
                        + _hint(codec, "use rpfm.codec.SDVAECodec(AutoencoderKL) or rpfm.codec.PixelCodec()") + ".")
    for name, enc in (("pose_encoder", pose_encoder), ("source_encoder", source_encoder)):
        if enc is not None and not isinstance(enc, GlobalFeatureExtractor):
            raise TypeError(f"{name}: expected an rpfm.features.GlobalFeatureExtractor or None, got "
                            f"{_describe(enc)}; "
                            + _hint(enc, "use rpfm.features.GlobalFeatureExtractor(Dinov2Model)") + ".")


__all__ = ["check_component_types"]
