"""Dataset versions, diffs, splits, the change feed and version exports on a SQLite temp file (no sockets)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.blobstore import LocalBlobStore
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import TOPIC_EXPORT, EventWriter
from annocloud_server.export import handlers, store, version_store
from annocloud_server.export.mapping import manifest_key
from annocloud_server.export.models import Base, DatasetVersion, DatasetVersionItem, outbox
from annocloud_server.export.versions import split_counts, split_fractions
from annocloud_server.export.worker import ExportWorker
from sqlalchemy import select

SCHEMA = tasks_pb2.LabelSchema(
    name="projects/p1/schemas/1",
    version=1,
    objects=[tasks_pb2.ObjectLabel(name=n, kind=tasks_pb2.OBJECT_KIND_BOX) for n in ("car", "bus", "bike")],
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(sqlite_url(str(tmp_path / "export.db")))
    database.create_tables(Base.metadata)
    with database.transaction() as session:
        handlers.on_project_created(
            session,
            events_pb2.EventEnvelope(
                event_id="pc",
                tenant_id="acme",
                project_created=events_pb2.ProjectCreated(
                    project=tasks_pb2.Project(name="projects/p1", display_name="P"), schema=SCHEMA
                ),
            ),
        )
    yield database
    database.dispose()


def accept(
    db: Database, item_id: str, label: str, *, x: float = 1.0, seconds: int = 100, file: str = ""
) -> None:
    accepted = qa_pb2.AcceptedLabel(
        name=f"projects/p1/acceptedLabels/{item_id}",
        item=f"datasets/d1/items/{item_id}",
        labels=annotations_pb2.Labels(
            regions=[
                annotations_pb2.Region(label=label, box=annotations_pb2.Box(x=x, y=2, width=3, height=4))
            ]
        ),
        schema_version=1,
    )
    accepted.accept_time.seconds = seconds
    context = events_pb2.ItemContext(
        item=accepted.item,
        media_type=common_pb2.MEDIA_TYPE_IMAGE,
        file_name=file or f"{item_id}.jpg",
        width=100,
        height=100,
    )
    envelope = events_pb2.EventEnvelope(
        event_id=f"ia-{item_id}-{seconds}",
        tenant_id="acme",
        item_accepted=events_pb2.ItemAccepted(accepted_label=accepted, item=context),
    )
    with db.transaction() as session:
        handlers.on_item_accepted(session, envelope)


def make_version(
    db: Database, *, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> str:
    with db.transaction() as session:
        version = version_store.create_version(
            session,
            organization_id="acme",
            project_id="p1",
            version_id=f"v{seed}-{session.execute(select(DatasetVersion.seq)).all().__len__()}",
            request_id=None,
            display_name="v",
            description="",
            fractions=split_fractions(*fractions, seed),
            now=store.utc_now(),
        )
        return version.version_id


def version_rows(db: Database, version_id: str) -> dict[str, DatasetVersionItem]:
    with db.transaction() as session:
        version = version_store.get_version(
            session, organization_id="acme", project_id="p1", version_id=version_id
        )
        rows = session.execute(
            select(DatasetVersionItem).where(DatasetVersionItem.version_seq == version.seq)
        )
        result = {row.item: row for row in rows.scalars()}
        session.expunge_all()
        return result


def labels_of(row: DatasetVersionItem) -> annotations_pb2.Labels:
    return qa_pb2.AcceptedLabel.FromString(row.accepted_label).labels


def test_version_is_immutable_under_later_acceptances(db: Database) -> None:
    """A re-acceptance and a new item after CreateDatasetVersion change neither the version's rows nor its counts."""
    for i in range(5):
        accept(db, f"i{i}", "car", x=float(i))
    v1 = make_version(db)
    before = {item: (row.accepted_label, row.split, row.stem) for item, row in version_rows(db, v1).items()}
    accept(db, "i0", "bus", x=50.0, seconds=200)
    accept(db, "i9", "car")
    after = {item: (row.accepted_label, row.split, row.stem) for item, row in version_rows(db, v1).items()}
    assert after == before
    assert labels_of(version_rows(db, v1)["datasets/d1/items/i0"]).regions[0].label == "car"
    with db.transaction() as session:
        got = version_store.get_version(session, organization_id="acme", project_id="p1", version_id=v1)
        assert (got.item_count, got.annotation_count, got.label_schema_versions) == (5, 5, "1")


