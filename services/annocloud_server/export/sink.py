"""The zip an export streams into, hashing each file, and the small helpers every writer shares."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from annocloud.annotations.v1 import annotations_pb2

_FLUSH_BYTES = 1 << 16
_COPY_BYTES = 1 << 20
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class ExportResult:
    """What a writer wrote."""

    item_count: int = 0
    annotation_count: int = 0
    skipped_region_count: int = 0
    files: dict[str, str] = field(default_factory=dict)
    """sha256 of every file except manifest.json."""


@dataclass(frozen=True)
class ArtifactInfo:
    """Facts about the export that go into the artifact."""

    format: int
    project: str
    export: str
    created_time: str = ""
    """RFC 3339."""
    date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)
    """Timestamp of every zip entry (the job's creation time), so reruns give identical bytes."""


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def xml_text(value: object) -> str:
    """Text without the control characters XML 1.0 cannot hold."""
    return _XML_ILLEGAL.sub("", str(value))


def one_line(name: str) -> str:
    return name.replace("\r", " ").replace("\n", " ")


def sorted_attributes(region: annotations_pb2.Region) -> dict[str, str]:
    return dict(sorted(region.attributes.items()))


class HashingWriter:
    """Buffers text into a zip entry and hashes exactly the bytes written."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0

    def write(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_bytes(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._sha.update(data)
            self._raw.write(data)
            self._buffer.clear()
            self._buffered = 0

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class ZipSink:
    """A zip being written, remembering the sha256 of each file."""

    def __init__(self, out: IO[bytes], date_time: tuple[int, int, int, int, int, int]):
        self._zip = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self._date_time = date_time
        self.hashes: dict[str, str] = {}

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def write(self, name: str, data: bytes) -> None:
        self.hashes[name] = hashlib.sha256(data).hexdigest()
        self._zip.writestr(self._info(name), data)

    @contextmanager
    def stream(self, name: str) -> Iterator[HashingWriter]:
        with self._zip.open(self._info(name), "w", force_zip64=True) as raw:
            writer = HashingWriter(raw)
            yield writer
            writer.flush()
        self.hashes[name] = writer.hexdigest()

    def close(self) -> None:
        self._zip.close()


def copy_spool(spool: IO[bytes], out: HashingWriter) -> None:
    """Appends a temporary file written earlier to a zip entry."""
    spool.seek(0)
    while chunk := spool.read(_COPY_BYTES):
        out.write_bytes(chunk)
