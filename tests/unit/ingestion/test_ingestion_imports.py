"""Import jobs on SQLite and a local blob store: round trips, row errors, all-or-nothing, hostile input."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2 as pb
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.blobstore import LocalBlobStore
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import TOPIC_INGESTION, EventWriter
from annocloud_server.ingestion import store
from annocloud_server.ingestion.import_jobs import ImportJobs
from annocloud_server.ingestion.ingest import Ingestor
from annocloud_server.ingestion.models import Base, ImportJobRow, Item, outbox
from annocloud_server.ingestion.settings import IngestionSettings
from PIL import Image
from sqlalchemy import select

ORG = "acme"
SCHEMA = tasks_pb2.LabelSchema(
    version=3,
    objects=[
        tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX),
        tasks_pb2.ObjectLabel(name="road", kind=tasks_pb2.OBJECT_KIND_POLYGON),
    ],
)


def png(width: int = 64, height: int = 48, shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 255 - shade, (shade * 7) % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header declares a huge image (the pixels are never there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def make_zip(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def coco(images: list[tuple[str, int, int]], annotations: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "images": [
                {"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(images)
            ],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "road"}],
            "annotations": [{"id": i + 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)],
        }
    )


def coco_archive() -> bytes:
    return make_zip(
        {
            "images/a.png": png(shade=10),
            "images/b.png": png(shade=200),
            "annotations.json": coco(
                [("a.png", 64, 48), ("b.png", 64, 48)],
                [
                    {"image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20]},
                    {"image_id": 2, "category_id": 2, "segmentation": [[0, 0, 30, 0, 30, 30]]},
                ],
            ),
        }
    )


class Env:
    def __init__(self, tmp_path: Path, settings: IngestionSettings):
        self.db = Database(sqlite_url(str(tmp_path / "ingestion.db")))
        self.db.create_tables(Base.metadata)
        self.blobs = LocalBlobStore(tmp_path / "blobs")
        self.ingestor = Ingestor(self.db, self.blobs, EventWriter(outbox, TOPIC_INGESTION), settings)
        self.jobs = ImportJobs(self.ingestor)
        self.root = tmp_path / "blobs"
        self.dataset = self.ingestor.create_dataset(
            organization_id=ORG, display_name="d", description="", request_id=""
        ).id

    def create(
        self,
        data: bytes,
        fmt: int = pb.IMPORT_FORMAT_COCO,
        request_id: str = "",
        schema: tasks_pb2.LabelSchema = SCHEMA,
    ) -> ImportJobRow:
        return self.jobs.create(
            organization_id=ORG,
            dataset_id=self.dataset,
            project_id="p1",
            schema=schema,
            fmt=fmt,
            file_name="upload.zip",
            request_id=request_id,
            chunks=iter([data[: len(data) // 2], data[len(data) // 2 :]]),
        )

    def run(
        self, data: bytes, fmt: int = pb.IMPORT_FORMAT_COCO, schema: tasks_pb2.LabelSchema = SCHEMA
    ) -> ImportJobRow:
        created = self.create(data, fmt, schema=schema)
        assert self.jobs.run_once()
        with self.db.read() as session:
            job = session.get(ImportJobRow, created.seq)
            assert job is not None
            session.expunge(job)
            return job

    def upload_png(self, file_name: str) -> Item:
        item, _ = self.ingestor.upload(
            organization_id=ORG,
            dataset_id=self.dataset,
            file_name=file_name,
            metadata_json="{}",
            request_id="",
            chunks=[png()],
        )
        return item

    def items(self) -> list[Item]:
        with self.db.read() as session:
            return list(session.scalars(select(Item)))

    def events(self) -> list[events_pb2.EventEnvelope]:
        with self.db.read() as session:
            rows = session.execute(select(outbox.c.value).order_by(outbox.c.id)).all()
        return [events_pb2.EventEnvelope.FromString(r.value) for r in rows]

    def imported(self) -> list[events_pb2.LabelsImported]:
        return [e.labels_imported for e in self.events() if e.HasField("labels_imported")]

    def blob_files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path, IngestionSettings(max_image_pixels=10_000_000, max_import_entries=50))
    yield environment
    environment.db.dispose()


def assert_nothing_written(env: Env, job: ImportJobRow) -> None:
    assert job.state == pb.IMPORT_STATE_FAILED
    assert env.items() == []
    assert env.events() == []
    assert env.blob_files() == []


def test_coco_archive_creates_items_and_predictions_with_provenance(env: Env) -> None:
    """A COCO zip becomes two items and two LabelsImported events (model import:coco, version = job id,
    score 1.0), and the upload blob is gone afterwards."""
    job = env.run(coco_archive())
    assert (job.state, job.item_count, job.prediction_count, job.error_count) == (
        pb.IMPORT_STATE_SUCCEEDED,
        2,
        2,
        0,
    )
    items = {i.file_name: i for i in env.items()}
    assert set(items) == {"a.png", "b.png"}
    assert items["a.png"].width == 64
    imported = env.imported()
    assert {(e.model, e.model_version, e.score, e.project) for e in imported} == {
        ("import:coco", job.id, 1.0, "projects/p1")
    }
    box = next(e for e in imported if e.item.file_name == "a.png").labels.regions[0]
    assert (box.label, box.box.x, box.box.y, box.box.width, box.box.height) == ("car", 1, 2, 10, 20)
    assert [p.name for p in env.blob_files() if "imports" in str(p)] == []
    assert sum(1 for e in env.events() if e.HasField("item_ingested")) == 2


@pytest.mark.parametrize("fmt", [pb.IMPORT_FORMAT_CVAT, pb.IMPORT_FORMAT_YOLO])
def test_cvat_and_yolo_archives_import_the_same_box(env: Env, fmt: int) -> None:
    """CVAT XML and YOLO txt archives with one image give the item and the box in pixels."""
    if fmt == pb.IMPORT_FORMAT_CVAT:
        labels: dict[str, bytes | str] = {
            "annotations.xml": "<annotations><meta><task><labels><label><name>car</name></label></labels>"
            '</task></meta><image id="0" name="a.png" width="64" height="48">'
            '<box label="car" xtl="8" ytl="4" xbr="24" ybr="28" occluded="0"/></image></annotations>'
        }
    else:
        labels = {"obj.names": "car\n", "obj_train_data/a.txt": "0 0.25 0.333333 0.25 0.5\n"}
    job = env.run(make_zip({"obj_train_data/a.png": png(), **labels}), fmt)
    assert job.state == pb.IMPORT_STATE_SUCCEEDED, job.failure_message
    (event,) = env.imported()
    box = event.labels.regions[0].box
    assert (event.item.file_name, round(box.x), round(box.y), round(box.width), round(box.height)) == (
        "a.png",
        8,
        4,
        16,
        24,
    )


def test_label_file_only_matches_existing_items_by_file_name(env: Env) -> None:
    """A bare JSONL label file labels an item already in the dataset (matched by file name), creating none."""
    item = env.upload_png("street.png")
    row = {
        "file_name": "street.png",
        "width": 64,
        "height": 48,
        "regions": [{"label": "car", "type": "box", "geometry": {"x": 1, "y": 1, "width": 5, "height": 5}}],
    }
    job = env.run(json.dumps(row).encode() + b"\n", pb.IMPORT_FORMAT_JSONL)
    assert (job.state, job.item_count, job.matched_item_count, job.prediction_count) == (
        pb.IMPORT_STATE_SUCCEEDED,
        0,
        1,
        1,
    )
    assert env.imported()[0].item.name.endswith(f"/items/{item.id}")


def test_one_bad_row_anywhere_writes_nothing_and_reports_every_row(env: Env) -> None:
    """Negative sizes, a 2-point polygon, an unknown category and out-of-image boxes fail the job with
    each row named; no item, event or blob is left behind."""
    data = make_zip(
        {
            "a.png": png(),
            "b.png": png(shade=99),
            "annotations.json": coco(
                [("a.png", 64, 48), ("b.png", 64, 48)],
                [
                    {"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                    {"image_id": 1, "category_id": 1, "bbox": [1, 1, -5, 5]},
                    {"image_id": 2, "category_id": 2, "segmentation": [[0, 0, 5, 5]]},
                    {"image_id": 2, "category_id": 9, "bbox": [1, 1, 5, 5]},
                    {"image_id": 2, "category_id": 1, "bbox": [60, 40, 10, 10]},
                ],
            ),
        }
    )
    job = env.run(data)
    assert_nothing_written(env, job)
    assert job.failure_reason == "IMPORT_INVALID"
    assert job.error_count == 4
    reasons = sorted(e["reason"] for e in json.loads(job.errors_json))
    assert reasons == ["BAD_GEOMETRY", "BAD_GEOMETRY", "GEOMETRY_OUT_OF_IMAGE", "UNKNOWN_LABEL"]
    assert all("annotations.json" in e["where"] for e in json.loads(job.errors_json))


def test_error_list_is_capped_but_counted(env: Env) -> None:
    """150 bad rows: the job lists the first 100 and counts all 150."""
    bad = [{"image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]} for _ in range(150)]
    job = env.run(make_zip({"a.png": png(), "annotations.json": coco([("a.png", 64, 48)], bad)}))
    assert (job.error_count, len(json.loads(job.errors_json))) == (150, 100)
    assert_nothing_written(env, job)


@pytest.mark.parametrize(
    ("file_name", "reason"),
    [
        ("../../etc/passwd.png", "UNSAFE_FILE_NAME"),
        ("/abs/a.png", "UNSAFE_FILE_NAME"),
        ("nope.png", "ITEM_NOT_FOUND"),
    ],
)
def test_bad_file_names_in_labels_are_row_errors(env: Env, file_name: str, reason: str) -> None:
    """Path traversal or absolute paths in file_name fields, and labels for media that is nowhere, fail the job."""
    data = coco([(file_name, 64, 48)], [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}]).encode()
    job = env.run(data)
    assert_nothing_written(env, job)
    assert reason in {e["reason"] for e in json.loads(job.errors_json)}


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link.png")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (make_zip({"../evil.png": png()}), "ZIP_UNSAFE_PATH"),
        (make_zip({"/etc/evil.png": png()}), "ZIP_UNSAFE_PATH"),
        (_symlink_zip(), "ZIP_SYMLINK"),
        (make_zip({"inner.zip": make_zip({"a.png": png()})}), "ZIP_NESTED_ARCHIVE"),
        (make_zip({"zeros.bin": b"\0" * (4 << 20)}), "ZIP_BOMB"),
        (make_zip({f"{i}.txt": "x" for i in range(51)}), "ZIP_TOO_MANY_ENTRIES"),
        (b"", "EMPTY_CONTENT"),
    ],
)
def test_hostile_archives_are_refused_before_a_job_exists(env: Env, data: bytes, reason: str) -> None:
    """Zip-slip, absolute paths, symlinks, nested archives, ratio bombs and entry caps are INVALID_ARGUMENT at
    CreateImport; no job, no blob."""
    with pytest.raises(InvalidArgument) as err:
        env.create(data)
    assert err.value.reason == reason
    with env.db.read() as session:
        assert session.scalars(select(ImportJobRow)).all() == []
    assert env.blob_files() == []


def test_bare_label_file_of_an_archive_format_is_refused(env: Env) -> None:
    """YOLO and VOC need an archive: a bare file is ARCHIVE_REQUIRED."""
    with pytest.raises(InvalidArgument) as err:
        env.create(b"0 0.5 0.5 0.1 0.1\n", pb.IMPORT_FORMAT_YOLO)
    assert err.value.reason == "ARCHIVE_REQUIRED"


def test_decompression_bomb_image_inside_an_archive_fails_the_job(env: Env) -> None:
    """An image declaring 400 Mpx inside the zip is a DECOMPRESSION_BOMB row error and leaves no blob."""
    data = make_zip(
        {
            "a.png": png(),
            "bomb.png": bomb_png(),
            "annotations.json": coco([("a.png", 64, 48), ("bomb.png", 20_000, 20_000)], []),
        }
    )
    job = env.run(data)
    assert_nothing_written(env, job)
    assert {e["reason"] for e in json.loads(job.errors_json)} == {"DECOMPRESSION_BOMB"}


@pytest.mark.parametrize(
    ("fmt", "data", "reason"),
    [
        (
            pb.IMPORT_FORMAT_CVAT,
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotations>&x;</annotations>',
            "XML_FORBIDDEN",
        ),
        (
            pb.IMPORT_FORMAT_CVAT,
            b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><annotations>&b;</annotations>',
            "XML_FORBIDDEN",
        ),
        (
            pb.IMPORT_FORMAT_COCO,
            b'{"images": [{"id": 1, "width": NaN}], "annotations": []}',
            "JSON_NON_FINITE",
        ),
        (pb.IMPORT_FORMAT_COCO, b'{"images": ' + b"[" * 500 + b"]" * 500 + b"}", "JSON_TOO_DEEP"),
        (pb.IMPORT_FORMAT_LABEL_STUDIO, b'[{"data": {"image": "a.png"}, "x": Infinity}]', "JSON_NON_FINITE"),
    ],
)
def test_hostile_label_files_fail_the_job(env: Env, fmt: int, data: bytes, reason: str) -> None:
    """XXE, entity expansion, NaN/Infinity and deep nesting refuse the whole source with their reason."""
    job = env.run(data, fmt)
    assert_nothing_written(env, job)
    assert job.failure_reason == reason


def test_crash_mid_write_leaves_nothing_visible(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while the second item is written rolls back the first one and every event."""
    real = store.add_item
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Item:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "add_item", flaky)
    job = env.run(coco_archive())
    assert_nothing_written(env, job)
    assert job.failure_reason == "INTERNAL"