def test_diff_reports_added_changed_and_removed_items_across_pages(db: Database) -> None:
    """The diff lists exactly the added and changed items (removed when reversed), the same whatever the page size."""
    for i in range(6):
        accept(db, f"i{i}", "car")
    v1 = make_version(db)
    accept(db, "i1", "bus", seconds=200)
    accept(db, "i4", "car", x=9.0, seconds=200)
    accept(db, "i2", "car", seconds=300)  # same labels again: not a change
    accept(db, "i7", "bike")
    accept(db, "i8", "bike")
    v2 = make_version(db)
    with db.transaction() as session:
        seq1 = version_store.get_version(session, organization_id="acme", project_id="p1", version_id=v1).seq
        seq2 = version_store.get_version(session, organization_id="acme", project_id="p1", version_id=v2).seq

        def diff(new: int, old: int, limit: int) -> list[tuple[str, int]]:
            out: list[tuple[str, int]] = []
            after = ""
            while True:
                page = version_store.diff_page(
                    session, version_seq=new, base_seq=old, after_item=after, limit=limit
                )
                out.extend((r.item.rsplit("/", 1)[1], r.kind) for r in page)
                if len(page) < limit:
                    return out
                after = page[-1].item

        added, changed, removed = (
            export_pb2.CHANGE_KIND_ADDED,
            export_pb2.CHANGE_KIND_CHANGED,
            export_pb2.CHANGE_KIND_REMOVED,
        )
        expected = [("i1", changed), ("i4", changed), ("i7", added), ("i8", added)]
        assert diff(seq2, seq1, 100) == expected
        assert diff(seq2, seq1, 1) == expected
        assert diff(seq1, seq2, 2) == [("i1", changed), ("i4", changed), ("i7", removed), ("i8", removed)]
        assert diff(seq1, seq1, 10) == []


def test_splits_are_deterministic_stratified_disjoint_and_complete(db: Database) -> None:
    """Same seed gives the same split; each class is split within one item of its share; every item is in one split."""
    classes = {"car": 37, "bus": 11, "bike": 4}
    n = 0
    for label, count in classes.items():
        for _ in range(count):
            accept(db, f"i{n:03d}", label)
            n += 1
    fractions = (0.7, 0.2, 0.1)
    a, b, c = (
        make_version(db, seed=5, fractions=fractions),
        make_version(db, seed=5, fractions=fractions),
        make_version(db, seed=6, fractions=fractions),
    )
    split_a = {item: row.split for item, row in version_rows(db, a).items()}
    split_b = {item: row.split for item, row in version_rows(db, b).items()}
    split_c = {item: row.split for item, row in version_rows(db, c).items()}
    assert split_a == split_b
    assert split_a != split_c
    assert len(split_a) == n
    assert set(split_a.values()) == {
        export_pb2.SPLIT_TRAIN,
        export_pb2.SPLIT_VALIDATION,
        export_pb2.SPLIT_TEST,
    }
    rows = version_rows(db, a)
    per_class = Counter((row.primary_class, row.split) for row in rows.values())
    for label, count in classes.items():
        for split, fraction in zip(
            (export_pb2.SPLIT_TRAIN, export_pb2.SPLIT_VALIDATION, export_pb2.SPLIT_TEST),
            fractions,
            strict=True,
        ):
            assert abs(per_class[(label, split)] - count * fraction) <= 1, (label, split)
        assert sum(per_class[(label, s)] for s in (1, 2, 3)) == count
    with db.transaction() as session:
        version = version_store.get_version(session, organization_id="acme", project_id="p1", version_id=a)
        assert version.train_count + version.validation_count + version.test_count == n


def test_split_counts_and_fraction_validation() -> None:
    """Largest remainder keeps every split within one item of its share; bad fractions are INVALID_ARGUMENT."""
    for count in range(60):
        got = split_counts(count, (0.7, 0.2, 0.1))
        assert sum(got) == count
        assert all(abs(g - count * f) < 1 for g, f in zip(got, (0.7, 0.2, 0.1), strict=True))
    assert split_fractions(0, 0, 0, 0).as_tuple() == (0.8, 0.1, 0.1)
    for bad in ((0.5, 0.5, 0.5), (-0.1, 0.6, 0.5), (float("nan"), 0.5, 0.5)):
        with pytest.raises(InvalidArgument):
            split_fractions(*bad, 0)


def test_file_names_stay_unique_within_a_version(db: Database) -> None:
    """Items with the same file name get distinct stems in the version (item id prefix, like live exports)."""
    for i in range(3):
        accept(db, f"i{i}", "car", file="dir/Same.JPG")
    rows = version_rows(db, make_version(db))
    stems = sorted(row.stem for row in rows.values())
    assert stems == ["Same", "i1_Same", "i2_Same"]
    assert {row.ext for row in rows.values()} == {".JPG"}


def test_change_feed_pages_through_every_change_exactly_once(db: Database) -> None:
    """Small pages give every acceptance once, in order; since a version gives only the later ones."""
    for i in range(4):
        accept(db, f"i{i}", "car")
    v1 = make_version(db)
    accept(db, "i1", "bus", seconds=200)
    accept(db, "i1", "bike", seconds=150)  # older than the stored acceptance: ignored, not a change
    accept(db, "i5", "car")
    accept(db, "i6", "car")
    with db.transaction() as session:
        version = version_store.get_version(session, organization_id="acme", project_id="p1", version_id=v1)

        def feed(after: int, limit: int) -> list[tuple[str, int]]:
            out = []
            while True:
                page = version_store.changes_page(
                    session, organization_id="acme", project_id="p1", after_seq=after, limit=limit
                )
                out.extend((c.item.rsplit("/", 1)[1], c.kind) for c in page)
                if len(page) < limit:
                    return out
                after = page[-1].seq

        everything = feed(0, 2)
        assert [item for item, _ in everything] == ["i0", "i1", "i2", "i3", "i1", "i5", "i6"]
        assert [kind for item, kind in everything if item == "i1"] == [
            export_pb2.CHANGE_KIND_ADDED,
            export_pb2.CHANGE_KIND_CHANGED,
        ]
        assert feed(version.change_seq, 1) == [
            ("i1", export_pb2.CHANGE_KIND_CHANGED),
            ("i5", export_pb2.CHANGE_KIND_ADDED),
            ("i6", export_pb2.CHANGE_KIND_ADDED),
        ]
        assert (
            version_store.changes_page(
                session, organization_id="other", project_id="p1", after_seq=0, limit=10
            )
            == []
        )


