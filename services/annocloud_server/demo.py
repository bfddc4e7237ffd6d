"""Demo data that ships with the code: rendered street scenes with plate boxes, and support tickets.

Everything is generated from a seed, so the ground truth is known exactly; tests, benches and
``make run`` use the same generator.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

SCENE_WIDTH = 640
SCENE_HEIGHT = 480
TEXT_CATEGORIES = ("billing", "shipping", "technical", "other")

_PLATE_CHARS = "ABCEHKMOPTXY0123456789"
_TICKET_TEMPLATES = {
    "billing": [
        "I was charged twice for order {n}",
        "Why does my invoice {n} show a late fee?",
        "Please refund the duplicate payment on card ending {n}",
        "My subscription price went up without notice, invoice {n}",
    ],
    "shipping": [
        "Parcel {n} has not arrived after two weeks",
        "The courier left package {n} at the wrong address",
        "Can I change the delivery date of shipment {n}?",
        "Tracking for order {n} has not moved since Monday",
    ],
    "technical": [
        "The app crashes when I open the {p} settings page",
        "Error {n} when I try to sync my {p}",
        "The {p} firmware update fails at 80 percent",
        "Login to the {p} dashboard times out",
    ],
    "other": [
        "Do you have a store near postcode {n}?",
        "I would like to give feedback about the {p}",
        "Is the {p} available in green?",
        "Who do I contact about a partnership?",
    ],
}
_PRODUCTS = ("router", "thermostat", "camera", "speaker", "smartwatch")


@dataclass(frozen=True)
class SceneBox:
    label: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class Scene:
    file_name: str
    png: bytes
    time_of_day: str
    boxes: list[SceneBox] = field(default_factory=list)


def render_scene(index: int, seed: int = 7) -> Scene:
    """One street scene: sky, road, 1-3 cars, each with a plate; day or night."""
    rng = random.Random(seed * 100_003 + index)
    night = rng.random() < 0.4
    image = Image.new("RGB", (SCENE_WIDTH, SCENE_HEIGHT))
    draw = ImageDraw.Draw(image)
    sky_top = (10, 14, 40) if night else (90, 150, 230)
    sky_bottom = (30, 30, 60) if night else (190, 220, 250)
    horizon = 200 + rng.randint(-50, 50)
    for y in range(horizon):
        t = y / horizon
        draw.line(
            [(0, y), (SCENE_WIDTH, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_bottom, strict=True)),
        )
    x = 0
    while x < SCENE_WIDTH:  # a skyline that differs per scene, so scenes are not near-duplicates
        width = rng.randint(30, 110)
        top = rng.randint(20, horizon - 10)
        shade = rng.randint(20, 70) if night else rng.randint(80, 200)
        draw.rectangle([x, top, x + width, horizon], fill=(shade, shade - 10, shade + 10))
        x += width + rng.randint(0, 25)
    for _ in range(rng.randint(3, 8)):  # trees and lamp posts break up the low frequencies pHash sees
        cx, cy, r = rng.randint(0, SCENE_WIDTH), rng.randint(horizon - 80, horizon), rng.randint(15, 45)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(20, rng.randint(60, 160), 30))
    sun_x, sun_y, sun_r = (
        rng.randint(40, SCENE_WIDTH - 40),
        rng.randint(20, max(40, horizon - 60)),
        rng.randint(20, 50),
    )
    draw.ellipse(
        [sun_x - sun_r, sun_y - sun_r, sun_x + sun_r, sun_y + sun_r],
        fill=(240, 240, 200) if night else (255, 230, 90),
    )
    bx, bw = rng.randint(0, SCENE_WIDTH - 160), rng.randint(80, 160)  # a billboard
    by = rng.randint(10, max(20, horizon - 90))
    draw.rectangle([bx, by, bx + bw, by + 60], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    road = rng.randint(35, 60) if night else rng.randint(80, 140)
    draw.rectangle([0, horizon, SCENE_WIDTH, SCENE_HEIGHT], fill=(road, road, road + 5))
    for lane_x in range(0, SCENE_WIDTH, 80):
        draw.rectangle([lane_x, 400, lane_x + 40, 406], fill=(220, 220, 200))
    boxes: list[SceneBox] = []
    slots = list(range(3))
    rng.shuffle(slots)
    for slot in slots[: rng.randint(1, 3)]:
        car_w = rng.randint(150, 190)
        car_h = rng.randint(90, 120)
        car_x = 15 + slot * 205 + rng.randint(0, 10)
        car_y = horizon + rng.randint(40, 120)
        color = tuple(rng.randint(30, 220) for _ in range(3))
        draw.rounded_rectangle([car_x, car_y, car_x + car_w, car_y + car_h], radius=14, fill=color)
        draw.rectangle([car_x + 20, car_y + 10, car_x + car_w - 20, car_y + 40], fill=(150, 190, 210))
        plate_w, plate_h = 72, 18
        plate_x = car_x + (car_w - plate_w) // 2
        plate_y = car_y + car_h - plate_h - 10
        draw.rectangle(
            [plate_x, plate_y, plate_x + plate_w, plate_y + plate_h], fill=(245, 245, 245), outline=(0, 0, 0)
        )
        text = "".join(rng.choice(_PLATE_CHARS) for _ in range(7))
        draw.text((plate_x + 8, plate_y + 3), text, fill=(0, 0, 0))
        boxes.append(SceneBox("car", float(car_x), float(car_y), float(car_w + 1), float(car_h + 1)))
        boxes.append(
            SceneBox("plate", float(plate_x), float(plate_y), float(plate_w + 1), float(plate_h + 1))
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return Scene(f"scene_{index:05d}.png", buffer.getvalue(), "night" if night else "day", boxes)


def ticket_texts(count: int, seed: int = 11) -> list[tuple[str, str]]:
    """(text, category) pairs for a text-classification project."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        category = TEXT_CATEGORIES[index % len(TEXT_CATEGORIES)]
        template = rng.choice(_TICKET_TEMPLATES[category])
        out.append((template.format(n=rng.randint(1000, 99999), p=rng.choice(_PRODUCTS)), category))
    return out


def street_schema() -> dict[str, object]:
    """The demo image project's schema in proto JSON form."""
    return {
        "classification_mode": "CLASSIFICATION_MODE_SINGLE",
        "classes": [{"name": "day"}, {"name": "night"}],
        "allow_not_sure": True,
        "objects": [
            {"name": "car", "kind": "OBJECT_KIND_BOX"},
            {
                "name": "plate",
                "kind": "OBJECT_KIND_BOX",
                "attributes": [{"name": "legible", "type": "ATTRIBUTE_TYPE_BOOLEAN"}],
            },
        ],
        "instructions": "Is it day or night? Draw a box around every car and every licence plate.",
    }


def ticket_schema() -> dict[str, object]:
    """The demo text project's schema in proto JSON form."""
    return {
        "classification_mode": "CLASSIFICATION_MODE_SINGLE",
        "classes": [{"name": name} for name in TEXT_CATEGORIES],
        "allow_not_sure": True,
        "objects": [{"name": "product", "kind": "OBJECT_KIND_TEXT_SPAN"}],
        "instructions": "Pick the team that should answer the ticket; mark product names.",
    }
