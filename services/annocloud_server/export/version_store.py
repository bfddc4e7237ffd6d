"""Repository functions of dataset versions and the change feed; every query is scoped by organization."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2
from annocloud.qa.v1 import qa_pb2
from sqlalchemy import String, and_, cast, func, literal, select, update
from sqlalchemy.orm import Session, aliased

from annocloud_server.common.errors import NotFound
from annocloud_server.export.domain import item_id_of, split_file_name
from annocloud_server.export.models import (
    AcceptedChange,
    AcceptedItem,
    DatasetVersion,
    DatasetVersionItem,
    ExportOfVersion,
    ExportSchema,
)
from annocloud_server.export.versions import (
    SPLIT_ORDER,
    SplitFractions,
    labels_digest,
    primary_class,
    split_counts,
    split_key,
)

SNAPSHOT_PAGE = 500
ADDED = export_pb2.CHANGE_KIND_ADDED
CHANGED = export_pb2.CHANGE_KIND_CHANGED
REMOVED = export_pb2.CHANGE_KIND_REMOVED


# --- change feed ---------------------------------------------------------------------------------


def record_change(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    item: str,
    kind: int,
    accepted_label: bytes,
    now: datetime,
) -> None:
    session.add(
        AcceptedChange(
            organization_id=organization_id,
            project_id=project_id,
            item=item,
            kind=kind,
            change_time=now,
            accepted_label=accepted_label,
        )
    )


def last_change_seq(session: Session, *, organization_id: str, project_id: str) -> int:
    value = session.execute(
        select(func.max(AcceptedChange.seq)).where(
            AcceptedChange.organization_id == organization_id, AcceptedChange.project_id == project_id
        )
    ).scalar_one()
    return int(value or 0)


def changes_page(
    session: Session, *, organization_id: str, project_id: str, after_seq: int, limit: int
) -> Sequence[AcceptedChange]:
    return (
        session.execute(
            select(AcceptedChange)
            .where(
                AcceptedChange.organization_id == organization_id,
                AcceptedChange.project_id == project_id,
                AcceptedChange.seq > after_seq,
            )
            .order_by(AcceptedChange.seq)
            .limit(limit)
        )
        .scalars()
        .all()
    )


# --- creating a version --------------------------------------------------------------------------


def find_by_request(session: Session, *, organization_id: str, request_id: str) -> DatasetVersion | None:
    return session.execute(
        select(DatasetVersion).where(
            DatasetVersion.organization_id == organization_id, DatasetVersion.request_id == request_id
        )
    ).scalar_one_or_none()


def _latest_schema_version(session: Session, *, organization_id: str, project_id: str) -> int:
    value = session.execute(
        select(func.max(ExportSchema.version)).where(
            ExportSchema.organization_id == organization_id, ExportSchema.project_id == project_id
        )
    ).scalar_one()
    return int(value or 0)


class _Stems:
    """Unique stems within one version: checked against rows already named (no set of every name
    in memory), same rule as ``StemAllocator``: ``<item_id>_<stem>``, then a counter."""

    def __init__(self, session: Session, version_seq: int):
        self._session = session
        self._version_seq = version_seq
        self._page: set[str] = set()

    def start_page(self) -> None:
        self._page = set()

    def _taken(self, stem: str) -> bool:
        key = stem.lower()
        if key in self._page:
            return True
        hit = self._session.execute(
            select(DatasetVersionItem.position).where(
                DatasetVersionItem.version_seq == self._version_seq, DatasetVersionItem.stem_key == key
            )
        ).first()
        return hit is not None

    def allocate(self, file_name: str, item_id: str) -> tuple[str, str]:
        stem, ext = split_file_name(file_name, item_id)
        candidate = stem
        if self._taken(candidate):
            candidate = f"{item_id}_{stem}"[:214]
            base, counter = candidate, 2
            while self._taken(candidate):
                candidate = f"{base}-{counter}"
                counter += 1
        self._page.add(candidate.lower())
        return candidate, ext


def create_version(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    version_id: str,
    request_id: str | None,
    display_name: str,
    description: str,
    fractions: SplitFractions,
    now: datetime,
) -> DatasetVersion:
    """Snapshots the accepted labels in the caller's (one) transaction: copies them with one
    INSERT ... SELECT (one consistent read on every database), names the files and assigns splits."""
    version = DatasetVersion(
        version_id=version_id,
        organization_id=organization_id,
        project_id=project_id,
        request_id=request_id,
        display_name=display_name,
        description=description,
        schema_version=_latest_schema_version(
            session, organization_id=organization_id, project_id=project_id
        ),
        label_schema_versions="",
        change_seq=last_change_seq(session, organization_id=organization_id, project_id=project_id),
        item_count=0,
        annotation_count=0,
        train_fraction=fractions.train,
        validation_fraction=fractions.validation,
        test_fraction=fractions.test,
        seed=fractions.seed,
        train_count=0,
        validation_count=0,
        test_count=0,
        create_time=now,
    )
    session.add(version)
    session.flush()
    seq = version.seq
    placeholder = literal("#") + cast(AcceptedItem.id, String)  # never a real stem: those have no '#'
    copy = select(
        literal(seq),
        AcceptedItem.id,
        AcceptedItem.item,
        placeholder,
        literal(""),
        literal(""),
        literal(""),
        literal(""),
        literal(export_pb2.SPLIT_UNSPECIFIED),
        literal(""),
        AcceptedItem.accepted_label,
        AcceptedItem.item_context,
    ).where(AcceptedItem.organization_id == organization_id, AcceptedItem.project_id == project_id)
    columns = [
        "version_seq",
        "position",
        "item",
        "stem_key",
        "stem",
        "ext",
        "primary_class",
        "split_key",
        "split",
        "labels_sha256",
        "accepted_label",
        "item_context",
    ]
    session.execute(DatasetVersionItem.__table__.insert().from_select(columns, copy))  # type: ignore[attr-defined]
    _name_and_key(session, version, fractions.seed)
    _assign_splits(session, version, fractions)
    return version


def _name_and_key(session: Session, version: DatasetVersion, seed: int) -> None:
    stems = _Stems(session, version.seq)
    schema_versions: set[int] = set()
    items = annotations = 0
    after = 0
    while True:
        rows = session.execute(
            select(
                DatasetVersionItem.position,
                DatasetVersionItem.item,
                DatasetVersionItem.accepted_label,
                DatasetVersionItem.item_context,
            )
            .where(DatasetVersionItem.version_seq == version.seq, DatasetVersionItem.position > after)
            .order_by(DatasetVersionItem.position)
            .limit(SNAPSHOT_PAGE)
        ).all()
        if not rows:
            break
        stems.start_page()
        changes = []
        for position, item, raw_label, raw_context in rows:
            label = qa_pb2.AcceptedLabel.FromString(raw_label)
            context = events_pb2.ItemContext.FromString(raw_context)
            item_id = item_id_of(item)
            stem, ext = stems.allocate(context.file_name or item_id, item_id)
            schema_versions.add(label.schema_version)
            items += 1
            annotations += len(label.labels.regions)
            changes.append(
                {
                    "version_seq": version.seq,
                    "position": position,
                    "stem_key": stem.lower(),
                    "stem": stem,
                    "ext": ext,
                    "primary_class": primary_class(label.labels)[:256],
                    "split_key": split_key(seed, item),
                    "labels_sha256": labels_digest(label.labels),
                }
            )
            after = position
        session.execute(update(DatasetVersionItem), changes)
    version.item_count = items
    version.annotation_count = annotations
    version.label_schema_versions = ",".join(str(v) for v in sorted(schema_versions))


def _assign_splits(session: Session, version: DatasetVersion, fractions: SplitFractions) -> None:
    """Per primary class: the first train-count keys go to train, the next to validation, the rest test."""
    scope = DatasetVersionItem.version_seq == version.seq
    classes = session.execute(
        select(DatasetVersionItem.primary_class, func.count())
        .where(scope)
        .group_by(DatasetVersionItem.primary_class)
        .order_by(DatasetVersionItem.primary_class)
    ).all()
    totals = dict.fromkeys(SPLIT_ORDER, 0)
    for name, count in classes:
        in_class = and_(scope, DatasetVersionItem.primary_class == name)
        lower: str | None = None
        taken = 0
        for split, n in zip(SPLIT_ORDER, split_counts(int(count), fractions.as_tuple()), strict=True):
            if n == 0:
                continue
            taken += n
            upper = session.execute(
                select(DatasetVersionItem.split_key)
                .where(in_class)
                .order_by(DatasetVersionItem.split_key)
                .offset(taken - 1)
                .limit(1)
            ).scalar_one()
            window = [in_class, DatasetVersionItem.split_key <= upper]
            if lower is not None:
                window.append(DatasetVersionItem.split_key > lower)
            session.execute(
                update(DatasetVersionItem)
                .where(*window)
                .values(split=split)
                .execution_options(synchronize_session=False)
            )
            totals[split] += n
            lower = upper
    version.train_count = totals[export_pb2.SPLIT_TRAIN]
    version.validation_count = totals[export_pb2.SPLIT_VALIDATION]
    version.test_count = totals[export_pb2.SPLIT_TEST]


# --- reading versions ----------------------------------------------------------------------------


def get_version(
    session: Session, *, organization_id: str, project_id: str, version_id: str
) -> DatasetVersion:
    row = session.execute(
        select(DatasetVersion).where(
            DatasetVersion.organization_id == organization_id,
            DatasetVersion.project_id == project_id,
            DatasetVersion.version_id == version_id,
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(
            f"dataset version projects/{project_id}/datasetVersions/{version_id} not found",
            reason="DATASET_VERSION_NOT_FOUND",
        )
    return row


def list_versions(
    session: Session, *, organization_id: str, project_id: str, before_seq: int | None, limit: int
) -> Sequence[DatasetVersion]:
    query = select(DatasetVersion).where(
        DatasetVersion.organization_id == organization_id, DatasetVersion.project_id == project_id
    )
    if before_seq is not None:
        query = query.where(DatasetVersion.seq < before_seq)
    return session.execute(query.order_by(DatasetVersion.seq.desc()).limit(limit)).scalars().all()


def version_items_by_name(
    session: Session, *, version_seq: int, after_item: str, split: int, limit: int
) -> Sequence[DatasetVersionItem]:
    query = select(DatasetVersionItem).where(
        DatasetVersionItem.version_seq == version_seq, DatasetVersionItem.item > after_item
    )
    if split:
        query = query.where(DatasetVersionItem.split == split)
    return session.execute(query.order_by(DatasetVersionItem.item).limit(limit)).scalars().all()


@dataclass(frozen=True)
class ExportRow:
    """What the export worker reads of a version item."""

    position: int
    item: str
    stem: str
    ext: str
    split: int
    accepted_label: bytes
    item_context: bytes


def version_items_page(
    session: Session, *, version_seq: int, after_position: int, limit: int
) -> list[ExportRow]:
    rows = session.execute(
        select(
            DatasetVersionItem.position,
            DatasetVersionItem.item,
            DatasetVersionItem.stem,
            DatasetVersionItem.ext,
            DatasetVersionItem.split,
            DatasetVersionItem.accepted_label,
            DatasetVersionItem.item_context,
        )
        .where(DatasetVersionItem.version_seq == version_seq, DatasetVersionItem.position > after_position)
        .order_by(DatasetVersionItem.position)
        .limit(limit)
    ).all()
    return [
        ExportRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), bytes(r[5]), bytes(r[6]))
        for r in rows
    ]


@dataclass(frozen=True)
class DiffRow:
    item: str
    kind: int
    before: bytes | None
    after: bytes | None


def diff_page(
    session: Session, *, version_seq: int, base_seq: int, after_item: str, limit: int
) -> list[DiffRow]:
    """Up to ``limit`` differences with item > ``after_item``, in item order (two keyset queries merged)."""
    new, old = aliased(DatasetVersionItem), aliased(DatasetVersionItem)
    added_or_changed = session.execute(
        select(new.item, old.accepted_label, new.accepted_label)
        .outerjoin(old, and_(old.version_seq == base_seq, old.item == new.item))
        .where(
            new.version_seq == version_seq,
            new.item > after_item,
            (old.item.is_(None)) | (old.labels_sha256 != new.labels_sha256),
        )
        .order_by(new.item)
        .limit(limit)
    ).all()
    removed = session.execute(
        select(old.item, old.accepted_label)
        .outerjoin(new, and_(new.version_seq == version_seq, new.item == old.item))
        .where(old.version_seq == base_seq, old.item > after_item, new.item.is_(None))
        .order_by(old.item)
        .limit(limit)
    ).all()
    rows = [
        DiffRow(
            str(r[0]), ADDED if r[1] is None else CHANGED, None if r[1] is None else bytes(r[1]), bytes(r[2])
        )
        for r in added_or_changed
    ]
    rows.extend(DiffRow(str(r[0]), REMOVED, bytes(r[1]), None) for r in removed)
    rows.sort(key=lambda r: r.item)
    return rows[:limit]


# --- exports of versions -------------------------------------------------------------------------


def link_export(session: Session, *, export_seq: int, version: DatasetVersion) -> None:
    session.add(
        ExportOfVersion(export_seq=export_seq, version_seq=version.seq, version_id=version.version_id)
    )


def versions_of_exports(session: Session, export_seqs: Iterable[int]) -> dict[int, tuple[int, str]]:
    """export seq → (version seq, version id) for the exports that export a version."""
    seqs = list(export_seqs)
    if not seqs:
        return {}
    rows = session.execute(
        select(ExportOfVersion.export_seq, ExportOfVersion.version_seq, ExportOfVersion.version_id).where(
            ExportOfVersion.export_seq.in_(seqs)
        )
    ).all()
    return {int(r[0]): (int(r[1]), str(r[2])) for r in rows}
