"""Column labels over image rows (the demo grid, side-by-side animation panels): a strip of text above each
column, drawn with PIL's built-in bitmap font (no font files needed)."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 14   # pixels of the text strip at scale 1 (the built-in font is ~11 px tall)


def label_strip(widths: Sequence[int], labels: Sequence[str], *, height: int = LABEL_HEIGHT,
                background: tuple[int, int, int] = (0, 0, 0), colour: tuple[int, int, int] = (255, 255, 255)
                ) -> Image.Image:
    """A (sum(widths) x height) strip with ``labels[i]`` centred over a column ``widths[i]`` wide."""
    if len(widths) != len(labels):
        raise ValueError(f"labels: got {len(labels)} labels for {len(widths)} columns; give one per column.")
    strip = Image.new("RGB", (int(sum(widths)), height), background)
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    x = 0
    for w, text in zip(widths, labels):
        text = str(text)
        while text and draw.textlength(text, font=font) > w - 2:    # shorten what does not fit the column
            text = text[:-1]
        tw = draw.textlength(text, font=font)
        draw.text((x + (w - tw) / 2, max(0, (height - 11) // 2)), text, fill=colour, font=font)
        x += w
    return strip


def with_labels(image: Image.Image, widths: Sequence[int], labels: Sequence[str] | None) -> Image.Image:
    """``image`` with a label strip on top (unchanged when ``labels`` is None)."""
    if labels is None:
        return image
    strip = label_strip(widths, labels)
    out = Image.new("RGB", (image.width, image.height + strip.height))
    out.paste(strip, (0, 0))
    out.paste(image, (0, strip.height))
    return out


__all__ = ["label_strip", "with_labels", "LABEL_HEIGHT"]
