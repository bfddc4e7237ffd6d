"""One entry point per source: an archive (zip with labels and maybe media) or a single file.

The import job (``ingestion/imports.py``) calls :func:`import_archive` twice: once to validate
everything, and, only when that found no error, again to write the items (``docs/imports.md``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from enum import StrEnum
from functools import partial
from pathlib import PurePosixPath

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.coco import read_coco
from annocloud_server.formats.cvat import read_cvat
from annocloud_server.formats.jsonl import read_jsonl
from annocloud_server.formats.labelstudio import read_label_studio
from annocloud_server.formats.model import Record, SizeLookup
from annocloud_server.formats.safety import ByteStream, SafeZip
from annocloud_server.formats.voc import read_voc
from annocloud_server.formats.yolo import IMAGE_SUFFIXES, read_yolo


class ImportFormat(StrEnum):
    COCO = "coco"
    PASCAL_VOC = "pascal_voc"
    YOLO = "yolo"
    CVAT = "cvat"
    LABEL_STUDIO = "label_studio"
    JSONL = "jsonl"


SINGLE_FILE_FORMATS = frozenset(
    {ImportFormat.COCO, ImportFormat.CVAT, ImportFormat.LABEL_STUDIO, ImportFormat.JSONL}
)
_MAIN_FILES = {
    ImportFormat.COCO: (("annotations.json",), ".json", "annotations/"),
    ImportFormat.CVAT: (("annotations.xml", "default.xml"), ".xml", ""),
    ImportFormat.LABEL_STUDIO: (("tasks.json", "result.json"), ".json", ""),
    ImportFormat.JSONL: (("items.jsonl",), ".jsonl", ""),
}


def main_files(archive: SafeZip, fmt: ImportFormat) -> list[str]:
    """The label files of a single-file format inside an archive.

    The well-known name at the top (``annotations.json``, ``annotations.xml`` ...) when there is
    one; else every file with the format's extension under its usual folder (COCO:
    ``annotations/*.json``, as Datumaro and CVAT write one per subset), else at the top level.
    """
    known, suffix, folder = _MAIN_FILES[fmt]
    names = archive.names()
    for name in known:
        if name in names:
            return [name]
    candidates = [n for n in names if n.endswith(suffix) and n != "manifest.json"]
    in_folder = [n for n in candidates if folder and n.startswith(folder)]
    top = [n for n in candidates if "/" not in n]
    found = in_folder or top
    if not found:
        raise InvalidArgument(
            f"the archive has no {fmt.value} label file ({suffix})", reason="LABELS_MISSING"
        )
    return found


def import_file(
    stream: ByteStream, fmt: ImportFormat, *, where: str, known_labels: Collection[str] | None = None
) -> Iterator[Record]:
    """Items of one COCO / CVAT / Label Studio / JSONL file (a COCO stream must be seekable)."""
    if fmt == ImportFormat.COCO:
        return read_coco(stream, where=where, known_labels=known_labels)
    if fmt == ImportFormat.CVAT:
        return read_cvat(stream, where=where, known_labels=known_labels)
    if fmt == ImportFormat.LABEL_STUDIO:
        return read_label_studio(stream, where=where, known_labels=known_labels)
    if fmt == ImportFormat.JSONL:
        return read_jsonl(stream, where=where, known_labels=known_labels)
    raise InvalidArgument(
        f"{fmt.value} is imported from an archive, not a single file", reason="UNKNOWN_FORMAT"
    )


def import_archive(
    archive: SafeZip,
    fmt: ImportFormat,
    *,
    known_labels: Collection[str] | None = None,
    sizes: SizeLookup | None = None,
    class_names: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Items of the labels in ``archive`` (media entries are the caller's: see :func:`media_names`)."""
    if fmt == ImportFormat.PASCAL_VOC:
        yield from read_voc(archive, known_labels=known_labels)
    elif fmt == ImportFormat.YOLO:
        yield from read_yolo(archive, sizes=sizes, names=class_names)
    elif fmt == ImportFormat.COCO:
        for name in main_files(archive, fmt):
            # COCO is read in passes: each opens the entry anew (and is accounted again).
            yield from read_coco(partial(archive.open, name), where=name, known_labels=known_labels)
    else:
        for name in main_files(archive, fmt):
            with archive.open(name) as stream:
                yield from import_file(stream, fmt, where=name, known_labels=known_labels)


def media_names(archive: SafeZip) -> dict[str, str]:
    """Image entries of an archive by base name (what imported items' file names refer to)."""
    media: dict[str, str] = {}
    for name in archive.names():
        path = PurePosixPath(name)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            media.setdefault(path.name, name)
    return media