def test_duplicate_media_labels_go_to_the_existing_item(env: Env) -> None:
    """Media identical to an existing item is not created again; its labels become that item's prediction."""
    first = env.run(coco_archive())
    second = env.run(coco_archive())
    assert (first.item_count, second.item_count, second.duplicate_count, second.prediction_count) == (
        2,
        0,
        2,
        2,
    )
    assert len(env.items()) == 2
    assert len(env.imported()) == 4


def test_request_id_returns_the_first_job(env: Env) -> None:
    """CreateImport with a repeated request_id returns the first job and stores no second upload."""
    one = env.create(coco_archive(), request_id="r-1")
    two = env.create(coco_archive(), request_id="r-1")
    assert one.id == two.id
    assert len([p for p in env.blob_files() if p.name.endswith(".upload")]) == 1


def test_labels_the_project_schema_cannot_hold_fail_the_job_and_write_nothing(env: Env) -> None:
    """A label the schema does not know and a polygon label given as a box are per-row errors naming the
    region; the job is FAILED IMPORT_INVALID with both counted, and no item, event or blob remains."""
    labels = json.dumps(
        {
            "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
            "categories": [{"id": 1, "name": "truck"}, {"id": 2, "name": "road"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 1, 9, 9]},
            ],
        }
    )
    job = env.run(make_zip({"a.png": png(), "annotations.json": labels}))
    assert_nothing_written(env, job)
    assert (job.failure_reason, job.error_count) == ("IMPORT_INVALID", 2)
    errors = sorted((e["reason"], e["where"].rsplit(": ", 1)[1]) for e in json.loads(job.errors_json))
    assert errors == [("LABEL_KIND_MISMATCH", "regions[1]"), ("UNKNOWN_LABEL", "regions[0]")]


