"""The zip an export streams into, hashing each file, and the small helpers every writer shares."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import struct
import tempfile
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
    file_count: int = 0
    """Files in the zip besides manifest.json."""
    split_counts: dict[str, int] = field(default_factory=dict)
    """Items per split (version exports only)."""

    def add_item(self, split: str) -> None:
        """Counts one written item (and its split, when it has one)."""
        self.item_count += 1
        if split:
            self.split_counts[split] = self.split_counts.get(split, 0) + 1


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
    dataset_version: str = ""
    """`projects/{project}/datasetVersions/{version}` when a dataset version is exported; its items
    then carry a split, and every format records it (see docs/dataset-versions.md)."""

    @property
    def splits(self) -> bool:
        return bool(self.dataset_version)


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
    """Buffers text into a zip entry (at most ~64 KiB plus one record) and hashes exactly the bytes written."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.size = 0
        self.max_buffered = 0
        """The most bytes ever buffered before a flush (tests check the bound)."""

    def write(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_bytes(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        self.size += len(data)
        self.max_buffered = max(self.max_buffered, self._buffered)
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


class SpooledInfos:
    """An append-only list of ``ZipInfo`` kept in a temporary file, for a zip's central directory.

    ``zipfile`` only appends to ``filelist`` when an entry is finished and reads it back once, in
    order, when it writes the central directory on close, so a file of pickled records is enough;
    no ``ZipInfo`` stays in memory however many entries the zip gets.
    """

    _LENGTH = struct.Struct("<I")

    def __init__(self, tmp_dir: str | None = None):
        self._file = tempfile.TemporaryFile(dir=tmp_dir)  # noqa: SIM115 (closed by close())
        self._count = 0

    def append(self, info: zipfile.ZipInfo) -> None:
        record = pickle.dumps(info, protocol=pickle.HIGHEST_PROTOCOL)
        self._file.seek(0, 2)
        self._file.write(self._LENGTH.pack(len(record)) + record)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[zipfile.ZipInfo]:
        self._file.seek(0)
        for _ in range(self._count):
            (length,) = self._LENGTH.unpack(self._file.read(self._LENGTH.size))
            # Our own records in our own temporary file: unpickling them is safe.
            info: zipfile.ZipInfo = pickle.loads(self._file.read(length))  # noqa: S301
            yield info

    def close(self) -> None:
        self._file.close()


class _NoIndex(dict[str, zipfile.ZipInfo]):
    """``NameToInfo`` that keeps nothing: a writing zip only fills it (and warns on a repeated
    name). Names are unique without it: per-image files take stems from ``StemAllocator`` or the
    dataset version (unique there), and the fixed files are distinct and outside those folders."""

    def __setitem__(self, key: str, value: zipfile.ZipInfo) -> None:
        pass


class StreamingZipFile(zipfile.ZipFile):
    """A ``ZipFile`` for writing whose central directory waits on disk, not in memory.

    Only for mode ``"w"``: reading needs the in-memory directory ``zipfile`` builds.
    """

    def __init__(self, out: IO[bytes], tmp_dir: str | None = None):
        super().__init__(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self.filelist: SpooledInfos = SpooledInfos(tmp_dir)  # type: ignore[assignment]
        self.NameToInfo = _NoIndex()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.filelist.close()


class ZipSink:
    """A zip being written; the sha256 and size of each file go to a temporary table on disk
    (a YOLO or VOC export has one file per image, too many to keep in memory) for the manifest,
    and so does the zip's central directory (:class:`StreamingZipFile`).

    ``out`` needs ``write`` and ``tell`` only: without ``seek`` the zip streams (data descriptors).
    """

    def __init__(
        self, out: IO[bytes], date_time: tuple[int, int, int, int, int, int], tmp_dir: str | None = None
    ):
        self._zip = StreamingZipFile(out, tmp_dir)
        self._date_time = date_time
        self._entries = tempfile.TemporaryFile(dir=tmp_dir)  # noqa: SIM115 (closed by close())
        self.file_count = 0
        self.max_buffered = 0
        """The largest buffer any streamed entry held (tests check the bound)."""

    def _record(self, name: str, sha256: str, size: int) -> None:
        entry = dumps({"sha256": sha256, "size": size})
        self._entries.write(f"{',' if self.file_count else ''}{dumps(name)}:{entry}".encode())
        self.file_count += 1

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def write(self, name: str, data: bytes) -> None:
        self._record(name, hashlib.sha256(data).hexdigest(), len(data))
        self._zip.writestr(self._info(name), data)

    @contextmanager
    def stream(self, name: str) -> Iterator[HashingWriter]:
        with self._zip.open(self._info(name), "w", force_zip64=True) as raw:
            writer = HashingWriter(raw)
            yield writer
            writer.flush()
        self.max_buffered = max(self.max_buffered, writer.max_buffered)
        self._record(name, writer.hexdigest(), writer.size)

    def write_manifest(self, header: dict[str, Any]) -> None:
        """``manifest.json``: ``header`` plus ``files`` {name: {sha256, size}} of every other file."""
        head = json.dumps(header, ensure_ascii=False, indent=2)
        with self.stream("manifest.json") as out:
            out.write(head[:-2] + ',\n  "files": {')
            copy_spool(self._entries, out)
            out.write("}\n}\n")

    def copy_entries(self, out: IO[bytes]) -> None:
        """The ``files`` table as written to the manifest (``"name":{...},...``), for a sidecar."""
        self._entries.seek(0)
        while chunk := self._entries.read(_COPY_BYTES):
            out.write(chunk)

    def close(self) -> None:
        try:
            self._zip.close()
        finally:
            self._entries.close()


SPLITS = ("train", "val", "test")


class SplitLists:
    """One spooled list file per split (VOC image sets, YOLO lists); does nothing outside versions."""

    def __init__(self, info: ArtifactInfo, tmp_dir: str | None):
        self._enabled = info.splits
        self._tmp_dir = tmp_dir
        self._spools: dict[str, IO[bytes]] = {}

    def __enter__(self) -> SplitLists:
        if self._enabled:
            self._spools = {s: tempfile.TemporaryFile(dir=self._tmp_dir) for s in SPLITS}  # noqa: SIM115
        return self

    def __exit__(self, *exc: object) -> None:
        for spool in self._spools.values():
            spool.close()

    def add(self, split: str, line: str) -> None:
        if self._enabled and split in self._spools:
            self._spools[split].write(line.encode("utf-8"))

    def write(self, sink: ZipSink, pattern: str, rename: dict[str, str] | None = None) -> None:
        """Adds ``pattern.format(split)`` per split to the zip (an empty file for an empty split)."""
        for split, spool in self._spools.items():
            with sink.stream(pattern.format((rename or {}).get(split, split))) as out:
                copy_spool(spool, out)


def copy_spool(spool: IO[bytes], out: HashingWriter) -> None:
    """Appends a temporary file written earlier to a zip entry."""
    spool.seek(0)
    while chunk := spool.read(_COPY_BYTES):
        out.write_bytes(chunk)
