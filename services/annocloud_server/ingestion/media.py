"""Media sniffing and perceptual hashing (Pillow + numpy; no grpc, no database).

Images are recognised by their magic bytes and opened with Pillow, which reads only the header;
the pixel count is checked against the limit before any pixel is decoded, so a decompression
bomb costs a header read. Text is accepted for ``.txt`` names holding valid UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from annocloud.common.v1 import common_pb2
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion.domain import MAX_TEXT_BYTES

IMAGE_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
_HEAD_BYTES = 16


@dataclass(frozen=True)
class MediaInfo:
    """What the bytes are."""

    media_type: int
    content_type: str
    width: int = 0
    height: int = 0
    perceptual_hash: int | None = None
    text: str = ""


def sniff_image_format(head: bytes) -> str | None:
    """The Pillow format name for the magic bytes at the start of a file, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    return None


def analyze(path: Path, *, file_name: str, size: int, max_pixels: int) -> MediaInfo:
    """Classifies the file at ``path``; INVALID_ARGUMENT for anything not accepted."""
    if size == 0:
        raise InvalidArgument("the content is empty", reason="EMPTY_CONTENT")
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    image_format = sniff_image_format(head)
    if image_format is not None:
        return _analyze_image(path, image_format, max_pixels)
    if file_name.lower().endswith(".txt"):
        return _analyze_text(path, size)
    raise InvalidArgument(
        "unsupported media type: expected a PNG, JPEG, GIF, WebP or BMP image, or UTF-8 .txt text",
        reason="UNSUPPORTED_MEDIA_TYPE",
    )


def _analyze_text(path: Path, size: int) -> MediaInfo:
    if size > MAX_TEXT_BYTES:
        raise InvalidArgument(f"text is larger than {MAX_TEXT_BYTES} bytes", reason="TEXT_TOO_LARGE")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument("a .txt file must be valid UTF-8", reason="UNSUPPORTED_MEDIA_TYPE") from exc
    return MediaInfo(media_type=common_pb2.MEDIA_TYPE_TEXT, content_type=TEXT_CONTENT_TYPE, text=text)


def _bomb(width: int, height: int, max_pixels: int) -> InvalidArgument:
    return InvalidArgument(
        f"image of {width}x{height} pixels is larger than the limit of {max_pixels} pixels",
        reason="DECOMPRESSION_BOMB",
        metadata={"width": str(width), "height": str(height)},
    )


def _analyze_image(path: Path, image_format: str, max_pixels: int) -> MediaInfo:
    try:
        with Image.open(path, formats=[image_format]) as image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InvalidArgument("image has no pixels", reason="UNSUPPORTED_MEDIA_TYPE")
            if width * height > max_pixels:
                raise _bomb(width, height, max_pixels)
            value = perceptual_hash(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(
            f"image refused as a decompression bomb: {exc}", reason="DECOMPRESSION_BOMB"
        ) from exc
    except InvalidArgument:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as exc:
        raise InvalidArgument(
            f"the {image_format} image could not be read: {exc}", reason="UNSUPPORTED_MEDIA_TYPE"
        ) from exc
    return MediaInfo(
        media_type=common_pb2.MEDIA_TYPE_IMAGE,
        content_type=IMAGE_FORMATS[image_format],
        width=width,
        height=height,
        perceptual_hash=value,
    )


@cache
def _dct_matrix(size: int) -> NDArray[np.float64]:
    """Orthonormal DCT-II matrix: ``M @ x`` is the DCT of a column vector ``x``."""
    k = np.arange(size).reshape(-1, 1)
    n = np.arange(size).reshape(1, -1)
    matrix = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * n + 1) * k / (2 * size))
    matrix[0, :] = np.sqrt(1.0 / size)
    return np.asarray(matrix, dtype=np.float64)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit pHash: grayscale 32x32, 2-D DCT, the top-left 8x8 coefficients against the median of
    its 63 AC terms (the DC term is left out of the median; its bit is constant in practice)."""
    image.draft("L", (64, 64))  # JPEG decodes at a reduced scale; a no-op for other formats
    gray = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    return phash_of_array(np.asarray(gray, dtype=np.float64))


def phash_of_array(pixels: NDArray[np.float64]) -> int:
    """pHash of a 32x32 grayscale array."""
    dct = _dct_matrix(32)
    coefficients = (dct @ pixels @ dct.T)[:8, :8].flatten()
    median = float(np.median(coefficients[1:]))
    value = 0
    for bit in coefficients > median:
        value = (value << 1) | int(bit)
    return value