def test_unknown_class_of_a_label_file_is_a_row_error(env: Env) -> None:
    """A JSONL row whose class is not in the schema fails the job with UNKNOWN_LABEL at classes[0]."""
    env.upload_png("street.png")
    row = {"file_name": "street.png", "width": 64, "height": 48, "classes": ["night"]}
    job = env.run(json.dumps(row).encode() + b"\n", pb.IMPORT_FORMAT_JSONL)
    assert job.state == pb.IMPORT_STATE_FAILED
    ((where, reason),) = [(e["where"], e["reason"]) for e in json.loads(job.errors_json)]
    assert (reason, where.endswith("classes[0]")) == ("UNKNOWN_LABEL", True)
    assert env.imported() == []


def test_job_keeps_the_schema_version_it_was_checked_against(env: Env) -> None:
    """The job row stores the schema version and the schema given at CreateImport; the import succeeds."""
    job = env.run(coco_archive())
    assert (job.state, job.schema_version) == (pb.IMPORT_STATE_SUCCEEDED, 3)
    assert tasks_pb2.LabelSchema.FromString(job.label_schema) == SCHEMA


def test_job_queued_before_schema_checks_is_checked_against_its_source_only(env: Env) -> None:
    """A job row without a stored schema (version 0, from before the migration) imports labels the source
    declares even when no schema would know them."""
    created = env.create(coco_archive(), schema=tasks_pb2.LabelSchema(version=1))
    with env.db.transaction() as session:
        row = session.get(ImportJobRow, created.seq)
        assert row is not None
        row.schema_version, row.label_schema = 0, b""
    assert env.jobs.run_once()
    with env.db.read() as session:
        job = session.get(ImportJobRow, created.seq)
        assert job is not None
        assert (job.state, job.prediction_count) == (pb.IMPORT_STATE_SUCCEEDED, 2)