def _run_version_export(
    db: Database, tmp_path: Path, version_id: str, fmt: int
) -> tuple[zipfile.ZipFile, dict]:  # type: ignore[type-arg]
    blobs = LocalBlobStore(tmp_path / "blobs")
    worker = ExportWorker(
        db=db, events=EventWriter(outbox, TOPIC_EXPORT), blob_store=blobs, tmp_dir=tmp_path / "t", page_size=3
    )
    with db.transaction() as session:
        job = store.create_export(
            session, organization_id="acme", project_id="p1", export_format=fmt, request_id=None
        )
        version = version_store.get_version(
            session, organization_id="acme", project_id="p1", version_id=version_id
        )
        version_store.link_export(session, export_seq=job.seq, version=version)
        seq = job.seq
    assert worker.run_once()
    with db.transaction() as session:
        done = session.get(store.ExportJob, seq)
        assert done is not None
        assert done.state == store.DONE, done.error_message
        key, sha, size = done.artifact_key, done.artifact_sha256, done.artifact_size_bytes
    data = blobs.path(key).read_bytes()
    sidecar = json.loads(blobs.path(manifest_key(key)).read_bytes())
    assert sidecar["artifact"] == {"file_name": key.rsplit("/", 1)[1], "sha256": sha, "size": size}
    assert hashlib.sha256(data).hexdigest() == sha
    assert len(data) == size
    assert list((tmp_path / "t").iterdir()) == []
    return zipfile.ZipFile(io.BytesIO(data)), sidecar


def test_version_exports_record_the_split_and_checksum_every_file(db: Database, tmp_path: Path) -> None:
    """COCO has a split per image, YOLO a list per split; the sidecar checksums the zip and every file."""
    for i in range(10):
        accept(db, f"i{i}", "car" if i % 2 else "bus")
    version_id = make_version(db, seed=3)
    splits = {item.rsplit("/", 1)[1]: row.split for item, row in version_rows(db, version_id).items()}
    names = {1: "train", 2: "val", 3: "test"}

    coco_zip, sidecar = _run_version_export(db, tmp_path / "coco", version_id, export_pb2.EXPORT_FORMAT_COCO)
    coco = json.loads(coco_zip.read("annotations.json"))
    assert {im["file_name"].split(".")[0]: im["annocloud"]["split"] for im in coco["images"]} == {
        k: names[v] for k, v in splits.items()
    }
    for name in coco_zip.namelist():
        data = coco_zip.read(name)
        assert sidecar["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = json.loads(coco_zip.read("manifest.json"))
    assert manifest["dataset_version"] == f"projects/p1/datasetVersions/{version_id}"
    assert sum(manifest["counts"]["splits"].values()) == 10

    yolo_zip, _ = _run_version_export(db, tmp_path / "yolo", version_id, export_pb2.EXPORT_FORMAT_YOLO)
    for split, file in (("train", "train_split.txt"), ("val", "val.txt"), ("test", "test.txt")):
        listed = {line.rsplit("/", 1)[1].split(".")[0] for line in yolo_zip.read(file).decode().split()}
        assert listed == {k for k, v in splits.items() if names[v] == split}
    assert "test: test.txt" in yolo_zip.read("data.yaml").decode()
    assert len(yolo_zip.read("train.txt").decode().split()) == 10

    csv_zip, _ = _run_version_export(db, tmp_path / "csv", version_id, export_pb2.EXPORT_FORMAT_CSV)
    header = csv_zip.read("labels.csv").decode().splitlines()[0]
    assert header.endswith(",split")


def test_version_export_is_unchanged_by_later_acceptances(db: Database, tmp_path: Path) -> None:
    """Exporting a version after new acceptances gives the same labels as exporting it before."""
    for i in range(4):
        accept(db, f"i{i}", "car")
    version_id = make_version(db)
    first, _ = _run_version_export(db, tmp_path / "a", version_id, export_pb2.EXPORT_FORMAT_JSONL)
    accept(db, "i0", "bus", seconds=500)
    accept(db, "i8", "car")
    second, _ = _run_version_export(db, tmp_path / "b", version_id, export_pb2.EXPORT_FORMAT_JSONL)
    assert first.read("items.jsonl") == second.read("items.jsonl")
    assert len(first.read("items.jsonl").splitlines()) == 4
