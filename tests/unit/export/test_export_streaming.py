"""Chunked blob writes and constant-memory export writers (bounded buffers, no whole artifact in memory)."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import pytest
from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2
from annocloud.export.v1 import export_pb2
from annocloud_server.common.blobstore import CHUNK, LocalBlobStore
from annocloud_server.export.domain import ExportItem, schema_view
from annocloud_server.export.formats import write_artifact
from annocloud_server.export.sink import ArtifactInfo, SpooledInfos, StreamingZipFile, ZipSink
from annocloud_server.export.writers_boxes import write_yolo
from annocloud_server.export.writers_tables import write_jsonl
from export_samples import sample_schema


def generated(count: int) -> Iterator[ExportItem]:
    for i in range(count):
        yield ExportItem(
            item=f"datasets/d1/items/i{i}",
            item_id=f"i{i}",
            media_type=common_pb2.MEDIA_TYPE_IMAGE,
            file_name=f"img{i}.jpg",
            width=640,
            height=480,
            text="",
            labels=ann.Labels(
                regions=[ann.Region(label="car", box=ann.Box(x=i % 600, y=5, width=20, height=30))]
            ),
            split=("train", "val", "test")[i % 3],
            stem=f"img{i}",
            ext=".jpg",
        )


def test_blob_writer_streams_in_chunks_and_checksums(tmp_path: Path) -> None:
    """The writer holds at most one chunk, publishes atomically on commit and returns the sha256 and size."""
    blobs = LocalBlobStore(tmp_path)
    pieces = [bytes([i % 251]) * (i * 7919 % 100_000) for i in range(40)]
    with blobs.open_writer("exports/a.bin") as writer:
        for piece in pieces:
            writer.write(piece)
        assert not blobs.exists("exports/a.bin")
        sha, size = writer.commit()
    data = b"".join(pieces)
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert blobs.path("exports/a.bin").read_bytes() == data
    assert 0 < writer.max_pending <= CHUNK
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".upload-")] == []


def test_blob_writer_discards_on_error(tmp_path: Path) -> None:
    """Leaving the block with an exception leaves neither the blob nor a temp file."""
    blobs = LocalBlobStore(tmp_path)

    def fail_midway() -> None:
        with blobs.open_writer("exports/b.bin") as writer:
            writer.write(b"x" * (CHUNK * 3))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert not blobs.exists("exports/b.bin")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".upload-")] == []


@pytest.mark.parametrize("fmt", [export_pb2.EXPORT_FORMAT_COCO, export_pb2.EXPORT_FORMAT_YOLO])
def test_large_export_streams_through_bounded_buffers(tmp_path: Path, fmt: int) -> None:
    """30,000 items stream straight into the blob writer: no buffer ever exceeds one chunk, the zip is valid."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    info = ArtifactInfo(
        format=fmt, project="projects/p1", export="projects/p1/exports/e1", dataset_version="v"
    )
    with blobs.open_writer("exports/big.zip") as writer:
        result = write_artifact(
            cast(IO[bytes], writer),
            generated(30_000),
            info=info,
            schema=schema_view(sample_schema()),
            tmp_dir=str(tmp_path),
        )
        sha, size = writer.commit()
    assert writer.max_pending <= CHUNK
    assert (result.item_count, result.annotation_count) == (30_000, 30_000)
    assert result.split_counts == {"train": 10_000, "val": 10_000, "test": 10_000}
    data = blobs.path("exports/big.zip").read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha
    assert len(data) == size
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    manifest = json.loads(archive.read("manifest.json"))
    assert len(manifest["files"]) == len(archive.namelist()) - 1


def test_stream_buffers_do_not_grow_with_the_number_of_items(tmp_path: Path) -> None:
    """The largest zip-entry buffer is no bigger for 20,000 items than for 2,000 (64 KiB plus one record)."""
    peaks = []
    for count in (2_000, 20_000):
        out = io.BytesIO()
        info = ArtifactInfo(format=export_pb2.EXPORT_FORMAT_JSONL, project="projects/p1", export="e")

        sink = ZipSink(out, info.date_time, str(tmp_path))

        write_jsonl(sink, generated(count), schema_view(sample_schema()), info, str(tmp_path))
        peaks.append(sink.max_buffered)
        sink.close()
    assert all((1 << 16) <= peak < (1 << 16) + 1024 for peak in peaks)


def _live_zip_infos() -> int:
    gc.collect()
    return sum(isinstance(o, zipfile.ZipInfo) for o in gc.get_objects())


def test_zip_directory_stays_on_disk_as_entries_grow(tmp_path: Path) -> None:
    """A YOLO export's zip holds no ZipInfo in memory and indexes no name, for 1,000 or 10,000 images."""
    retained = []
    for count in (1_000, 10_000):
        info = ArtifactInfo(format=export_pb2.EXPORT_FORMAT_YOLO, project="projects/p1", export="e")
        sink = ZipSink(io.BytesIO(), info.date_time, str(tmp_path))
        before = _live_zip_infos()
        write_yolo(sink, generated(count), schema_view(sample_schema()), info, str(tmp_path))
        archive = sink._zip
        assert isinstance(archive, StreamingZipFile)
        assert isinstance(archive.filelist, SpooledInfos)
        assert len(archive.filelist) >= count
        assert len(archive.NameToInfo) == 0
        retained.append(_live_zip_infos() - before)
        sink.close()
    assert retained == [0, 0]


def test_streaming_zip_with_zip64_directory_is_readable(tmp_path: Path) -> None:
    """70,000 entries (past the 65,535 of a plain zip, so ZIP64) read back through zipfile and unzip, in order."""
    path = tmp_path / "many.zip"
    with path.open("wb") as out:
        archive = StreamingZipFile(out, str(tmp_path))
        for i in range(70_000):
            archive.writestr(f"d/{i}.txt", str(i))
        archive.close()
    with zipfile.ZipFile(path) as reread:
        names = reread.namelist()
        assert reread.testzip() is None
        assert reread.read("d/69999.txt") == b"69999"
    assert names == [f"d/{i}.txt" for i in range(70_000)]
    unzip = shutil.which("unzip")
    if unzip:  # an independent reader, where the machine has one
        checked = subprocess.run([unzip, "-tq", str(path)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
