"""Repository functions of the workforce: who may see a project, vendors, workers, grants, pay
rates, the payouts ledger and forecasts. Each runs inside the caller's transaction.

Visibility: a project is its organization's; a vendor sees it only through a grant, and then only
what its own workers did. Anything else is NOT_FOUND, never a hint that it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud.tasks.v1 import workforce_pb2 as wpb
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annocloud_server.common.errors import AlreadyExists, FailedPrecondition, NotFound
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.crowd.forecast import Forecast, VendorCapacity, forecast
from annocloud_server.tasks import convert, workforce
from annocloud_server.tasks.domain import TaskState
from annocloud_server.tasks.models import (
    Grant,
    LedgerEntry,
    PayRate,
    Project,
    Task,
    Vendor,
    Worker,
    WorkerGold,
)

VENDOR_ROLES = (common_pb2.ROLE_VENDOR_ADMIN, common_pb2.ROLE_VENDOR_WORKER)
NO_CURRENCY = "XXX"
"""ISO 4217 "no currency": accepted work recorded while the project had no rate for it."""


@dataclass(frozen=True)
class Access:
    """How the caller reaches a project: as its organization, or as a vendor through a grant."""

    project: Project
    vendor: str | None
    grant: Grant | None

    @property
    def owner(self) -> str:
        return self.project.organization_id


def _project_not_found(project_id: str) -> NotFound:
    return NotFound(f"project projects/{project_id} not found", reason="PROJECT_NOT_FOUND")


def project_access(
    session: Session, *, organization_id: str, roles: Sequence[int], project_id: str
) -> Access:
    """The project as the caller may see it; NOT_FOUND for anyone else's ungranted project."""
    project = session.execute(select(Project).where(Project.project_id == project_id)).scalar_one_or_none()
    if project is None:
        raise _project_not_found(project_id)
    if project.organization_id == organization_id:
        return Access(project, None, None)
    if set(roles) & set(VENDOR_ROLES):
        grant = session.get(Grant, (project_id, organization_id))
        if grant is not None:
            return Access(project, organization_id, grant)
    raise _project_not_found(project_id)


