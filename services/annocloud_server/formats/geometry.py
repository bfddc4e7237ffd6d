"""Geometry shared by readers and writers: polygon and keypoint maths, YOLO lines, COCO RLE masks.

RLE masks become polygons by tracing pixel edges: each 4-connected blob of the mask gives one
polygon through pixel corners (so its area is exactly the blob's pixel count); holes are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from annocloud.annotations.v1 import annotations_pb2

MAX_MASK_PIXELS = 64_000_000

Mask = npt.NDArray[np.bool_]


def box_xywh(box: annotations_pb2.Box) -> list[float]:
    return [box.x, box.y, box.width, box.height]


def polygon_flat(polygon: annotations_pb2.Polygon) -> list[float]:
    """[x1, y1, x2, y2, ...] as COCO segmentation wants it."""
    flat: list[float] = []
    for p in polygon.points:
        flat.extend((p.x, p.y))
    return flat


def polygon_bbox(polygon: annotations_pb2.Polygon) -> list[float]:
    """[x, y, w, h] of the polygon's bounds."""
    xs = [p.x for p in polygon.points]
    ys = [p.y for p in polygon.points]
    if not xs:
        return [0.0, 0.0, 0.0, 0.0]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def signed_area(points: Sequence[tuple[float, float]]) -> float:
    """Shoelace area; positive for clockwise points on screen (y pointing down)."""
    n = len(points)
    twice = 0.0
    for i in range(n):
        (ax, ay), (bx, by) = points[i], points[(i + 1) % n]
        twice += ax * by - bx * ay
    return twice / 2.0


def polygon_area(polygon: annotations_pb2.Polygon) -> float:
    """Area by the shoelace formula (absolute value)."""
    return abs(signed_area([(p.x, p.y) for p in polygon.points]))


def keypoints_flat(keypoints: annotations_pb2.Keypoints) -> tuple[list[float], int]:
    """COCO ``keypoints`` [x, y, v, ...] and ``num_keypoints`` (points with v > 0).

    A point with v = 0 (not labelled) is written as 0, 0, 0 as COCO requires.
    """
    flat: list[float] = []
    labelled = 0
    for p in keypoints.points:
        if p.visibility > 0:
            flat.extend((p.x, p.y, p.visibility))
            labelled += 1
        else:
            flat.extend((0, 0, 0))
    return flat, labelled


def keypoints_bbox(keypoints: annotations_pb2.Keypoints) -> list[float]:
    """[x, y, w, h] of the labelled (v > 0) points; zeros when none is labelled."""
    xs = [p.x for p in keypoints.points if p.visibility > 0]
    ys = [p.y for p in keypoints.points if p.visibility > 0]
    if not xs:
        return [0.0, 0.0, 0.0, 0.0]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def yolo_line(class_id: int, box: annotations_pb2.Box, width: int, height: int) -> str:
    """``class cx cy w h`` normalised by the image size, 6 decimals, not clipped."""
    cx = (box.x + box.width / 2.0) / width
    cy = (box.y + box.height / 2.0) / height
    return f"{class_id} {cx:.6f} {cy:.6f} {box.width / width:.6f} {box.height / height:.6f}"


# --- COCO RLE ------------------------------------------------------------------------------------


def rle_counts_from_string(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (the encoding of pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("the RLE string ends inside a number")
            c = ord(text[p]) - 48
            if c < 0 or c > 63:
                raise ValueError(f"byte {text[p]!r} cannot appear in an RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(counts: Sequence[int], height: int, width: int, *, max_pixels: int = MAX_MASK_PIXELS) -> Mask:
    """The (height, width) mask of COCO run lengths (column-major, starting with a run of zeros)."""
    total = height * width
    if height <= 0 or width <= 0 or total > max_pixels:
        raise ValueError(f"an RLE mask of {width}x{height} is not accepted (at most {max_pixels} pixels)")
    if any(c < 0 for c in counts) or sum(counts) != total:
        raise ValueError(f"the RLE run lengths do not add up to {width}x{height} = {total} pixels")
    values = np.zeros(len(counts), dtype=np.bool_)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    return flat.reshape((width, height)).T


_RIGHT_FIRST = {(1, 0): ((0, 1), (1, 0), (0, -1)), (0, 1): ((-1, 0), (0, 1), (1, 0))}
_RIGHT_FIRST[(-1, 0)] = ((0, -1), (-1, 0), (0, 1))
_RIGHT_FIRST[(0, -1)] = ((1, 0), (0, -1), (-1, 0))


def _edges(mask: Mask) -> dict[tuple[int, int], dict[tuple[int, int], bool]]:
    """Boundary edges, each walked with the mask on its right: start corner → {direction: unused}."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], dict[tuple[int, int], bool]] = {}
    sides = (
        (padded[:-2, 1:-1], (0, 0), (1, 0)),  # above is empty: top edge, west to east
        (padded[1:-1, 2:], (1, 0), (0, 1)),  # right is empty: right edge, north to south
        (padded[2:, 1:-1], (1, 1), (-1, 0)),  # below is empty: bottom edge, east to west
        (padded[1:-1, :-2], (0, 1), (0, -1)),  # left is empty: left edge, south to north
    )
    for neighbour, (ox, oy), direction in sides:
        rows, cols = np.nonzero(inner & ~neighbour)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            edges.setdefault((c + ox, r + oy), {})[direction] = True
    return edges


def mask_to_polygons(mask: Mask) -> list[list[tuple[float, float]]]:
    """Outer boundaries of the 4-connected blobs of ``mask``, through pixel corners; holes dropped."""
    edges = _edges(mask)
    polygons: list[list[tuple[float, float]]] = []
    for start in sorted(edges, key=lambda corner: (corner[1], corner[0])):
        while any(edges[start].values()):
            direction = next(d for d, unused in edges[start].items() if unused)
            corner = start
            loop: list[tuple[float, float]] = []
            while True:
                edges[corner][direction] = False
                nxt = (corner[0] + direction[0], corner[1] + direction[1])
                options = edges[nxt]
                # Turning right first keeps diagonal neighbours apart, and makes the choice a
                # permutation of edges: following it always comes back to the first edge.
                turn = next(d for d in _RIGHT_FIRST[direction] if d in options)
                if turn != direction:
                    loop.append((float(nxt[0]), float(nxt[1])))
                if not options[turn]:
                    break
                corner, direction = nxt, turn
            if len(loop) >= 3 and signed_area(loop) > 0:
                polygons.append(loop)
    return polygons
