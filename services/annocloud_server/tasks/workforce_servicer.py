"""WorkforceService: vendors, workers, grants, pay rates, the payouts ledger and forecasts.

Thin: authorize, parse, call ``workforce_store`` in one transaction, map back. A vendor's
resources are visible to the vendor itself; a project's to its organization's managers (and,
through a grant, the vendor's own share of it). Everything else is NOT_FOUND.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from annocloud.common.v1 import common_pb2
from annocloud.tasks.v1 import workforce_pb2 as wpb
from annocloud.tasks.v1 import workforce_pb2_grpc

from annocloud_server.common.auth import (
    ADMIN,
    ANNOTATOR,
    MANAGER,
    MANAGERS,
    VENDOR_ADMIN,
    VENDOR_WORKER,
    Authenticator,
    require_role,
)
from annocloud_server.common.db import Database
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument, NotFound
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.tasks import convert, store, workforce
from annocloud_server.tasks import workforce_store as wf
from annocloud_server.tasks.domain import ObjectKind, TaskKind
from annocloud_server.tasks.models import Grant, Vendor

EVERYONE = (ADMIN, MANAGER, common_pb2.ROLE_REVIEWER, ANNOTATOR, VENDOR_ADMIN, VENDOR_WORKER)
WORKER_ADMINS = (ADMIN, VENDOR_ADMIN)
WORKER_READERS = (ADMIN, MANAGER, VENDOR_ADMIN, VENDOR_WORKER, ANNOTATOR)
LEDGER_READERS = (ADMIN, MANAGER, VENDOR_ADMIN)
MAX_WINDOW_HOURS = 720
MEDIA_TYPES = [v for v in common_pb2.MediaType.values() if v]
OBJECT_KINDS = [int(k) for k in ObjectKind if k]


def _vendor_id(name: str, field_name: str = "parent") -> str:
    try:
        (vendor_id,) = parse_name(name, "vendors/{}")
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field_name}: {exc.message}", reason="BAD_RESOURCE_NAME") from exc
    return vendor_id


def _own_vendor(principal: common_pb2.Principal, vendor_id: str) -> None:
    """Only the vendor's own organization reaches its workers and ledger."""
    if vendor_id != principal.organization_id:
        raise NotFound(f"vendor vendors/{vendor_id} not found", reason="VENDOR_NOT_FOUND")


def _cursor(token: str) -> Any:
    return decode_token(token).get("k")


def _int_cursor(token: str) -> int | None:
    value = _cursor(token)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return value


def _str_cursor(token: str) -> str | None:
    value = _cursor(token)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return value


def _token(value: Any) -> str:
    return encode_token({"k": value}) if value is not None else ""


def _skills(message: wpb.Skills) -> wpb.Skills:
    checked = workforce.validate_skills(
        workforce.SkillSet(
            [int(m) for m in message.media_types],
            [int(k) for k in message.object_kinds],
            list(message.languages),
        ),
        known_media=MEDIA_TYPES,
        known_kinds=OBJECT_KINDS,
    )
    return wpb.Skills(
        media_types=checked.media_types,  # type: ignore[arg-type]
        object_kinds=checked.object_kinds,  # type: ignore[arg-type]
        languages=checked.languages,
    )