def granted_projects(
    session: Session, *, vendor_id: str, limit: int, before_seq: int | None
) -> tuple[list[Project], int | None]:
    stmt = (
        select(Project)
        .join(Grant, Grant.project_id == Project.project_id)
        .where(Grant.vendor_id == vendor_id)
    )
    if before_seq is not None:
        stmt = stmt.where(Project.seq < before_seq)
    rows = list(session.execute(stmt.order_by(Project.seq.desc()).limit(limit + 1)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


def quality_of(project: Project) -> tasks_pb2.QualitySettings:
    return tasks_pb2.QualitySettings.FromString(project.quality or b"")


# --- vendors and workers --------------------------------------------------------------------------


def register_vendor(session: Session, *, organization_id: str, display_name: str, now: datetime) -> Vendor:
    row = session.get(Vendor, organization_id)
    if row is None:
        row = Vendor(organization_id=organization_id, display_name=display_name, create_time=now)
        session.add(row)
    else:
        row.display_name = display_name
    session.flush()
    return row


def get_vendor(session: Session, *, caller_org: str, vendor_id: str) -> Vendor:
    """The vendor itself, or an organization that granted it a project, may read it."""
    row = session.get(Vendor, vendor_id)
    visible = row is not None and (
        vendor_id == caller_org
        or session.execute(
            select(Grant.project_id)
            .where(Grant.vendor_id == vendor_id, Grant.organization_id == caller_org)
            .limit(1)
        ).first()
        is not None
    )
    if row is None or not visible:
        raise NotFound(f"vendor vendors/{vendor_id} not found", reason="VENDOR_NOT_FOUND")
    return row


def create_worker(
    session: Session,
    *,
    organization_id: str,
    worker_id: str,
    subject: str,
    display_name: str,
    skills: wpb.Skills,
    level: int,
    now: datetime,
) -> Worker:
    clash = session.execute(
        select(Worker).where(
            Worker.organization_id == organization_id,
            (Worker.worker_id == worker_id) | (Worker.subject == subject),
        )
    ).scalar_one_or_none()
    if clash is not None:
        what = "id" if clash.worker_id == worker_id else "subject"
        raise AlreadyExists(f"a worker with this {what} already exists", reason="WORKER_EXISTS")
    row = Worker(
        organization_id=organization_id,
        worker_id=worker_id,
        subject=subject,
        display_name=display_name,
        skills=skills.SerializeToString(deterministic=True),
        level=level,
        state=wpb.WORKER_STATE_ACTIVE,
        create_time=now,
    )
    session.add(row)
    session.flush()
    return row


def get_worker(session: Session, *, organization_id: str, worker_id: str) -> Worker:
    row = session.execute(
        select(Worker).where(Worker.organization_id == organization_id, Worker.worker_id == worker_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(
            f"worker vendors/{organization_id}/workers/{worker_id} not found", reason="WORKER_NOT_FOUND"
        )
    return row


def worker_by_subject(session: Session, *, organization_id: str, subject: str) -> Worker | None:
    return session.execute(
        select(Worker).where(Worker.organization_id == organization_id, Worker.subject == subject)
    ).scalar_one_or_none()


def list_workers(
    session: Session, *, organization_id: str, limit: int, after_seq: int | None
) -> tuple[list[Worker], int | None]:
    stmt = select(Worker).where(Worker.organization_id == organization_id)
    if after_seq is not None:
        stmt = stmt.where(Worker.seq > after_seq)
    rows = list(session.execute(stmt.order_by(Worker.seq).limit(limit + 1)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


def gold_totals(session: Session, *, worker_org: str, subject: str) -> tuple[int, int]:
    """(answered, correct) over every project: in-house as the subject, in granted projects as
    ``subject@organization`` (``auth.worker_identity``)."""
    answered, correct = session.execute(
        select(
            func.coalesce(func.sum(WorkerGold.gold_answered), 0),
            func.coalesce(func.sum(WorkerGold.gold_correct), 0),
        ).where(
            WorkerGold.worker_organization == worker_org,
            WorkerGold.worker.in_([subject, f"{subject}@{worker_org}"]),
        )
    ).one()
    return int(answered), int(correct)


def worker_message(session: Session, row: Worker) -> wpb.Worker:
    answered, correct = gold_totals(session, worker_org=row.organization_id, subject=row.subject)
    return convert.worker_to_proto(row, answered, correct)


def worker_gold(session: Session, *, project_id: str, worker: str, worker_org: str) -> WorkerGold | None:
    return session.get(WorkerGold, (project_id, worker, worker_org))


def record_gold_score(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    worker: str,
    worker_org: str,
    answered: int,
    correct: int,
) -> None:
    """qa's running counts win (the event carries the totals), never moving backwards."""
    row = worker_gold(session, project_id=project_id, worker=worker, worker_org=worker_org)
    if row is None:
        session.add(
            WorkerGold(
                project_id=project_id,
                worker=worker,
                worker_organization=worker_org,
                organization_id=organization_id,
                gold_answered=answered,
                gold_correct=correct,
            )
        )
    elif answered >= row.gold_answered:
        row.gold_answered, row.gold_correct = answered, correct


# --- grants ---------------------------------------------------------------------------------------


def grant_project(
    session: Session, *, project: Project, vendor_id: str, min_level: int, granted_by: str, now: datetime
) -> Grant:
    if session.get(Vendor, vendor_id) is None:
        raise FailedPrecondition(
            f"vendors/{vendor_id} is not a registered vendor", reason="VENDOR_NOT_REGISTERED"
        )
    if vendor_id == project.organization_id:
        raise FailedPrecondition("a project cannot be granted to its own organization", reason="OWN_PROJECT")
    row = session.get(Grant, (project.project_id, vendor_id))
    if row is None:
        row = Grant(
            project_id=project.project_id,
            vendor_id=vendor_id,
            organization_id=project.organization_id,
            min_level=min_level,
            granted_by=granted_by,
            create_time=now,
        )
        session.add(row)
    else:
        row.min_level = min_level
    session.flush()
    return row


def revoke_grant(session: Session, *, project: Project, vendor_id: str) -> None:
    row = session.get(Grant, (project.project_id, vendor_id))
    if row is None:
        raise NotFound(
            f"grant projects/{project.project_id}/grants/{vendor_id} not found", reason="GRANT_NOT_FOUND"
        )
    session.delete(row)


def list_grants(
    session: Session, *, project_id: str | None, vendor_id: str | None, limit: int, after: str | None
) -> tuple[list[Grant], str | None]:
    stmt = select(Grant)
    if project_id is not None:
        stmt = stmt.where(Grant.project_id == project_id)
        key = Grant.vendor_id
    else:
        stmt = stmt.where(Grant.vendor_id == vendor_id)
        key = Grant.project_id
    if after is not None:
        stmt = stmt.where(key > after)
    rows = list(session.execute(stmt.order_by(key).limit(limit + 1)).scalars())
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], last.vendor_id if project_id is not None else last.project_id
    return rows, None


# --- pay rates and the ledger ---------------------------------------------------------------------


def rates_of(session: Session, *, project_id: str) -> list[workforce.Rate]:
    rows = session.execute(select(PayRate).where(PayRate.project_id == project_id)).scalars()
    return [convert.rate_of(r) for r in rows]


def set_pay_rate(
    session: Session,
    *,
    project: Project,
    task_kind: int,
    tier: int,
    amount_micros: int,
    currency: str,
    now: datetime,
) -> PayRate:
    current = session.execute(
        select(PayRate).where(
            PayRate.project_id == project.project_id,
            PayRate.task_kind == task_kind,
            PayRate.difficulty_tier == tier,
            PayRate.superseded_time.is_(None),
        )
    ).scalar_one_or_none()
    others = session.execute(
        select(PayRate.currency).where(PayRate.project_id == project.project_id).limit(1)
    ).scalar_one_or_none()
    if others is not None and others != currency:
        raise FailedPrecondition(
            f"this project pays in {others}; every rate of a project uses one currency",
            reason="CURRENCY_MISMATCH",
        )
    if current is not None:
        current.superseded_time = now
    row = PayRate(
        rate_id=new_id(),
        organization_id=project.organization_id,
        project_id=project.project_id,
        task_kind=task_kind,
        difficulty_tier=tier,
        amount_micros=amount_micros,
        currency=currency,
        effective_time=now,
        superseded_time=None,
    )
    session.add(row)
    session.flush()
    return row


def list_pay_rates(session: Session, *, project_id: str) -> list[PayRate]:
    return list(
        session.execute(
            select(PayRate).where(PayRate.project_id == project_id).order_by(PayRate.seq.desc())
        ).scalars()
    )


def project_currency(session: Session, *, project_id: str) -> str:
    found = session.execute(
        select(PayRate.currency).where(PayRate.project_id == project_id).limit(1)
    ).scalar_one_or_none()
    return found or NO_CURRENCY


def _add_entry(session: Session, writer: EventWriter, entry: LedgerEntry) -> LedgerEntry:
    session.add(entry)
    session.flush()
    message = convert.ledger_entry_to_proto(entry)
    writer.emit(
        session,
        tenant_id=entry.organization_id,
        resource_name=message.name,
        aggregate_version=1,
        payload=events_pb2.LedgerEntryRecorded(entry=message),
    )
    return entry


def _task_entries(session: Session, *, project_id: str, task_id: str) -> list[LedgerEntry]:
    return list(
        session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.project_id == project_id, LedgerEntry.task_id == task_id)
            .order_by(LedgerEntry.seq)
        ).scalars()
    )


def accrue(
    session: Session,
    writer: EventWriter,
    *,
    task: Task,
    vendor_id: str,
    worker: str,
    accepted_time: datetime,
    now: datetime,
) -> LedgerEntry | None:
    """Pays accepted work once: a new accrual unless the task's last accrual still stands."""
    entries = _task_entries(session, project_id=task.project_id, task_id=task.task_id)
    accrual_rounds = [e.round for e in entries if e.kind == workforce.ACCRUAL]
    reversed_rounds = {e.round for e in entries if e.kind == workforce.REVERSAL}
    if accrual_rounds and max(accrual_rounds) not in reversed_rounds:
        return None
    rate = workforce.rate_in_force(
        rates_of(session, project_id=task.project_id),
        task_kind=task.kind,
        tier=task.difficulty_tier,
        at=accepted_time,
    )
    return _add_entry(
        session,
        writer,
        LedgerEntry(
            entry_id=new_id(),
            organization_id=task.organization_id,
            project_id=task.project_id,
            kind=workforce.ACCRUAL,
            vendor_id=vendor_id,
            worker=worker,
            task_id=task.task_id,
            round=max(accrual_rounds, default=0) + 1,
            task_kind=task.kind,
            difficulty_tier=task.difficulty_tier,
            amount_micros=rate.amount_micros if rate is not None else 0,
            currency=rate.currency
            if rate is not None
            else project_currency(session, project_id=task.project_id),
            rate_id=rate.rate_id if rate is not None else "",
            reason="",
            work_time=accepted_time,
            create_time=now,
        ),
    )


def reverse(
    session: Session, writer: EventWriter, *, task: Task, reason: str, rejected_time: datetime, now: datetime
) -> LedgerEntry | None:
    """Takes back the task's standing accrual (none standing: nothing to do)."""
    entries = _task_entries(session, project_id=task.project_id, task_id=task.task_id)
    reversed_rounds = {e.round for e in entries if e.kind == workforce.REVERSAL}
    standing = [e for e in entries if e.kind == workforce.ACCRUAL and e.round not in reversed_rounds]
    if not standing:
        return None
    accrual = standing[-1]
    return _add_entry(
        session,
        writer,
        LedgerEntry(
            entry_id=new_id(),
            organization_id=accrual.organization_id,
            project_id=accrual.project_id,
            kind=workforce.REVERSAL,
            vendor_id=accrual.vendor_id,
            worker=accrual.worker,
            task_id=accrual.task_id,
            round=accrual.round,
            task_kind=accrual.task_kind,
            difficulty_tier=accrual.difficulty_tier,
            amount_micros=-accrual.amount_micros,
            currency=accrual.currency,
            rate_id=accrual.rate_id,
            reason=reason,
            work_time=rejected_time,
            create_time=now,
        ),
    )


def add_bonus(
    session: Session,
    writer: EventWriter,
    *,
    project: Project,
    vendor_id: str,
    worker: str,
    amount_micros: int,
    currency: str,
    reason: str,
    now: datetime,
) -> LedgerEntry:
    seq = session.execute(
        select(func.count())
        .select_from(LedgerEntry)
        .where(LedgerEntry.project_id == project.project_id, LedgerEntry.kind == workforce.BONUS)
    ).scalar_one()
    return _add_entry(
        session,
        writer,
        LedgerEntry(
            entry_id=new_id(),
            organization_id=project.organization_id,
            project_id=project.project_id,
            kind=workforce.BONUS,
            vendor_id=vendor_id,
            worker=worker,
            task_id="",
            round=int(seq) + 1,
            task_kind=0,
            difficulty_tier=0,
            amount_micros=amount_micros,
            currency=currency,
            rate_id="",
            reason=reason,
            work_time=now,
            create_time=now,
        ),
    )


def ledger_entries(
    session: Session,
    *,
    organization_id: str | None,
    project_id: str | None,
    vendor_id: str | None,
    worker: str,
    limit: int | None,
    after_seq: int | None,
) -> tuple[list[LedgerEntry], int | None]:
    """A project's entries (``organization_id`` + ``project_id``) or a vendor's (``vendor_id``)."""
    stmt = select(LedgerEntry)
    if project_id is not None:
        stmt = stmt.where(
            LedgerEntry.organization_id == organization_id, LedgerEntry.project_id == project_id
        )
    if vendor_id is not None:
        stmt = stmt.where(LedgerEntry.vendor_id == vendor_id)
    if worker:
        stmt = stmt.where(LedgerEntry.worker == worker)
    if after_seq is not None:
        stmt = stmt.where(LedgerEntry.seq > after_seq)
    stmt = stmt.order_by(LedgerEntry.seq)
    if limit is None:
        return list(session.execute(stmt).scalars()), None
    rows = list(session.execute(stmt.limit(limit + 1)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


def payout_summary(session: Session, entries: Sequence[LedgerEntry]) -> wpb.GetPayoutSummaryResponse:
    """Totals per (vendor, worker, currency) and whether the entries re-derive from the rates."""
    payouts: dict[tuple[str, str, str], wpb.WorkerPayout] = {}
    totals: dict[str, int] = {}
    for e in entries:
        key = (e.vendor_id, e.worker, e.currency)
        p = payouts.setdefault(
            key, wpb.WorkerPayout(vendor=f"vendors/{e.vendor_id}", worker=e.worker, currency=e.currency)
        )
        if e.kind == workforce.ACCRUAL:
            p.accepted_tasks += 1
            p.accrued_micros += e.amount_micros
        elif e.kind == workforce.BONUS:
            p.bonus_micros += e.amount_micros
        elif e.kind == workforce.REVERSAL:
            p.reversed_tasks += 1
            p.reversed_micros += e.amount_micros
        p.total_micros += e.amount_micros
        totals[e.currency] = totals.get(e.currency, 0) + e.amount_micros
    problems: list[str] = []
    by_project: dict[str, list[workforce.Entry]] = {}
    for e in entries:
        by_project.setdefault(e.project_id, []).append(convert.entry_of(e))
    for project_id, project_entries in by_project.items():
        problems += workforce.reconcile(project_entries, rates_of(session, project_id=project_id))
    return wpb.GetPayoutSummaryResponse(
        payouts=[payouts[k] for k in sorted(payouts)], totals_micros=totals, reconciled=not problems
    )


# --- forecast -------------------------------------------------------------------------------------


def project_forecast(
    session: Session, *, project: Project, window: timedelta, now: datetime
) -> tuple[int, list[VendorCapacity], Forecast, str]:
    """(remaining tasks, capacities, forecast, currency): throughput per worker organization over
    ``window`` (measured from its first completion in the window, at least a minute)."""
    pid = project.project_id
    remaining_rows = session.execute(
        select(Task.kind, Task.difficulty_tier, func.count())
        .where(Task.project_id == pid, Task.state.in_([TaskState.QUEUED, TaskState.LEASED]))
        .group_by(Task.kind, Task.difficulty_tier)
    ).all()
    remaining = sum(int(n) for _, _, n in remaining_rows)
    rates = rates_of(session, project_id=pid)
    cost = 0
    for kind, tier, n in remaining_rows:
        rate = workforce.rate_in_force(rates, task_kind=int(kind), tier=int(tier), at=now)
        cost += (rate.amount_micros if rate is not None else 0) * int(n)
    cost_per_task = cost // remaining if remaining else 0
    since = now - window
    done = session.execute(
        select(
            Task.completed_by_org,
            func.count(),
            func.min(Task.completed_time),
            func.count(func.distinct(Task.completed_by)),
        )
        .where(Task.project_id == pid, Task.state == TaskState.COMPLETED, Task.completed_time >= since)
        .group_by(Task.completed_by_org)
        .order_by(Task.completed_by_org)
    ).all()
    capacities = []
    for org, count, first, _workers in done:
        first_utc = convert.as_utc(first) if first is not None else now
        hours = max((now - first_utc).total_seconds(), 60.0) / 3600.0
        capacities.append(
            VendorCapacity(
                vendor=org or project.organization_id,
                tasks_per_hour=int(count) / hours,
                cost_per_task_micros=cost_per_task,
            )
        )
    result = forecast(remaining_tasks=remaining, vendors=capacities)
    return remaining, capacities, result, project_currency(session, project_id=pid)


def task_by_name(session: Session, *, organization_id: str, name: str) -> Task | None:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "tasks":
        return None
    return session.execute(
        select(Task).where(
            Task.organization_id == organization_id, Task.project_id == parts[1], Task.task_id == parts[3]
        )
    ).scalar_one_or_none()
