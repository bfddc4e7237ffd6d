"""YOLO txt in, one label file at a time: detection (``class cx cy w h``) and segmentation lines.

YOLO files carry neither class names nor image sizes. Names come from ``obj.names`` /
``classes.txt`` / the ``names`` of ``data.yaml`` (or the caller); sizes from the caller's
:data:`~.model.SizeLookup`, else ``images.meta`` (``<stem> <height> <width>`` per line, the sidecar
our export and Datumaro write), else the header of the image in the archive.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

from annocloud.annotations.v1 import annotations_pb2 as ann
from PIL import Image, UnidentifiedImageError

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.model import ItemBuilder, Record, RowError, SizeLookup, round_px
from annocloud_server.formats.safety import MIB, SafeZip, safe_file_name

MAX_LABEL_FILE_BYTES = 16 * MIB
MAX_IMAGE_PIXELS = 400_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
NAME_FILES = ("obj.names", "classes.txt", "data.yaml")
LIST_FILES = frozenset({"train.txt", "val.txt", "valid.txt", "test.txt"})
_YAML_ITEM = re.compile(r"^\s+(\d+)\s*:\s*(.+?)\s*$")


def _unquote(text: str) -> str:
    if text.startswith('"'):
        value = json.loads(text)
        return str(value)
    return text.strip("'")


def names_from_yaml(text: str) -> list[str]:
    """``names`` of a data.yaml written as ``names: [a, b]`` or as ``  0: a`` lines under it."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("names:"):
            continue
        inline = line[len("names:") :].strip()
        if inline.startswith("["):
            return [_unquote(part.strip()) for part in inline.strip("[]").split(",") if part.strip()]
        by_id: dict[int, str] = {}
        for item in lines[index + 1 :]:
            match = _YAML_ITEM.match(item)
            if not match:
                break
            by_id[int(match.group(1))] = _unquote(match.group(2))
        return [by_id[i] for i in sorted(by_id)]
    return []


def class_names(archive: SafeZip) -> list[str]:
    """Class names from the archive's top-level names file (see :data:`NAME_FILES`)."""
    names = set(archive.names())
    for candidate in NAME_FILES:
        if candidate in names:
            text = archive.read(candidate, max_bytes=MIB).decode("utf-8", "replace")
            if candidate == "data.yaml":
                return names_from_yaml(text)
            return [line.strip() for line in text.splitlines() if line.strip()]
    raise InvalidArgument(
        "a YOLO import needs its class names: obj.names, classes.txt or data.yaml",
        reason="YOLO_NAMES_MISSING",
    )


def image_meta(text: str) -> dict[str, tuple[int, int]]:
    """``images.meta``: stem → (width, height) from ``<stem> <height> <width>`` lines."""
    sizes: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            sizes[parts[0]] = (int(parts[2]), int(parts[1]))
    return sizes


def header_size(archive: SafeZip, name: str) -> tuple[int, int] | None:
    """Width and height from an image's header (the pixels are not decoded)."""
    try:
        with archive.open(name) as stream, Image.open(stream) as image:  # type: ignore[arg-type]
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None
    return (width, height) if 0 < width * height <= MAX_IMAGE_PIXELS else None


def parse_line(line: str, names: Sequence[str], width: int, height: int) -> ann.Region:
    """One YOLO line as a region in pixels; ValueError names what is wrong."""
    fields = line.split()
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise ValueError(f"expected 5 fields (box) or an odd number >= 7 (polygon), got {len(fields)}")
    if not fields[0].isdigit() or int(fields[0]) >= len(names):
        raise LookupError(f"class {fields[0]!r} is not one of the {len(names)} class names")
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError as exc:
        raise ValueError(f"not a number ({exc})") from exc
    if not all(math.isfinite(v) for v in values):
        raise ValueError("coordinates must be finite")
    label = names[int(fields[0])]
    if len(values) == 4:
        cx, cy, w, h = values
        box = ann.Box(
            x=round_px((cx - w / 2) * width),
            y=round_px((cy - h / 2) * height),
            width=round_px(w * width),
            height=round_px(h * height),
        )
        return ann.Region(label=label, box=box)
    points = [
        ann.Point(x=round_px(values[i] * width), y=round_px(values[i + 1] * height))
        for i in range(0, len(values), 2)
    ]
    return ann.Region(label=label, polygon=ann.Polygon(points=points))


