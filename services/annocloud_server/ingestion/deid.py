"""De-identification: the sensitive regions of an image and blurring them (Pillow; no grpc, no database).

Each region is grown by 10% of its size on every side (detector boxes are tight and a hairline or
the edge of a plate is still telling), then pixelated so that its longer side holds at most
``CELLS`` cells and smoothed with a Gaussian blur: a face eight cells wide is not recognisable.
The image is re-encoded in its own format (JPEG at quality 95), keeping its ICC profile and its
EXIF orientation tag but no other metadata (GPS position, camera serial numbers). Coordinates are
the stored pixel grid, as everywhere else in the project: EXIF orientation is not applied.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from annocloud.common.v1 import common_pb2
from PIL import Image, ImageFilter

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion.media import sniff_image_format

MAX_REGIONS = 1000
MAX_SOURCE_CHARS = 256
EXPAND = 0.10
CELLS = 8
TOLERANCE = 1.0
"""How far (pixels) a person's region may reach past the image edge; it is clipped to the image."""
KINDS = frozenset(
    {common_pb2.SENSITIVE_KIND_FACE, common_pb2.SENSITIVE_KIND_PLATE, common_pb2.SENSITIVE_KIND_OTHER}
)
_ORIENTATION = 0x0112
_BLURRABLE_MODES = ("L", "RGB", "RGBA", "CMYK")


@dataclass(frozen=True)
class Region:
    """A box to blur, in pixels of the stored image."""

    kind: int
    x: float
    y: float
    width: float
    height: float
    score: float = 1.0
    source: str = ""


