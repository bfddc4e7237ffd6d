"""Media sniffing, decompression-bomb refusal and the perceptual hash."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from annocloud.common.v1 import common_pb2
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion.domain import hamming
from annocloud_server.ingestion.media import analyze, perceptual_hash
from PIL import Image

MAX = 40_000_000


def smooth_image(seed: int, brighten: int = 0, size: tuple[int, int] = (128, 96)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(base.convert("RGB")).astype(int) + brighten
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixels never need to exist to be refused)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def write(tmp_path: Path, data: bytes, name: str = "blob") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
    ],
)
def test_every_allowed_format_is_sniffed(tmp_path: Path, fmt: str, mime: str) -> None:
    """PNG, JPEG, GIF, WebP and BMP are recognised by their bytes, whatever the file name says."""
    data = encoded(smooth_image(1), fmt)
    info = analyze(write(tmp_path, data), file_name="misleading.txt", size=len(data), max_pixels=MAX)
    assert info.media_type == common_pb2.MEDIA_TYPE_IMAGE
    assert (info.content_type, info.width, info.height) == (mime, 128, 96)
    assert info.perceptual_hash is not None


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    """A header claiming more pixels than the limit is a DECOMPRESSION_BOMB."""
    data = header_only_png(8000, 6000)
    with pytest.raises(InvalidArgument) as err:
        analyze(write(tmp_path, data), file_name="x.png", size=len(data), max_pixels=MAX)
    assert err.value.reason == "DECOMPRESSION_BOMB"


def test_pillow_bomb_error_is_mapped(tmp_path: Path) -> None:
    """Past Pillow's own limit (raised while opening) the reason is still DECOMPRESSION_BOMB."""
    data = header_only_png(30000, 30000)
    with pytest.raises(InvalidArgument) as err:
        analyze(write(tmp_path, data), file_name="x.png", size=len(data), max_pixels=10**12)
    assert err.value.reason == "DECOMPRESSION_BOMB"


def test_text_and_unsupported(tmp_path: Path) -> None:
    """UTF-8 .txt is text; other bytes, bad UTF-8, truncated images and empty files are refused."""
    data = "héllo".encode()
    info = analyze(write(tmp_path, data), file_name="a.TXT", size=len(data), max_pixels=MAX)
    assert info.media_type == common_pb2.MEDIA_TYPE_TEXT
    assert info.text == "héllo"
    cases = [
        (b"%PDF-1.4 not an image", "a.pdf", "UNSUPPORTED_MEDIA_TYPE"),
        (b"plain words", "a.csv", "UNSUPPORTED_MEDIA_TYPE"),
        (b"\xff\xfe bad utf8 \xc3", "a.txt", "UNSUPPORTED_MEDIA_TYPE"),
        (encoded(smooth_image(1), "PNG")[:60], "a.png", "UNSUPPORTED_MEDIA_TYPE"),
        (b"", "a.txt", "EMPTY_CONTENT"),
    ]
    for blob, name, reason in cases:
        with pytest.raises(InvalidArgument) as err:
            analyze(write(tmp_path, blob), file_name=name, size=len(blob), max_pixels=MAX)
        assert err.value.reason == reason, name


def test_phash_is_stable_under_brightening_and_separates_different_images() -> None:
    """A brightened copy hashes within hamming 9; a different image is far away."""
    original = perceptual_hash(smooth_image(1))
    assert hamming(original, perceptual_hash(smooth_image(1, brighten=15))) <= 9
    assert hamming(original, perceptual_hash(Image.open(io.BytesIO(encoded(smooth_image(1), "JPEG"))))) <= 9
    assert hamming(original, perceptual_hash(smooth_image(2))) > 9
