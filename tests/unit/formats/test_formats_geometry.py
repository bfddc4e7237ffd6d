"""COCO RLE decoding agrees with pycocotools, and masks become exact pixel-corner polygons."""

from __future__ import annotations

import numpy as np
import pytest
from annocloud_server.formats.geometry import (
    mask_to_polygons,
    rle_counts_from_string,
    rle_decode,
    signed_area,
)
from pycocotools import mask as coco_mask


def _fill(polygons: list[list[tuple[float, float]]], height: int, width: int) -> np.ndarray:  # type: ignore[type-arg]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    flat = [[c for point in polygon for c in point] for polygon in polygons]
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(flat, height, width))).astype(bool)


def test_random_masks_decode_like_pycocotools_and_trace_to_their_area() -> None:
    """For 150 random masks: our RLE decode equals pycocotools', and polygon area ≥ pixel count (holes filled)."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        height, width = (int(v) for v in rng.integers(1, 14, 2))
        mask = rng.random((height, width)) < 0.55
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        counts = rle_counts_from_string(encoded["counts"].decode())
        assert (rle_decode(counts, height, width) == mask).all()
        polygons = mask_to_polygons(mask)
        assert sum(signed_area(p) for p in polygons) >= mask.sum()
        assert all(len(p) >= 4 for p in polygons)


def test_blob_without_holes_is_traced_exactly() -> None:
    """An L-shaped blob gives one polygon whose area is its pixel count and which rasterises back onto it."""
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:5, 1:3] = True
    mask[3:5, 3:6] = True
    (polygon,) = mask_to_polygons(mask)
    assert signed_area(polygon) == mask.sum() == 14
    assert (_fill([polygon], 6, 7) == mask).all()


def test_diagonal_pixels_are_separate_polygons_and_holes_are_dropped() -> None:
    """Pixels touching at a corner are two polygons; a ring gives only its outline."""
    assert len(mask_to_polygons(np.array([[1, 0], [0, 1]], dtype=bool))) == 2
    ring = np.ones((3, 3), dtype=bool)
    ring[1, 1] = False
    (outline,) = mask_to_polygons(ring)
    assert signed_area(outline) == 9


def test_bad_rle_is_refused() -> None:
    """Runs that do not add up, negative runs, oversize masks and garbage strings raise ValueError."""
    with pytest.raises(ValueError, match="add up"):
        rle_decode([1, 2], 2, 2)
    with pytest.raises(ValueError, match="add up"):
        rle_decode([5, -1], 2, 2)
    with pytest.raises(ValueError, match="not accepted"):
        rle_decode([4], 2, 2, max_pixels=3)
    with pytest.raises(ValueError, match="cannot appear"):
        rle_counts_from_string("ab~")
