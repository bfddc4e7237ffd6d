"""Generated street-like scenes with Russian-style licence plates at known places (ground truth).

A scene is a 640x480 crop of one of scikit-image's bundled photos (or smooth noise) with 0-3 plates
drawn on it: a white plate with a thin black border, a black registration number ("A123BC") and a
region code ("77") in the standard 520x112 mm proportions (4.6:1), 110-230 px wide, with mild
perspective (a few degrees of shear), blur, and photo noise. Seeded: the same seed gives the same
scenes, byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WIDTH, HEIGHT = 640, 480
# Letters allowed on Russian plates (those that look alike in Cyrillic and Latin).
LETTERS = "ABEKMHOPCTYX"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "grass", "gravel", "brick", "coins", "moon")
PLATE_ASPECT = 520 / 112

Box = tuple[float, float, float, float]
"""x, y, width, height in pixels."""


@dataclass(frozen=True)
class Scene:
    seed: int
    index: int
    png: bytes
    plates: tuple[Box, ...]
    background: str


@cache
def _photo(name: str) -> np.ndarray:
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(float(image.max()), 1e-9))).astype(np.uint8)
    return image


def _background(rng: np.random.Generator) -> tuple[Image.Image, str]:
    choice = int(rng.integers(0, len(PHOTOS) + 1))
    if choice == len(PHOTOS):
        coarse = rng.integers(40, 215, size=(12, 16, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        return image, "noise"
    name = PHOTOS[choice]
    photo = Image.fromarray(_photo(name))
    scale = max(WIDTH / photo.width, HEIGHT / photo.height) * float(rng.uniform(1.0, 1.6))
    photo = photo.resize((max(WIDTH, round(photo.width * scale)), max(HEIGHT, round(photo.height * scale))))
    x = int(rng.integers(0, photo.width - WIDTH + 1))
    y = int(rng.integers(0, photo.height - HEIGHT + 1))
    return photo.crop((x, y, x + WIDTH, y + HEIGHT)).convert("RGB"), name


def _plate(rng: np.random.Generator, width: int) -> Image.Image:
    height = round(width / PLATE_ASPECT)
    plate = Image.new("RGB", (width, height), (245, 245, 242))
    draw = ImageDraw.Draw(plate)
    border = max(2, round(height * 0.06))
    draw.rectangle([0, 0, width - 1, height - 1], outline=(20, 20, 20), width=border)
    split = round(width * 0.76)
    draw.line([(split, 0), (split, height)], fill=(20, 20, 20), width=max(1, border // 2))
    number = (
        LETTERS[int(rng.integers(len(LETTERS)))]
        + "".join(str(int(d)) for d in rng.integers(0, 10, size=3))
        + "".join(LETTERS[int(i)] for i in rng.integers(0, len(LETTERS), size=2))
    )
    region = str(int(rng.integers(1, 200))).zfill(2)
    font = ImageFont.load_default(size=max(8, round(height * 0.78)))
    draw.text((split / 2, height * 0.52), number, fill=(15, 15, 15), font=font, anchor="mm")
    small = ImageFont.load_default(size=max(6, round(height * 0.5)))
    draw.text(((split + width) / 2, height * 0.45), region, fill=(15, 15, 15), font=small, anchor="mm")
    return plate


def _place(rng: np.random.Generator, size: tuple[int, int], taken: list[Box]) -> Box | None:
    w, h = size
    for _ in range(50):
        x = float(rng.integers(8, WIDTH - w - 8))
        y = float(rng.integers(8, HEIGHT - h - 8))
        if all(
            x + w + 12 < tx or tx + tw + 12 < x or y + h + 12 < ty or ty + th + 12 < y
            for tx, ty, tw, th in taken
        ):
            return (x, y, float(w), float(h))
    return None


def scene(seed: int, index: int) -> Scene:
    """Scene ``index`` of ``seed``: a PNG and the plates' boxes (the drawn plate's outer rectangle)."""
    rng = np.random.default_rng([seed, index])
    image, background = _background(rng)
    plates: list[Box] = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        plate = _plate(rng, int(rng.integers(110, 231)))
        shear = float(rng.uniform(-0.06, 0.06))
        sheared = plate.transform(
            (plate.width, plate.height + round(abs(shear) * plate.width)),
            Image.Transform.AFFINE,
            (1, 0, 0, shear, 1, -max(0.0, shear) * plate.width),
            resample=Image.Resampling.BILINEAR,
            fillcolor=None,
        )
        mask = Image.new("L", plate.size, 255).transform(
            sheared.size,
            Image.Transform.AFFINE,
            (1, 0, 0, shear, 1, -max(0.0, shear) * plate.width),
            resample=Image.Resampling.BILINEAR,
        )
        where = _place(rng, sheared.size, plates)
        if where is None:
            continue
        image.paste(sheared, (int(where[0]), int(where[1])), mask)
        plates.append(where)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    pixels = np.asarray(image).astype(np.float32)
    pixels += rng.normal(0, float(rng.uniform(2, 7)), size=pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return Scene(seed=seed, index=index, png=buffer.getvalue(), plates=tuple(plates), background=background)


def scenes(seed: int, count: int) -> Iterator[Scene]:
    for index in range(count):
        yield scene(seed, index)
