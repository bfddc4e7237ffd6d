"""Repository functions of the tasks service. Each runs inside the caller's transaction.

Every query is scoped by ``organization_id``: the caller's (RPCs) or the envelope's (handlers).
State changes that others care about add their event to the outbox through the ``EventWriter``
handed in, in the same transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy import Select, and_, bindparam, case, delete, exists, func, or_, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from annocloud_server.common.errors import Aborted, NotFound
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.tasks import convert, workforce
from annocloud_server.tasks.domain import (
    LABEL_PRIORITY,
    REWORK_PRIORITY,
    ProjectSpec,
    SchemaSpec,
    TaskKind,
    TaskState,
    lease_is_held,
    pick_better,
    wants_label_tasks,
)
from annocloud_server.tasks.models import (
    CatalogItem,
    GoldItem,
    ItemDifficulty,
    ItemWorker,
    LabelSchema,
    Project,
    ProjectDataset,
    ProjectRequest,
    Task,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ItemFacts:
    """What a task needs to know about its item."""

    item: str
    media_type: int = 0
    file_name: str = ""
    width: int = 0
    height: int = 0
    text: str = ""


# --- projects -------------------------------------------------------------------------------------


def get_project(session: Session, *, organization_id: str, project_id: str) -> Project:
    row = session.execute(
        select(Project).where(Project.organization_id == organization_id, Project.project_id == project_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"project projects/{project_id} not found", reason="PROJECT_NOT_FOUND")
    return row


def find_project(session: Session, *, organization_id: str, project_id: str) -> Project | None:
    return session.execute(
        select(Project).where(Project.organization_id == organization_id, Project.project_id == project_id)
    ).scalar_one_or_none()


def project_dataset_ids(session: Session, *, project_ids: Sequence[str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {project_id: [] for project_id in project_ids}
    rows = session.execute(
        select(ProjectDataset.project_id, ProjectDataset.dataset_id)
        .where(ProjectDataset.project_id.in_(list(project_ids)))
        .order_by(ProjectDataset.project_id, ProjectDataset.seq)
    ).all()
    for project_id, dataset_id in rows:
        result[project_id].append(dataset_id)
    return result


def task_counts(
    session: Session, *, organization_id: str, project_ids: Sequence[str], now: datetime
) -> dict[str, tuple[int, int, int]]:
    """(queued, leased and not expired, completed) per project; an expired lease counts as queued."""
    live_lease = and_(Task.state == TaskState.LEASED, Task.lease_expire_time > now)
    queued = or_(Task.state == TaskState.QUEUED, and_(Task.state == TaskState.LEASED, ~live_lease))
    rows = session.execute(
        select(
            Task.project_id,
            func.sum(case((queued, 1), else_=0)),
            func.sum(case((live_lease, 1), else_=0)),
            func.sum(case((Task.state == TaskState.COMPLETED, 1), else_=0)),
        )
        .where(Task.organization_id == organization_id, Task.project_id.in_(list(project_ids)))
        .group_by(Task.project_id)
    ).all()
    counts = dict.fromkeys(project_ids, (0, 0, 0))
    for project_id, q, leased, completed in rows:
        counts[project_id] = (int(q or 0), int(leased or 0), int(completed or 0))
    return counts


def project_message(session: Session, row: Project, *, now: datetime | None = None) -> tasks_pb2.Project:
    now = now or utcnow()
    datasets = project_dataset_ids(session, project_ids=[row.project_id])[row.project_id]
    counts = task_counts(session, organization_id=row.organization_id, project_ids=[row.project_id], now=now)
    return convert.project_to_proto(row, datasets, counts[row.project_id])


def create_project(
    session: Session,
    writer: EventWriter,
    *,
    organization_id: str,
    spec: ProjectSpec,
    schema: SchemaSpec,
    request_id: str,
    quality: workforce.QualitySpec | None = None,
    model_assist: tasks_pb2.ModelAssistSettings | None = None,
) -> Project:
    """Project + schema v1 + ProjectCreated (+ tasks for known items of its datasets); idempotent."""
    if request_id:
        seen = session.get(ProjectRequest, (organization_id, request_id))
        if seen is not None:
            return get_project(session, organization_id=organization_id, project_id=seen.project_id)
    now = utcnow()
    project = Project(
        organization_id=organization_id,
        project_id=new_id(),
        display_name=spec.display_name,
        redundancy=spec.redundancy,
        review_policy=spec.review_policy,
        min_agreement=spec.min_agreement,
        schema_version=1,
        version=1,
        create_time=now,
        quality=convert.quality_to_proto(quality or workforce.QualitySpec()).SerializeToString(
            deterministic=True
        ),
        model_assist=(model_assist or tasks_pb2.ModelAssistSettings()).SerializeToString(deterministic=True),
    )
    schema_row = LabelSchema(
        project_id=project.project_id,
        version=1,
        organization_id=organization_id,
        body=convert.schema_to_json(schema),
        create_time=now,
    )
    session.add_all([project, schema_row])
    for seq, dataset_id in enumerate(spec.dataset_ids):
        session.add(
            ProjectDataset(
                project_id=project.project_id, dataset_id=dataset_id, organization_id=organization_id, seq=seq
            )
        )
    if request_id:
        session.add(
            ProjectRequest(
                organization_id=organization_id, request_id=request_id, project_id=project.project_id
            )
        )
    session.flush()
    writer.emit(
        session,
        tenant_id=organization_id,
        resource_name=convert.project_name(project.project_id),
        aggregate_version=project.version,
        payload=events_pb2.ProjectCreated(
            project=convert.project_to_proto(project, spec.dataset_ids),
            schema=convert.schema_to_proto(schema_row),
        ),
    )
    for dataset_id in sorted(set(spec.dataset_ids)):  # locks in one order: no deadlock between creates
        _lock_dataset_catalog(session, organization_id=organization_id, dataset_id=dataset_id)
    for dataset_id in spec.dataset_ids:
        _create_tasks_for_dataset(session, writer, project=project, dataset_id=dataset_id)
    return project


def list_projects(
    session: Session, *, organization_id: str, limit: int, before_seq: int | None
) -> tuple[list[Project], int | None]:
    """Newest first; returns the page and the cursor of the next page (None on the last)."""
    stmt = select(Project).where(Project.organization_id == organization_id)
    if before_seq is not None:
        stmt = stmt.where(Project.seq < before_seq)
    rows = list(session.execute(stmt.order_by(Project.seq.desc()).limit(limit + 1)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


def add_project_dataset(
    session: Session, writer: EventWriter, *, organization_id: str, project_id: str, dataset_id: str
) -> Project:
    """Adds the dataset (no-op when present), emits ProjectDatasetAdded, creates tasks for known items."""
    project = get_project(session, organization_id=organization_id, project_id=project_id)
    if session.get(ProjectDataset, (project_id, dataset_id)) is not None:
        return project
    count = session.execute(
        select(func.count()).select_from(ProjectDataset).where(ProjectDataset.project_id == project_id)
    ).scalar_one()
    session.add(
        ProjectDataset(
            project_id=project_id, dataset_id=dataset_id, organization_id=organization_id, seq=int(count)
        )
    )
    project.version += 1
    session.flush()
    writer.emit(
        session,
        tenant_id=organization_id,
        resource_name=convert.project_name(project_id),
        aggregate_version=project.version,
        payload=events_pb2.ProjectDatasetAdded(
            project=project_message(session, project), dataset=f"datasets/{dataset_id}"
        ),
    )
    _create_tasks_for_dataset(session, writer, project=project, dataset_id=dataset_id)
    return project


# --- label schemas --------------------------------------------------------------------------------


def create_label_schema(
    session: Session, writer: EventWriter, *, organization_id: str, project_id: str, spec: SchemaSpec
) -> LabelSchema:
    project = get_project(session, organization_id=organization_id, project_id=project_id)
    project.schema_version += 1
    project.version += 1
    row = LabelSchema(
        project_id=project_id,
        version=project.schema_version,
        organization_id=organization_id,
        body=convert.schema_to_json(spec),
        create_time=utcnow(),
    )
    session.add(row)
    session.flush()
    writer.emit(
        session,
        tenant_id=organization_id,
        resource_name=convert.project_name(project_id),
        aggregate_version=project.version,
        payload=events_pb2.LabelSchemaPublished(
            project=convert.project_name(project_id), schema=convert.schema_to_proto(row)
        ),
    )
    return row


def get_label_schema(
    session: Session, *, organization_id: str, project_id: str, version: int | None
) -> LabelSchema:
    """One version of the project's schema; ``None`` means the latest."""
    project = get_project(session, organization_id=organization_id, project_id=project_id)
    row = session.get(LabelSchema, (project_id, version or project.schema_version))
    if row is None or row.organization_id != organization_id:
        raise NotFound(
            f"schema version {version} of projects/{project_id} not found", reason="SCHEMA_NOT_FOUND"
        )
    return row