def read_yolo_file(
    text: str, *, where: str, file_name: str, size: tuple[int, int] | None, names: Sequence[str]
) -> Iterator[Record]:
    """The item of one label file; every line is checked against the image size."""
    width, height = size or (0, 0)
    builder = ItemBuilder(file_name, width, height, where=where, known_labels=names)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        spot = f"{where}:{number}"
        if size is None:
            builder.error(spot, "MISSING_IMAGE_SIZE", f"no size is known for {file_name!r}")
            continue
        try:
            region = parse_line(line, names, width, height)
        except LookupError as exc:
            builder.error(spot, "UNKNOWN_LABEL", str(exc))
            continue
        except ValueError as exc:
            builder.error(spot, "BAD_ROW", str(exc))
            continue
        builder.add(region, spot)
    yield from builder.records()


def _is_label_file(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix == ".txt" and len(path.parts) > 1 and path.name not in LIST_FILES


def _image_index(archive: SafeZip) -> dict[str, str]:
    """Stem (with folder, ``labels`` read as ``images``) → image path, from entries and list files."""
    index: dict[str, str] = {}
    for name in archive.names():
        path = PurePosixPath(name)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(str(path.with_suffix("")), name)
    for list_file in LIST_FILES & set(archive.names()):
        for line in archive.read(list_file, max_bytes=64 * MIB).decode("utf-8", "replace").splitlines():
            path = PurePosixPath(line.strip().removeprefix("./").removeprefix("data/"))
            if path.suffix:
                index.setdefault(str(path.with_suffix("")), str(path))
    return index


def _image_of(label_file: str, index: dict[str, str]) -> str | None:
    stem = str(PurePosixPath(label_file).with_suffix(""))
    parts = stem.split("/")
    mirrored = "/".join("images" if p == "labels" else p for p in parts)
    return index.get(stem) or index.get(mirrored)


def read_yolo(
    archive: SafeZip, *, sizes: SizeLookup | None = None, names: Sequence[str] | None = None
) -> Iterator[Record]:
    """Every label file of a YOLO archive (``*.txt`` inside a folder: ``labels/``, ``obj_train_data/``).

    The item's file name is its image's base name (from the archive or a list file such as
    ``train.txt``), else the label file's stem.
    """
    class_list = list(names) if names is not None else class_names(archive)
    meta = (
        image_meta(archive.read("images.meta", max_bytes=64 * MIB).decode("utf-8", "replace"))
        if "images.meta" in archive.names()
        else {}
    )
    index = _image_index(archive)
    entries = set(archive.names())
    for name in archive.names():
        if not _is_label_file(name):
            continue
        image = _image_of(name, index)
        stem = PurePosixPath(name).stem
        try:
            file_name = safe_file_name(PurePosixPath(image).name if image else stem)
        except InvalidArgument as exc:
            yield RowError(name, exc.reason, exc.message)
            continue
        size = sizes(file_name) if sizes is not None else None
        if size is None:
            size = meta.get(stem)
        if size is None and image is not None and image in entries:
            size = header_size(archive, image)
        if archive.size(name) > MAX_LABEL_FILE_BYTES:
            yield RowError(name, "FILE_TOO_LARGE", f"larger than {MAX_LABEL_FILE_BYTES} bytes")
            continue
        text = archive.read(name, max_bytes=MAX_LABEL_FILE_BYTES).decode("utf-8", "replace")
        yield from read_yolo_file(text, where=name, file_name=file_name, size=size, names=class_list)