def pixel_box(region: Region, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The region grown by ``EXPAND`` on every side, rounded outwards and clipped to the image
    (left, top, right, bottom); None when nothing of it is inside."""
    dx, dy = region.width * EXPAND, region.height * EXPAND
    left = max(0, math.floor(region.x - dx))
    top = max(0, math.floor(region.y - dy))
    right = min(width, math.ceil(region.x + region.width + dx))
    bottom = min(height, math.ceil(region.y + region.height + dy))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def clip_detections(regions: Sequence[Region], width: int, height: int) -> list[Region]:
    """A detector's boxes clipped to the image; non-finite or empty boxes are dropped."""
    kept: list[Region] = []
    for region in regions[:MAX_REGIONS]:
        numbers = (region.x, region.y, region.width, region.height)
        if not all(math.isfinite(n) for n in numbers) or region.width <= 0 or region.height <= 0:
            continue
        left, top = max(0.0, region.x), max(0.0, region.y)
        right, bottom = (
            min(float(width), region.x + region.width),
            min(float(height), region.y + region.height),
        )
        if right <= left or bottom <= top:
            continue
        score = region.score if math.isfinite(region.score) else 0.0
        kind = region.kind if region.kind in KINDS else common_pb2.SENSITIVE_KIND_OTHER
        kept.append(
            replace(
                region,
                kind=kind,
                x=left,
                y=top,
                width=right - left,
                height=bottom - top,
                score=min(1.0, max(0.0, score)),
                source=region.source[:MAX_SOURCE_CHARS],
            )
        )
    return kept


def validate_regions(regions: Sequence[Region], width: int, height: int, *, subject: str) -> list[Region]:
    """A person's full set of regions for a ``width`` x ``height`` image, clipped to it; INVALID_ARGUMENT
    naming the field (``regions[3].width``) otherwise. A region without a source is the caller's
    (``subject``), and its score is 1 unless given."""
    if len(regions) > MAX_REGIONS:
        raise InvalidArgument(f"regions has more than {MAX_REGIONS} entries", reason="TOO_MANY_REGIONS")
    checked: list[Region] = []
    for index, region in enumerate(regions):
        where = f"regions[{index}]"

        def bad(field: str, why: str, *, where: str = where) -> InvalidArgument:
            return InvalidArgument(
                f"{where}.{field} {why}", reason="BAD_REGION", metadata={"field": f"{where}.{field}"}
            )

        if region.kind not in KINDS:
            raise bad("kind", "must be SENSITIVE_KIND_FACE, SENSITIVE_KIND_PLATE or SENSITIVE_KIND_OTHER")
        for field in ("x", "y", "width", "height", "score"):
            if not math.isfinite(getattr(region, field)):
                raise bad(field, "must be a finite number")
        if region.width <= 0:
            raise bad("width", "must be greater than 0")
        if region.height <= 0:
            raise bad("height", "must be greater than 0")
        if region.x < -TOLERANCE or region.x >= width:
            raise bad("x", f"must be inside the image (0 to {width})")
        if region.y < -TOLERANCE or region.y >= height:
            raise bad("y", f"must be inside the image (0 to {height})")
        if region.x + region.width > width + TOLERANCE:
            raise bad("width", f"reaches past the right edge of the image ({width} pixels wide)")
        if region.y + region.height > height + TOLERANCE:
            raise bad("height", f"reaches past the bottom edge of the image ({height} pixels high)")
        if not 0.0 <= region.score <= 1.0:
            raise bad("score", "must be between 0 and 1")
        if len(region.source) > MAX_SOURCE_CHARS or not region.source.isprintable():
            raise bad("source", f"must be at most {MAX_SOURCE_CHARS} printable characters")
        left, top = max(0.0, region.x), max(0.0, region.y)
        right, bottom = (
            min(float(width), region.x + region.width),
            min(float(height), region.y + region.height),
        )
        mine = not region.source
        checked.append(
            replace(
                region,
                x=left,
                y=top,
                width=right - left,
                height=bottom - top,
                source=subject if mine else region.source,
                score=1.0 if mine and region.score == 0 else region.score,
            )
        )
    return checked


def check_blurrable(data: bytes) -> None:
    """INVALID_ARGUMENT for an image this module cannot blur completely (an animation: only its
    first frame would be blurred)."""
    image_format = sniff_image_format(data[:16])
    if image_format is None:
        raise InvalidArgument("de-identification needs an image", reason="UNSUPPORTED_MEDIA_TYPE")
    with Image.open(io.BytesIO(data), formats=[image_format]) as image:
        if getattr(image, "n_frames", 1) > 1:
            raise InvalidArgument(
                "animated images cannot be de-identified; upload a still image",
                reason="ANIMATED_IMAGE_UNSUPPORTED",
            )


def blur(data: bytes, regions: Sequence[Region]) -> bytes:
    """The encoded image with every region blurred, in the image's own format."""
    image_format = sniff_image_format(data[:16])
    if image_format is None:
        raise InvalidArgument("de-identification needs an image", reason="UNSUPPORTED_MEDIA_TYPE")
    with Image.open(io.BytesIO(data), formats=[image_format]) as source:
        source.load()
        icc = source.info.get("icc_profile")
        orientation = source.getexif().get(_ORIENTATION)
        work = _blurrable(source)
    for region in regions:
        box = pixel_box(region, work.width, work.height)
        if box is not None:
            work.paste(_obscure(work.crop(box)), box[:2])
    return _encode(work, image_format, icc, orientation)


def _blurrable(image: Image.Image) -> Image.Image:
    if image.mode in _BLURRABLE_MODES:
        return image.copy()
    if image.mode == "LA" or image.has_transparency_data:
        return image.convert("RGBA")
    if image.mode in ("I;16", "I", "F", "1"):
        return image.convert("L")
    return image.convert("RGB")


def _obscure(crop: Image.Image) -> Image.Image:
    width, height = crop.size
    scale = CELLS / max(width, height)
    cells = (max(1, round(width * scale)), max(1, round(height * scale)))
    coarse = crop.resize(cells, Image.Resampling.BOX)
    smooth = coarse.resize((width, height), Image.Resampling.BILINEAR)
    return smooth.filter(ImageFilter.GaussianBlur(radius=max(width, height) / (2 * CELLS)))


def _encode(image: Image.Image, image_format: str, icc: object, orientation: object) -> bytes:
    options: dict[str, object] = {}
    if icc and image_format in ("PNG", "JPEG", "WEBP"):
        options["icc_profile"] = icc
    if isinstance(orientation, int) and orientation != 1 and image_format in ("JPEG", "PNG", "WEBP"):
        exif = Image.Exif()
        exif[_ORIENTATION] = orientation
        options["exif"] = exif.tobytes()
    if image_format == "JPEG":
        options["quality"] = 95
        if image.mode == "RGBA":
            image = image.convert("RGB")
    elif image_format == "WEBP":
        options["quality"] = 95
    elif image_format == "GIF":
        image = image.convert("RGBA").quantize(colors=256) if image.mode == "RGBA" else image.quantize(256)
    elif image_format == "BMP" and image.mode == "CMYK":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()