def list_label_schemas(
    session: Session, *, organization_id: str, project_id: str, limit: int, before_version: int | None
) -> tuple[list[LabelSchema], int | None]:
    get_project(session, organization_id=organization_id, project_id=project_id)
    stmt = select(LabelSchema).where(
        LabelSchema.organization_id == organization_id, LabelSchema.project_id == project_id
    )
    if before_version is not None:
        stmt = stmt.where(LabelSchema.version < before_version)
    rows = list(session.execute(stmt.order_by(LabelSchema.version.desc()).limit(limit + 1)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].version
    return rows, None


# --- task creation --------------------------------------------------------------------------------


def _overlap(project: Project) -> tasks_pb2.DynamicOverlap | None:
    quality = tasks_pb2.QualitySettings.FromString(project.quality or b"")
    return quality.dynamic_overlap if quality.HasField("dynamic_overlap") else None


def initial_labels(project: Project) -> int:
    """LABEL tasks per item up front: dynamic overlap starts with min_labels, else redundancy."""
    overlap = _overlap(project)
    return overlap.min_labels if overlap is not None and overlap.min_labels > 0 else project.redundancy


def max_labels(project: Project) -> int:
    """The most LABEL tasks an item gets: dynamic overlap's max_labels, else redundancy."""
    overlap = _overlap(project)
    return overlap.max_labels if overlap is not None and overlap.max_labels > 0 else project.redundancy


def _new_task(project: Project, facts: ItemFacts, *, slot: int, now: datetime, tier: int = 1) -> Task:
    return Task(
        task_id=new_id(),
        organization_id=project.organization_id,
        project_id=project.project_id,
        item=facts.item,
        slot=slot,
        kind=TaskKind.LABEL,
        state=TaskState.QUEUED,
        priority=LABEL_PRIORITY,
        assigned_worker="",
        schema_version=project.schema_version,
        media_type=facts.media_type,
        item_file_name=facts.file_name,
        item_width=facts.width,
        item_height=facts.height,
        item_text=facts.text,
        redundancy=initial_labels(project),
        rework_of="",
        rework_reason="",
        completed_by="",
        version=1,
        create_time=now,
        difficulty_tier=tier,
        is_gold=False,
        completed_by_org="",
    )


def _emit_created(session: Session, writer: EventWriter, tasks: list[Task]) -> None:
    if not tasks:
        return
    session.add_all(tasks)
    session.flush()
    now = utcnow()
    for task in tasks:
        writer.emit(
            session,
            tenant_id=task.organization_id,
            resource_name=convert.task_name(task.project_id, task.task_id),
            aggregate_version=task.version,
            payload=events_pb2.TaskCreated(task=convert.task_to_proto(task, now)),
        )


def _facts(item: CatalogItem) -> ItemFacts:
    return ItemFacts(
        item=f"datasets/{item.dataset_id}/items/{item.item_id}",
        media_type=item.media_type,
        file_name=item.file_name,
        width=item.width,
        height=item.height,
        text=item.text,
    )


def _existing_label_slots(session: Session, *, project_id: str, items: Sequence[str]) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for start in range(0, len(items), 500):
        rows = session.execute(
            select(Task.item, Task.slot).where(
                Task.project_id == project_id,
                Task.kind == TaskKind.LABEL,
                Task.item.in_(list(items[start : start + 500])),
            )
        ).all()
        found.update((item, slot) for item, slot in rows)
    return found


def _create_label_tasks(
    session: Session, writer: EventWriter, *, project: Project, items: list[ItemFacts]
) -> int:
    """The missing LABEL tasks (slots 1..initial labels) of ``items``, none for gold items; returns
    how many were created."""
    names = [f.item for f in items]
    existing = _existing_label_slots(session, project_id=project.project_id, items=names)
    gold = _gold_items(session, project_id=project.project_id, items=names)
    now = utcnow()
    wanted = initial_labels(project)
    tasks = [
        _new_task(project, facts, slot=slot, now=now)
        for facts in items
        if facts.item not in gold
        for slot in range(1, wanted + 1)
        if (facts.item, slot) not in existing
    ]
    _emit_created(session, writer, tasks)
    return len(tasks)


def _gold_items(session: Session, *, project_id: str, items: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(items), 500):
        found.update(
            session.execute(
                select(GoldItem.item).where(
                    GoldItem.project_id == project_id, GoldItem.item.in_(list(items[start : start + 500]))
                )
            ).scalars()
        )
    return found


def _item_tier(session: Session, *, project_id: str, item: str) -> int:
    row = session.get(ItemDifficulty, (project_id, item))
    return row.tier if row is not None else 1


def add_label_tasks(
    session: Session, writer: EventWriter, *, project: Project, facts: ItemFacts, labels_wanted: int
) -> int:
    """Dynamic overlap asked for more labels: LABEL tasks until the item has ``labels_wanted``
    (idempotent: existing LABEL tasks of the item count, whatever their state)."""
    slots = set(
        session.execute(
            select(Task.slot).where(
                Task.project_id == project.project_id,
                Task.item == facts.item,
                Task.kind == TaskKind.LABEL,
                Task.is_gold.is_(False),
            )
        ).scalars()
    )
    missing = min(labels_wanted, max_labels(project)) - len(slots)
    if missing <= 0:
        return 0
    now = utcnow()
    tier = _item_tier(session, project_id=project.project_id, item=facts.item)
    start = max(slots, default=0) + 1
    tasks = [_new_task(project, facts, slot=start + i, now=now, tier=tier) for i in range(missing)]
    for task in tasks:
        task.redundancy = labels_wanted
    _emit_created(session, writer, tasks)
    return len(tasks)


def cancel_open_label_tasks(session: Session, *, project_id: str, item: str) -> int:
    """The item needs no more labels (accepted early, or became gold): its queued LABEL tasks and
    lapsed leases are cancelled; live leases may still be submitted."""
    now = utcnow()
    rows = list(
        session.execute(
            select(Task).where(
                Task.project_id == project_id,
                Task.item == item,
                Task.kind == TaskKind.LABEL,
                or_(
                    Task.state == TaskState.QUEUED,
                    and_(Task.state == TaskState.LEASED, Task.lease_expire_time <= now),
                ),
            )
        ).scalars()
    )
    for task in rows:
        _return_to_queue(session, task)
        task.state = TaskState.CANCELLED
        task.version += 1
    return len(rows)


def set_item_difficulty(
    session: Session, *, organization_id: str, project_id: str, item: str, difficulty: float, source: str
) -> int:
    """Records the item's difficulty; its waiting tasks move up to the new tier (never down).
    Returns the tier."""
    tier = workforce.tier_for_difficulty(difficulty)
    row = session.get(ItemDifficulty, (project_id, item))
    if row is None:
        row = ItemDifficulty(
            project_id=project_id,
            item=item,
            organization_id=organization_id,
            tier=tier,
            difficulty=difficulty,
            source=source[:256],
        )
        session.add(row)
    elif tier > row.tier:
        row.tier, row.difficulty, row.source = tier, difficulty, source[:256]
    session.execute(
        update(Task)
        .where(
            Task.project_id == project_id,
            Task.item == item,
            Task.state.in_([TaskState.QUEUED, TaskState.LEASED]),
            Task.difficulty_tier < row.tier,
            Task.is_gold.is_(False),
        )
        .values(difficulty_tier=row.tier)
    )
    return row.tier


def apply_scores(session: Session, *, project_id: str, scores: Sequence[tuple[str, int]]) -> int:
    """Model-assist rescoring: each item's waiting LABEL tasks take the item's queue priority
    (1..99; rework stays above). Returns how many tasks changed."""
    changed = 0
    for item, priority in scores:
        result = session.execute(
            update(Task)
            .where(
                Task.project_id == project_id,
                Task.item == item,
                Task.kind == TaskKind.LABEL,
                Task.state.in_([TaskState.QUEUED, TaskState.LEASED]),
            )
            .values(priority=max(0, min(priority, REWORK_PRIORITY - 1)))
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return changed


def add_gold_item(session: Session, *, organization_id: str, project_id: str, item: str) -> bool:
    """Marks the item as gold in the project (its waiting LABEL tasks are cancelled)."""
    if (
        session.execute(
            select(Project.project_id).where(
                Project.organization_id == organization_id, Project.project_id == project_id
            )
        ).first()
        is None
    ):
        return False
    if session.get(GoldItem, (project_id, item)) is None:
        count = session.execute(
            select(func.count()).select_from(GoldItem).where(GoldItem.project_id == project_id)
        ).scalar_one()
        session.add(
            GoldItem(project_id=project_id, item=item, organization_id=organization_id, seq=int(count) + 1)
        )
        session.flush()
    cancel_open_label_tasks(session, project_id=project_id, item=item)
    return True


def _advisory_xact_lock(session: Session, scope: str, key: str) -> None:
    """PostgreSQL: a lock on (scope, key) held until this transaction ends. SQLite needs none:
    its writers are serialized."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:scope), hashtext(:key))"),
            {"scope": scope, "key": key},
        )


def _lock_dataset_catalog(session: Session, *, organization_id: str, dataset_id: str) -> None:
    """Serializes, per dataset, "an item arrives" with "a project starts labeling the dataset".

    Each side writes its row and then reads the other side's rows. On PostgreSQL (READ COMMITTED)
    two such transactions at once each miss the other's uncommitted row and the item gets no
    tasks (write skew). The lock makes the later one wait and then read the earlier one's commit.
    """
    _advisory_xact_lock(session, "annocloud.tasks.catalog", f"{organization_id}/{dataset_id}")


def _create_tasks_for_dataset(
    session: Session, writer: EventWriter, *, project: Project, dataset_id: str
) -> int:
    _lock_dataset_catalog(session, organization_id=project.organization_id, dataset_id=dataset_id)
    items = session.execute(
        select(CatalogItem)
        .where(
            CatalogItem.organization_id == project.organization_id,
            CatalogItem.dataset_id == dataset_id,
        )
        .order_by(CatalogItem.seq)
    ).scalars()
    facts = [_facts(item) for item in items if wants_label_tasks(item.near_duplicate_of)]
    return _create_label_tasks(session, writer, project=project, items=facts)


def record_item(
    session: Session,
    writer: EventWriter,
    *,
    organization_id: str,
    dataset_id: str,
    item_id: str,
    media_type: int,
    file_name: str,
    width: int,
    height: int,
    text: str,
    near_duplicate_of: str,
) -> int:
    """Catalogs an ingested item and creates its tasks in the org's projects that label its dataset."""
    item = session.execute(
        select(CatalogItem).where(
            CatalogItem.organization_id == organization_id,
            CatalogItem.dataset_id == dataset_id,
            CatalogItem.item_id == item_id,
        )
    ).scalar_one_or_none()
    if item is None:
        item = CatalogItem(organization_id=organization_id, dataset_id=dataset_id, item_id=item_id)
        session.add(item)
    item.media_type = media_type
    item.file_name = file_name
    item.width = width
    item.height = height
    item.text = text
    item.near_duplicate_of = near_duplicate_of
    session.flush()
    if not wants_label_tasks(near_duplicate_of):
        return 0
    _lock_dataset_catalog(session, organization_id=organization_id, dataset_id=dataset_id)
    projects = session.execute(
        select(Project)
        .join(ProjectDataset, ProjectDataset.project_id == Project.project_id)
        .where(
            ProjectDataset.organization_id == organization_id,
            ProjectDataset.dataset_id == dataset_id,
            Project.organization_id == organization_id,
        )
        .order_by(Project.seq)
    ).scalars()
    return sum(_create_label_tasks(session, writer, project=p, items=[_facts(item)]) for p in projects)


def _known_facts(
    session: Session, *, organization_id: str, item: str, original: Task | None
) -> ItemFacts | None:
    """Item context from the original task, else from the catalog."""
    if original is not None and original.item == item:
        return ItemFacts(
            item,
            original.media_type,
            original.item_file_name,
            original.item_width,
            original.item_height,
            original.item_text,
        )
    parts = item.split("/")
    if len(parts) != 4:
        return None
    known = session.execute(
        select(CatalogItem).where(
            CatalogItem.organization_id == organization_id,
            CatalogItem.dataset_id == parts[1],
            CatalogItem.item_id == parts[3],
        )
    ).scalar_one_or_none()
    return _facts(known) if known is not None else None


def create_rework_task(
    session: Session,
    writer: EventWriter,
    *,
    organization_id: str,
    project_id: str,
    task_id: str,
    annotation: str,
    annotator: str,
    reason: str,
    facts: ItemFacts | None,
) -> Task | None:
    """A REWORK task of the rejected annotation's item for its annotator (once per annotation)."""
    project = session.execute(
        select(Project).where(Project.organization_id == organization_id, Project.project_id == project_id)
    ).scalar_one_or_none()
    if project is None:
        return None
    original = session.execute(
        select(Task).where(
            Task.organization_id == organization_id, Task.project_id == project_id, Task.task_id == task_id
        )
    ).scalar_one_or_none()
    if facts is None or not facts.item:
        if original is None:
            return None
        facts = ItemFacts(original.item)
    if not facts.media_type and not facts.file_name:
        facts = (
            _known_facts(session, organization_id=organization_id, item=facts.item, original=original)
            or facts
        )
    already = session.execute(
        select(Task).where(
            Task.project_id == project_id,
            Task.item == facts.item,
            Task.slot == 0,
            Task.rework_of == annotation,
        )
    ).scalar_one_or_none()
    if already is not None:
        return already
    task = _new_task(project, facts, slot=0, now=utcnow())
    task.kind = TaskKind.REWORK
    task.priority = REWORK_PRIORITY
    task.assigned_worker = annotator
    task.rework_of = annotation
    task.rework_reason = reason
    _emit_created(session, writer, [task])
    return task


# --- tasks and leases -----------------------------------------------------------------------------


def task_not_found(project_id: str, task_id: str) -> NotFound:
    return NotFound(f"task projects/{project_id}/tasks/{task_id} not found", reason="TASK_NOT_FOUND")


def get_task(session: Session, *, organization_id: str, project_id: str, task_id: str) -> Task:
    row = session.execute(
        select(Task).where(
            Task.organization_id == organization_id, Task.project_id == project_id, Task.task_id == task_id
        )
    ).scalar_one_or_none()
    if row is None:
        raise task_not_found(project_id, task_id)
    return row


def list_tasks(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    state: int,
    limit: int,
    after_seq: int | None,
    now: datetime,
    worker: str | None = None,
    worker_org: str | None = None,
) -> tuple[list[Task], int | None]:
    """Creation order; ``state`` filters as clients see states (an expired lease is QUEUED).
    ``worker`` keeps only that worker's tasks, ``worker_org`` only that organization's workers'."""
    get_project(session, organization_id=organization_id, project_id=project_id)
    stmt = select(Task).where(Task.organization_id == organization_id, Task.project_id == project_id)
    if worker is not None:
        stmt = stmt.where(
            or_(Task.lease_worker == worker, Task.completed_by == worker, Task.assigned_worker == worker)
        )
    if worker_org is not None:  # a vendor's share: what its workers hold, did or must redo
        stmt = stmt.where(
            or_(
                Task.lease_worker_org == worker_org,
                Task.completed_by_org == worker_org,
                Task.assigned_worker.endswith(f"@{worker_org}", autoescape=True),
            )
        )
    live_lease = and_(Task.state == TaskState.LEASED, Task.lease_expire_time > now)
    if state == TaskState.QUEUED:
        stmt = stmt.where(
            or_(Task.state == TaskState.QUEUED, and_(Task.state == TaskState.LEASED, ~live_lease))
        )
    elif state == TaskState.LEASED:
        stmt = stmt.where(live_lease)
    elif state:
        stmt = stmt.where(Task.state == state)
    if after_seq is not None:
        stmt = stmt.where(Task.seq > after_seq)
    rows = list(session.execute(stmt.order_by(Task.seq).limit(limit + 1)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


def _pick_statement(*, lapsed: bool, media_restricted: bool) -> Select[tuple[Task]]:
    """Best task of one pool for a worker, built once with bind parameters (LeaseNextTask is hot):
    open LABEL tasks of items the worker never had, up to their level's tier (and media skills),
    or their own REWORK."""
    worker: BindParameter[str] = bindparam("worker")
    already_had_item = exists().where(
        ItemWorker.project_id == Task.project_id, ItemWorker.item == Task.item, ItemWorker.worker == worker
    )
    own_rework = and_(Task.kind == TaskKind.REWORK, Task.assigned_worker == worker)
    open_label = and_(
        Task.kind == TaskKind.LABEL,
        Task.assigned_worker == "",
        ~already_had_item,
        Task.difficulty_tier <= bindparam("max_tier"),
    )
    if media_restricted:
        open_label = and_(open_label, Task.media_type.in_(bindparam("media_types", expanding=True)))
    stmt = select(Task).where(
        Task.organization_id == bindparam("organization_id"),
        Task.project_id == bindparam("project_id"),
        or_(open_label, own_rework),
    )
    if lapsed:
        stmt = stmt.where(Task.state == TaskState.LEASED, Task.lease_expire_time <= bindparam("now"))
    else:
        stmt = stmt.where(Task.state == TaskState.QUEUED)
    return stmt.order_by(Task.priority.desc(), Task.seq).limit(1).with_for_update(skip_locked=True, of=Task)


_PICKS = {
    (lapsed, media): _pick_statement(lapsed=lapsed, media_restricted=media)
    for lapsed in (False, True)
    for media in (False, True)
}
EVERYONE = workforce.Eligibility(max_tier=workforce.MAX_TIER, media_types=None, gold_only=False)


def _return_to_queue(session: Session, task: Task) -> str:
    """Drops the lease; the holder may get a LABEL task's item again. Returns the previous holder."""
    previous = task.lease_worker or ""
    if task.kind == TaskKind.LABEL and previous:
        session.execute(
            delete(ItemWorker).where(
                ItemWorker.project_id == task.project_id,
                ItemWorker.item == task.item,
                ItemWorker.worker == previous,
            )
        )
    task.state = TaskState.QUEUED
    task.lease_id = None
    task.lease_worker = None
    task.lease_worker_org = None
    task.lease_time = None
    task.lease_expire_time = None
    return previous


def _expire(session: Session, writer: EventWriter, task: Task, now: datetime) -> None:
    previous = _return_to_queue(session, task)
    task.version += 1
    writer.emit(
        session,
        tenant_id=task.organization_id,
        resource_name=convert.task_name(task.project_id, task.task_id),
        aggregate_version=task.version,
        payload=events_pb2.TaskExpired(task=convert.task_to_proto(task, now), worker=previous),
    )


def lease_next_task(
    session: Session,
    writer: EventWriter,
    *,
    organization_id: str,
    project_id: str,
    worker: str,
    duration: timedelta,
    now: datetime,
    worker_org: str = "",
    eligibility: workforce.Eligibility = EVERYONE,
    gold_rate: float = 0.0,
) -> Task:
    """Leases the best task for ``worker``; reclaims a lapsed lease (TaskExpired) when it is the best.

    ``organization_id`` owns the project; ``worker_org`` is the worker's own (a vendor's, or the
    same). A worker still qualifying gets only gold tasks; others get one with ``gold_rate``.
    """
    project = get_project(session, organization_id=organization_id, project_id=project_id)
    # One worker's concurrent leases in a project take turns (PostgreSQL), so the later one sees
    # the item the earlier one took instead of failing on its item_workers row.
    _advisory_xact_lock(session, "annocloud.tasks.lease", f"{project_id}/{worker}")
    task: Task | None = None
    if eligibility.gold_only or (gold_rate > 0 and secrets.randbelow(1_000_000) < gold_rate * 1_000_000):
        task = _gold_task_for(session, writer, project=project, worker=worker, now=now)
        if task is None and eligibility.gold_only:
            raise NotFound(
                "no qualification (gold) task is left for you in this project", reason="NO_TASK_AVAILABLE"
            )
    if task is None:
        params: dict[str, object] = {
            "organization_id": organization_id,
            "project_id": project_id,
            "worker": worker,
            "now": now,
            "max_tier": eligibility.max_tier,
        }
        media = eligibility.media_types is not None
        if media:
            params["media_types"] = list(eligibility.media_types or ())
        queued = session.execute(_PICKS[(False, media)], params).scalar_one_or_none()
        lapsed = session.execute(_PICKS[(True, media)], params).scalar_one_or_none()
        keys = [(t.priority, t.seq) if t is not None else None for t in (queued, lapsed)]
        task = (queued, lapsed)[pick_better(keys[0], keys[1])]
    if task is None:
        raise NotFound("no task is available for you in this project right now", reason="NO_TASK_AVAILABLE")
    if task.state == TaskState.LEASED:
        _expire(session, writer, task, now)
    task.state = TaskState.LEASED
    task.lease_id = new_id()
    task.lease_worker = worker
    task.lease_worker_org = worker_org or organization_id
    task.lease_time = now
    task.lease_expire_time = now + duration
    task.version += 1
    # A LABEL task is only picked when the worker has no row for its item; rework keeps its row.
    if task.kind == TaskKind.LABEL or session.get(ItemWorker, (project_id, task.item, worker)) is None:
        session.add(
            ItemWorker(project_id=project_id, item=task.item, worker=worker, organization_id=organization_id)
        )
    writer.emit(
        session,
        tenant_id=organization_id,
        resource_name=convert.task_name(project_id, task.task_id),
        aggregate_version=task.version,
        payload=events_pb2.TaskLeased(task=convert.task_to_proto(task, now)),
    )
    return task


def _gold_task_for(
    session: Session, writer: EventWriter, *, project: Project, worker: str, now: datetime
) -> Task | None:
    """A new task on a gold item the worker never had (it looks like any LABEL task), or None."""
    already_had = exists().where(
        ItemWorker.project_id == GoldItem.project_id,
        ItemWorker.item == GoldItem.item,
        ItemWorker.worker == worker,
    )
    item = session.execute(
        select(GoldItem.item)
        .where(GoldItem.project_id == project.project_id, ~already_had)
        .order_by(GoldItem.seq)
        .limit(1)
    ).scalar_one_or_none()
    if item is None:
        return None
    facts = _known_facts(
        session, organization_id=project.organization_id, item=item, original=None
    ) or ItemFacts(item)
    lowest = session.execute(
        select(func.min(Task.slot)).where(Task.project_id == project.project_id, Task.item == item)
    ).scalar_one_or_none()
    task = _new_task(project, facts, slot=min(int(lowest or 0), 0) - 1, now=now)
    task.is_gold = True
    _emit_created(session, writer, [task])
    return task


def _held_task(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    task_id: str,
    lease_id: str,
    worker: str,
    now: datetime,
) -> Task:
    task = get_task(session, organization_id=organization_id, project_id=project_id, task_id=task_id)
    held = lease_is_held(
        state=task.state,
        lease_id=task.lease_id,
        lease_worker=task.lease_worker,
        lease_expire_time=convert.as_utc(task.lease_expire_time) if task.lease_expire_time else None,
        presented_lease_id=lease_id,
        worker=worker,
        now=now,
    )
    if not held:
        raise Aborted("you do not hold a live lease on this task with that lease_id", reason="LEASE_NOT_HELD")
    return task


def heartbeat_lease(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    task_id: str,
    lease_id: str,
    worker: str,
    duration: timedelta,
    now: datetime,
) -> Task:
    task = _held_task(
        session,
        organization_id=organization_id,
        project_id=project_id,
        task_id=task_id,
        lease_id=lease_id,
        worker=worker,
        now=now,
    )
    task.lease_expire_time = now + duration
    return task


def release_task(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    task_id: str,
    lease_id: str,
    worker: str,
    now: datetime,
) -> Task:
    task = _held_task(
        session,
        organization_id=organization_id,
        project_id=project_id,
        task_id=task_id,
        lease_id=lease_id,
        worker=worker,
        now=now,
    )
    _return_to_queue(session, task)
    return task


def expire_leases(session: Session, writer: EventWriter, *, now: datetime, limit: int = 500) -> int:
    """Returns lapsed leases (of every organization) to the queue with TaskExpired; how many."""
    rows = list(
        session.execute(
            select(Task)
            .where(Task.state == TaskState.LEASED, Task.lease_expire_time <= now)
            .order_by(Task.lease_expire_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for task in rows:
        _expire(session, writer, task, now)
    return len(rows)


def complete_task(
    session: Session,
    writer: EventWriter,
    *,
    organization_id: str,
    project_id: str,
    task_id: str,
    annotator: str,
    annotation: str,
    annotator_org: str = "",
    now: datetime | None = None,
) -> Task | None:
    """Marks the task COMPLETED by ``annotator`` with TaskCompleted; a no-op when already completed."""
    task = session.execute(
        select(Task).where(
            Task.organization_id == organization_id, Task.project_id == project_id, Task.task_id == task_id
        )
    ).scalar_one_or_none()
    if task is None or task.state == TaskState.COMPLETED:
        return task
    task.state = TaskState.COMPLETED
    task.completed_by = annotator
    task.completed_by_org = annotator_org or task.lease_worker_org or organization_id
    task.completed_time = now or utcnow()
    task.lease_id = None
    task.lease_worker = None
    task.lease_expire_time = None
    task.version += 1
    if annotator and session.get(ItemWorker, (project_id, task.item, annotator)) is None:
        session.add(
            ItemWorker(
                project_id=project_id, item=task.item, worker=annotator, organization_id=organization_id
            )
        )
    session.flush()
    writer.emit(
        session,
        tenant_id=organization_id,
        resource_name=convert.task_name(project_id, task_id),
        aggregate_version=task.version,
        payload=events_pb2.TaskCompleted(task=convert.task_to_proto(task), annotation=annotation),
    )
    return task