class WorkforceServicer(workforce_pb2_grpc.WorkforceServiceServicer):
    def __init__(self, db: Database, writer: EventWriter, authenticator: Authenticator):
        self._db = db
        self._writer = writer
        self._auth = authenticator

    def _owned_project(self, session: Any, principal: common_pb2.Principal, name: str) -> Any:
        """A project of the caller's organization (its managers only)."""
        (project_id,) = parse_name(name, "projects/{}")
        access = wf.project_access(
            session, organization_id=principal.organization_id, roles=[], project_id=project_id
        )
        require_role(principal, MANAGERS)
        return access.project

    # --- vendors and workers ----------------------------------------------------------------------

    def RegisterVendor(
        self, request: wpb.RegisterVendorRequest, context: grpc.ServicerContext
    ) -> wpb.RegisterVendorResponse:
        principal = self._auth.require(context, (VENDOR_ADMIN,))
        name = workforce.validate_display_name(request.display_name)
        with self._db.transaction() as session:
            row = wf.register_vendor(
                session, organization_id=principal.organization_id, display_name=name, now=store.utcnow()
            )
            return wpb.RegisterVendorResponse(vendor=convert.vendor_to_proto(row))

    def GetVendor(
        self, request: wpb.GetVendorRequest, context: grpc.ServicerContext
    ) -> wpb.GetVendorResponse:
        principal = self._auth.require(context, EVERYONE)
        vendor_id = _vendor_id(request.name, "name")
        with self._db.read() as session:
            row = wf.get_vendor(session, caller_org=principal.organization_id, vendor_id=vendor_id)
            return wpb.GetVendorResponse(vendor=convert.vendor_to_proto(row))

    def CreateWorker(
        self, request: wpb.CreateWorkerRequest, context: grpc.ServicerContext
    ) -> wpb.CreateWorkerResponse:
        principal = self._auth.require(context, WORKER_ADMINS)
        vendor_id = _vendor_id(request.parent)
        _own_vendor(principal, vendor_id)
        worker_id = workforce.validate_worker_id(request.worker_id)
        subject = request.worker.subject
        if not subject or len(subject) > 200:
            raise InvalidArgument("worker.subject: must be 1 to 200 characters", reason="BAD_SUBJECT")
        display_name = workforce.validate_display_name(request.worker.display_name, "worker.display_name")
        level = workforce.validate_level(request.worker.level or 1)
        skills = _skills(request.worker.skills)
        with self._db.transaction() as session:
            if set(principal.roles) == {VENDOR_ADMIN} and session.get(Vendor, vendor_id) is None:
                raise FailedPrecondition(
                    "register your organization as a vendor first (RegisterVendor)",
                    reason="VENDOR_NOT_REGISTERED",
                )
            row = wf.create_worker(
                session,
                organization_id=vendor_id,
                worker_id=worker_id,
                subject=subject,
                display_name=display_name,
                skills=skills,
                level=level,
                now=store.utcnow(),
            )
            return wpb.CreateWorkerResponse(worker=wf.worker_message(session, row))

    def GetWorker(
        self, request: wpb.GetWorkerRequest, context: grpc.ServicerContext
    ) -> wpb.GetWorkerResponse:
        principal = self._auth.require(context, WORKER_READERS)
        vendor_id, worker_id = parse_name(request.name, "vendors/{}/workers/{}")
        _own_vendor(principal, vendor_id)
        with self._db.read() as session:
            row = wf.get_worker(session, organization_id=vendor_id, worker_id=worker_id)
            if not set(principal.roles) & {ADMIN, MANAGER, VENDOR_ADMIN} and row.subject != principal.subject:
                raise NotFound(f"worker {request.name} not found", reason="WORKER_NOT_FOUND")
            return wpb.GetWorkerResponse(worker=wf.worker_message(session, row))

    def ListWorkers(
        self, request: wpb.ListWorkersRequest, context: grpc.ServicerContext
    ) -> wpb.ListWorkersResponse:
        principal = self._auth.require(context, (ADMIN, MANAGER, VENDOR_ADMIN))
        vendor_id = _vendor_id(request.parent)
        _own_vendor(principal, vendor_id)
        limit = page_size(request.page_size)
        with self._db.read() as session:
            rows, after = wf.list_workers(
                session, organization_id=vendor_id, limit=limit, after_seq=_int_cursor(request.page_token)
            )
            workers = [wf.worker_message(session, r) for r in rows]
        return wpb.ListWorkersResponse(workers=workers, next_page_token=_token(after))

    def UpdateWorker(
        self, request: wpb.UpdateWorkerRequest, context: grpc.ServicerContext
    ) -> wpb.UpdateWorkerResponse:
        principal = self._auth.require(context, WORKER_ADMINS)
        vendor_id, worker_id = parse_name(request.name, "vendors/{}/workers/{}")
        _own_vendor(principal, vendor_id)
        level = workforce.validate_level(request.level) if request.level else None
        if int(request.state) not in wpb.WorkerState.values():
            raise InvalidArgument(f"state: unknown value {request.state}", reason="BAD_STATE")
        skills = _skills(request.skills) if request.HasField("skills") else None
        with self._db.transaction() as session:
            row = wf.get_worker(session, organization_id=vendor_id, worker_id=worker_id)
            if skills is not None:
                row.skills = skills.SerializeToString(deterministic=True)
            if level is not None:
                row.level = level
            if request.state:
                row.state = int(request.state)
            session.flush()
            return wpb.UpdateWorkerResponse(worker=wf.worker_message(session, row))

    # --- grants -----------------------------------------------------------------------------------

    def GrantProject(
        self, request: wpb.GrantProjectRequest, context: grpc.ServicerContext
    ) -> wpb.GrantProjectResponse:
        principal = self._auth.require(context, MANAGERS)
        with self._db.transaction() as session:
            project = self._owned_project(session, principal, request.parent)
            vendor_id = _vendor_id(request.vendor, "vendor")
            min_level = workforce.validate_level(request.min_level or 1, "min_level")
            row = wf.grant_project(
                session,
                project=project,
                vendor_id=vendor_id,
                min_level=min_level,
                granted_by=principal.subject,
                now=store.utcnow(),
            )
            return wpb.GrantProjectResponse(grant=convert.grant_to_proto(row))

    def RevokeGrant(
        self, request: wpb.RevokeGrantRequest, context: grpc.ServicerContext
    ) -> wpb.RevokeGrantResponse:
        principal = self._auth.require(context, MANAGERS)
        project_id, vendor_id = parse_name(request.name, "projects/{}/grants/{}")
        with self._db.transaction() as session:
            project = self._owned_project(session, principal, f"projects/{project_id}")
            wf.revoke_grant(session, project=project, vendor_id=vendor_id)
        return wpb.RevokeGrantResponse()

    def ListGrants(
        self, request: wpb.ListGrantsRequest, context: grpc.ServicerContext
    ) -> wpb.ListGrantsResponse:
        principal = self._auth.require(context, (*MANAGERS, VENDOR_ADMIN, VENDOR_WORKER))
        limit = page_size(request.page_size)
        after = _str_cursor(request.page_token)
        with self._db.read() as session:
            if request.parent.startswith("vendors/"):
                vendor_id = _vendor_id(request.parent)
                _own_vendor(principal, vendor_id)
                rows, last = wf.list_grants(
                    session, project_id=None, vendor_id=vendor_id, limit=limit, after=after
                )
            else:
                project = self._owned_project(session, principal, request.parent)
                rows, last = wf.list_grants(
                    session, project_id=project.project_id, vendor_id=None, limit=limit, after=after
                )
            grants = [convert.grant_to_proto(r) for r in rows]
        return wpb.ListGrantsResponse(grants=grants, next_page_token=_token(last))

    # --- pay --------------------------------------------------------------------------------------

    def SetPayRate(
        self, request: wpb.SetPayRateRequest, context: grpc.ServicerContext
    ) -> wpb.SetPayRateResponse:
        principal = self._auth.require(context, MANAGERS)
        rate = request.pay_rate
        with self._db.transaction() as session:
            project = self._owned_project(session, principal, request.parent)
            if int(rate.task_kind) not in (TaskKind.LABEL, TaskKind.REWORK):
                raise InvalidArgument("pay_rate.task_kind: must be LABEL or REWORK", reason="BAD_TASK_KIND")
            if not 1 <= rate.difficulty_tier <= workforce.MAX_TIER:
                raise InvalidArgument(
                    f"pay_rate.difficulty_tier: must be between 1 and {workforce.MAX_TIER}", reason="BAD_TIER"
                )
            amount = workforce.validate_amount(rate.amount_micros, "pay_rate.amount_micros", positive=False)
            currency = workforce.validate_currency(rate.currency, "pay_rate.currency")
            row = wf.set_pay_rate(
                session,
                project=project,
                task_kind=int(rate.task_kind),
                tier=rate.difficulty_tier,
                amount_micros=amount,
                currency=currency,
                now=store.utcnow(),
            )
            return wpb.SetPayRateResponse(pay_rate=convert.pay_rate_to_proto(row))

    def ListPayRates(
        self, request: wpb.ListPayRatesRequest, context: grpc.ServicerContext
    ) -> wpb.ListPayRatesResponse:
        principal = self._auth.require(context, (*MANAGERS, VENDOR_ADMIN))
        (project_id,) = parse_name(request.parent, "projects/{}")
        with self._db.read() as session:
            access = wf.project_access(
                session,
                organization_id=principal.organization_id,
                roles=list(principal.roles),
                project_id=project_id,
            )
            if access.vendor is None:
                require_role(principal, MANAGERS)
            rows = wf.list_pay_rates(session, project_id=project_id)
            return wpb.ListPayRatesResponse(pay_rates=[convert.pay_rate_to_proto(r) for r in rows])

    def AddBonus(self, request: wpb.AddBonusRequest, context: grpc.ServicerContext) -> wpb.AddBonusResponse:
        principal = self._auth.require(context, MANAGERS)
        with self._db.transaction() as session:
            project = self._owned_project(session, principal, request.parent)
            vendor_id, worker_id = parse_name(request.worker, "vendors/{}/workers/{}")
            amount = workforce.validate_amount(request.amount_micros, "amount_micros", positive=True)
            currency = workforce.validate_currency(request.currency)
            reason = workforce.validate_reason(request.reason)
            if (
                vendor_id != project.organization_id
                and session.get(Grant, (project.project_id, vendor_id)) is None
            ):
                raise NotFound(f"worker {request.worker} not found", reason="WORKER_NOT_FOUND")
            worker = wf.get_worker(session, organization_id=vendor_id, worker_id=worker_id)
            identity = (
                worker.subject if vendor_id == project.organization_id else f"{worker.subject}@{vendor_id}"
            )
            if wf.project_currency(session, project_id=project.project_id) not in (currency, wf.NO_CURRENCY):
                raise FailedPrecondition(
                    "bonuses are paid in the project's rate currency", reason="CURRENCY_MISMATCH"
                )
            entry = wf.add_bonus(
                session,
                self._writer,
                project=project,
                vendor_id=vendor_id,
                worker=identity,
                amount_micros=amount,
                currency=currency,
                reason=reason,
                now=store.utcnow(),
            )
            return wpb.AddBonusResponse(entry=convert.ledger_entry_to_proto(entry))

    def _ledger_scope(self, session: Any, principal: common_pb2.Principal, parent: str) -> dict[str, Any]:
        if parent.startswith("vendors/"):
            vendor_id = _vendor_id(parent)
            _own_vendor(principal, vendor_id)
            require_role(principal, (ADMIN, VENDOR_ADMIN))
            return {"organization_id": None, "project_id": None, "vendor_id": vendor_id}
        project = self._owned_project(session, principal, parent)
        return {
            "organization_id": project.organization_id,
            "project_id": project.project_id,
            "vendor_id": None,
        }

    def ListLedgerEntries(
        self, request: wpb.ListLedgerEntriesRequest, context: grpc.ServicerContext
    ) -> wpb.ListLedgerEntriesResponse:
        principal = self._auth.require(context, LEDGER_READERS)
        limit = page_size(request.page_size)
        with self._db.read() as session:
            scope = self._ledger_scope(session, principal, request.parent)
            rows, after = wf.ledger_entries(
                session,
                **scope,
                worker=request.worker,
                limit=limit,
                after_seq=_int_cursor(request.page_token),
            )
            entries = [convert.ledger_entry_to_proto(r) for r in rows]
        return wpb.ListLedgerEntriesResponse(entries=entries, next_page_token=_token(after))

    def GetPayoutSummary(
        self, request: wpb.GetPayoutSummaryRequest, context: grpc.ServicerContext
    ) -> wpb.GetPayoutSummaryResponse:
        principal = self._auth.require(context, LEDGER_READERS)
        with self._db.read() as session:
            scope = self._ledger_scope(session, principal, request.parent)
            rows, _ = wf.ledger_entries(session, **scope, worker="", limit=None, after_seq=None)
            return wf.payout_summary(session, rows)

    def GetProjectForecast(
        self, request: wpb.GetProjectForecastRequest, context: grpc.ServicerContext
    ) -> wpb.GetProjectForecastResponse:
        principal = self._auth.require(context, MANAGERS)
        hours = request.window_hours or 24
        if not 1 <= hours <= MAX_WINDOW_HOURS:
            raise InvalidArgument(
                f"window_hours: must be between 1 and {MAX_WINDOW_HOURS}", reason="BAD_WINDOW"
            )
        with self._db.read() as session:
            project = self._owned_project(session, principal, request.project)
            remaining, capacities, result, currency = wf.project_forecast(
                session, project=project, window=timedelta(hours=hours), now=store.utcnow()
            )
        throughput = {c.vendor: c.throughput for c in capacities}
        return wpb.GetProjectForecastResponse(
            project=request.project,
            remaining_tasks=remaining,
            vendors=[
                wpb.VendorForecast(
                    vendor=f"vendors/{v.vendor}",
                    tasks_per_hour=throughput.get(v.vendor, 0.0),
                    tasks=v.tasks,
                    hours=v.hours,
                    cost_micros=v.cost_micros,
                )
                for v in result.vendors
            ],
            hours=result.hours if result.hours is not None else -1.0,
            cost_micros=result.cost_micros,
            currency=currency,
        )
