"""Images with known ground truth for the tests that run the real Triton models."""

from __future__ import annotations

import io

import skimage.data
from PIL import Image, ImageDraw, ImageFont

PLATE_BOX = (150, 250, 260, 58)
"""Where plate_scene() draws the plate on skimage.data.coffee() (600x400): x, y, w, h."""
ASTRONAUT_FACE = (180.0, 70.0, 90.0, 95.0)
"""Eileen Collins' face in skimage.data.astronaut() (512x512): brow to chin, ear to ear."""


def plate_scene(text: str = "A123BC77", variant: int = 0) -> bytes:
    """skimage's coffee photo (flipped by ``variant`` so that scenes are not near-duplicates of
    each other) with a white Russian-style plate drawn at PLATE_BOX, as PNG."""
    photo = skimage.data.coffee()
    photo = [photo, photo[:, ::-1], photo[::-1, :], photo[::-1, ::-1]][variant % 4]
    image = Image.fromarray(photo.copy()).convert("RGB")
    draw = ImageDraw.Draw(image)
    x, y, w, h = PLATE_BOX
    draw.rectangle([x, y, x + w, y + h], fill=(250, 250, 250), outline=(10, 10, 10), width=4)
    font = ImageFont.load_default(size=int(h * 0.75))
    draw.text((x + w / 2, y + h / 2), text, fill=(15, 15, 15), font=font, anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
