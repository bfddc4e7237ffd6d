"""De-identification as pure functions: blurring strength and locality, formats kept, region rules."""

from __future__ import annotations

import io

import numpy as np
import pytest
from annocloud.common.v1 import common_pb2
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion import deid
from annocloud_server.ingestion.deid import Region
from numpy.typing import NDArray
from PIL import Image

FACE = common_pb2.SENSITIVE_KIND_FACE


def noise(fmt: str, size: tuple[int, int] = (120, 80), **save: object) -> bytes:
    rng = np.random.default_rng(3)
    image = Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def rgb(data: bytes) -> NDArray[np.float64]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def test_blur_wipes_the_region_and_leaves_the_rest_of_a_png_alone() -> None:
    """Inside the box the variance drops by far; outside the grown box every pixel is unchanged."""
    original = noise("PNG")
    blurred = deid.blur(original, [Region(FACE, 40, 20, 40, 30)])
    before, after = rgb(original), rgb(blurred)
    assert Image.open(io.BytesIO(blurred)).format == "PNG"
    assert after[20:50, 40:80].var() < before[20:50, 40:80].var() / 50
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[17:53, 36:84] = False  # the box grown by 10% on each side
    assert np.array_equal(after[outside], before[outside])


def test_jpeg_stays_jpeg_keeps_its_orientation_and_loses_other_exif() -> None:
    """A JPEG is re-encoded as JPEG; the EXIF orientation survives, camera/GPS tags do not."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "CameraMaker"
    blurred = deid.blur(noise("JPEG", exif=exif.tobytes(), quality=95), [Region(FACE, 10, 10, 30, 30)])
    with Image.open(io.BytesIO(blurred)) as image:
        assert image.format == "JPEG"
        kept = image.getexif()
    assert kept.get(0x0112) == 6
    assert 0x010F not in kept


def test_no_regions_reencodes_the_same_pixels() -> None:
    """With no region the pixels are the original's (a person removed every false alarm)."""
    original = noise("PNG")
    assert np.array_equal(rgb(deid.blur(original, [])), rgb(original))


def test_pixel_box_grows_by_ten_percent_and_is_clipped() -> None:
    """The box grows by 10% of its size per side, rounded outwards, and stays inside the image."""
    assert deid.pixel_box(Region(FACE, 40, 20, 40, 30), 120, 80) == (36, 17, 84, 53)
    assert deid.pixel_box(Region(FACE, -5, 70, 20, 20), 120, 80) == (0, 68, 17, 80)
    assert deid.pixel_box(Region(FACE, 200, 10, 5, 5), 120, 80) is None


def test_detections_are_clipped_and_nonsense_dropped() -> None:
    """Detector boxes are clipped to the image; NaN, empty or outside boxes are dropped."""
    found = deid.clip_detections(
        [
            Region(FACE, -10, 5, 30, 10, 0.9, "model:face/1"),
            Region(FACE, float("nan"), 5, 30, 10),
            Region(FACE, 5, 5, 0, 10),
            Region(FACE, 500, 5, 10, 10),
        ],
        120,
        80,
    )
    assert found == [Region(FACE, 0, 5, 20, 10, 0.9, "model:face/1")]


def test_a_persons_regions_get_their_subject_and_score_one() -> None:
    """A region without a source is the caller's with score 1; a kept model region is unchanged."""
    model = Region(FACE, 1, 1, 10, 10, 0.7, "model:face/1")
    checked = deid.validate_regions([model, Region(FACE, 110, 70, 10.5, 10.5)], 120, 80, subject="user:a")
    assert checked[0] == model
    assert checked[1] == Region(FACE, 110, 70, 10, 10, 1.0, "user:a")  # within tolerance, clipped


@pytest.mark.parametrize(
    ("region", "field"),
    [
        (Region(common_pb2.SENSITIVE_KIND_UNSPECIFIED, 1, 1, 5, 5), "regions[0].kind"),
        (Region(FACE, 1, float("inf"), 5, 5), "regions[0].y"),
        (Region(FACE, 1, 1, -5, 5), "regions[0].width"),
        (Region(FACE, 1, 1, 5, 0), "regions[0].height"),
        (Region(FACE, -3, 1, 5, 5), "regions[0].x"),
        (Region(FACE, 1, 1, 5, 5, 1.5), "regions[0].score"),
        (Region(FACE, 1, 1, 5, 5, 1, "x" * 300), "regions[0].source"),
    ],
)
def test_bad_regions_name_their_field(region: Region, field: str) -> None:
    """Each bad value is INVALID_ARGUMENT naming the field."""
    with pytest.raises(InvalidArgument) as err:
        deid.validate_regions([region], 120, 80, subject="user:a")
    assert err.value.metadata["field"] == field
    assert field in err.value.message


def test_animated_images_are_refused() -> None:
    """An animation would be blurred in its first frame only, so it is refused."""
    frames = [Image.new("RGB", (20, 20), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidArgument) as err:
        deid.check_blurrable(buffer.getvalue())
    assert err.value.reason == "ANIMATED_IMAGE_UNSUPPORTED"
    deid.check_blurrable(noise("PNG"))
