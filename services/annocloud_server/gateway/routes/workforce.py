"""The workforce marketplace: vendors, workers, grants, pay rates, the payouts ledger, forecasts."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.tasks.v1 import workforce_pb2 as wpb
from fastapi import APIRouter, Body, Query

from annocloud_server.gateway.deps import ClientsDep, PageSize, PageToken, ProjectId, VendorId, WorkerId
from annocloud_server.gateway.protojson import parse, split_body, to_dict, unwrap

router = APIRouter(tags=["workforce"])

WorkerQuery = Annotated[str, Query(max_length=300, description="Only this worker's entries (subject).")]
_WORKER_EXAMPLE = {
    "worker_id": "ana",
    "subject": "user:ana",
    "display_name": "Ana",
    "level": 2,
    "skills": {"media_types": ["MEDIA_TYPE_IMAGE"], "object_kinds": ["OBJECT_KIND_BOX"], "languages": ["en"]},
}


@router.post("/vendors:register")
def register_vendor(
    clients: ClientsDep, body: Annotated[dict[str, Any], Body(examples=[{"display_name": "Acme Labeling"}])]
) -> dict[str, Any]:
    """Registers (or renames) the caller's organization as a vendor."""
    request = parse(split_body(body, {"display_name"}), wpb.RegisterVendorRequest)
    return unwrap(clients.call(clients.workforce.RegisterVendor, request))


@router.get("/vendors/{vendor}")
def get_vendor(clients: ClientsDep, vendor: VendorId) -> dict[str, Any]:
    """Gets a vendor (itself, or an organization that granted it a project)."""
    return unwrap(clients.read(clients.workforce.GetVendor, wpb.GetVendorRequest(name=f"vendors/{vendor}")))


@router.post("/vendors/{vendor}/workers")
def create_worker(
    clients: ClientsDep, vendor: VendorId, body: Annotated[dict[str, Any], Body(examples=[_WORKER_EXAMPLE])]
) -> dict[str, Any]:
    """Adds a worker to the caller's vendor (or an enterprise's in-house worker)."""
    fields = split_body(body, {"worker_id", "subject", "display_name", "level", "skills"})
    worker_id = fields.pop("worker_id", "")
    request = wpb.CreateWorkerRequest(
        parent=f"vendors/{vendor}",
        worker_id=worker_id if isinstance(worker_id, str) else "",
        worker=parse(fields, wpb.Worker),
    )
    return unwrap(clients.call(clients.workforce.CreateWorker, request))


@router.get("/vendors/{vendor}/workers")
def list_workers(
    clients: ClientsDep, vendor: VendorId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists the workers of the caller's vendor."""
    request = wpb.ListWorkersRequest(parent=f"vendors/{vendor}", page_size=page_size, page_token=page_token)
    return to_dict(clients.read(clients.workforce.ListWorkers, request))


@router.get("/vendors/{vendor}/workers/{worker}")
def get_worker(clients: ClientsDep, vendor: VendorId, worker: WorkerId) -> dict[str, Any]:
    """Gets a worker (a worker may read their own record)."""
    request = wpb.GetWorkerRequest(name=f"vendors/{vendor}/workers/{worker}")
    return unwrap(clients.read(clients.workforce.GetWorker, request))


@router.patch("/vendors/{vendor}/workers/{worker}")
def update_worker(
    clients: ClientsDep,
    vendor: VendorId,
    worker: WorkerId,
    body: Annotated[dict[str, Any], Body(examples=[{"level": 3}, {"state": "WORKER_STATE_SUSPENDED"}])],
) -> dict[str, Any]:
    """Changes a worker's skills, level or state."""
    request = parse(split_body(body, {"skills", "level", "state"}), wpb.UpdateWorkerRequest)
    request.name = f"vendors/{vendor}/workers/{worker}"
    return unwrap(clients.call(clients.workforce.UpdateWorker, request))


@router.get("/vendors/{vendor}/grants")
def list_vendor_grants(
    clients: ClientsDep, vendor: VendorId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists the projects granted to the caller's vendor."""
    request = wpb.ListGrantsRequest(parent=f"vendors/{vendor}", page_size=page_size, page_token=page_token)
    return to_dict(clients.read(clients.workforce.ListGrants, request))


@router.post("/projects/{project}/grants")
def grant_project(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[dict[str, Any], Body(examples=[{"vendor": "vendors/acme", "min_level": 2}])],
) -> dict[str, Any]:
    """Grants the project to a registered vendor."""
    request = parse(split_body(body, {"vendor", "min_level"}), wpb.GrantProjectRequest)
    request.parent = f"projects/{project}"
    return unwrap(clients.call(clients.workforce.GrantProject, request))


@router.get("/projects/{project}/grants")
def list_project_grants(
    clients: ClientsDep, project: ProjectId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists the vendors a project is granted to."""
    request = wpb.ListGrantsRequest(parent=f"projects/{project}", page_size=page_size, page_token=page_token)
    return to_dict(clients.read(clients.workforce.ListGrants, request))


@router.delete("/projects/{project}/grants/{vendor}")
def revoke_grant(clients: ClientsDep, project: ProjectId, vendor: VendorId) -> dict[str, Any]:
    """Revokes a grant; the vendor's workers get no new tasks of the project."""
    request = wpb.RevokeGrantRequest(name=f"projects/{project}/grants/{vendor}")
    return to_dict(clients.call(clients.workforce.RevokeGrant, request))


@router.post("/projects/{project}/payRates")
def set_pay_rate(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "task_kind": "TASK_KIND_LABEL",
                    "difficulty_tier": 1,
                    "amount_micros": 50000,
                    "currency": "USD",
                }
            ]
        ),
    ],
) -> dict[str, Any]:
    """Sets the pay for a task kind and difficulty tier from now on."""
    rate = parse(split_body(body, {"task_kind", "difficulty_tier", "amount_micros", "currency"}), wpb.PayRate)
    request = wpb.SetPayRateRequest(parent=f"projects/{project}", pay_rate=rate)
    return unwrap(clients.call(clients.workforce.SetPayRate, request))


@router.get("/projects/{project}/payRates")
def list_pay_rates(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Lists a project's pay rates, newest first."""
    return to_dict(
        clients.read(clients.workforce.ListPayRates, wpb.ListPayRatesRequest(parent=f"projects/{project}"))
    )


@router.post("/projects/{project}/bonuses")
def add_bonus(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "worker": "vendors/acme/workers/ana",
                    "amount_micros": 1000000,
                    "currency": "USD",
                    "reason": "top accuracy in March",
                }
            ]
        ),
    ],
) -> dict[str, Any]:
    """Adds a bonus for a worker to the payouts ledger."""
    request = parse(split_body(body, {"worker", "amount_micros", "currency", "reason"}), wpb.AddBonusRequest)
    request.parent = f"projects/{project}"
    return unwrap(clients.call(clients.workforce.AddBonus, request))


def _entries(
    clients: ClientsDep, parent: str, worker: str, page_size: int, page_token: str
) -> dict[str, Any]:
    request = wpb.ListLedgerEntriesRequest(
        parent=parent, worker=worker, page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.workforce.ListLedgerEntries, request))


@router.get("/projects/{project}/ledgerEntries")
def list_project_ledger(
    clients: ClientsDep,
    project: ProjectId,
    worker: WorkerQuery = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists a project's ledger entries, oldest first."""
    return _entries(clients, f"projects/{project}", worker, page_size, page_token)


@router.get("/vendors/{vendor}/ledgerEntries")
def list_vendor_ledger(
    clients: ClientsDep,
    vendor: VendorId,
    worker: WorkerQuery = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists the caller's vendor's ledger entries over every project, oldest first."""
    return _entries(clients, f"vendors/{vendor}", worker, page_size, page_token)


@router.get("/projects/{project}/payouts")
def project_payouts(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Ledger totals per worker of a project, and whether they reconcile with the accepted work."""
    request = wpb.GetPayoutSummaryRequest(parent=f"projects/{project}")
    return to_dict(clients.read(clients.workforce.GetPayoutSummary, request))


@router.get("/vendors/{vendor}/payouts")
def vendor_payouts(clients: ClientsDep, vendor: VendorId) -> dict[str, Any]:
    """Ledger totals per worker of the caller's vendor."""
    request = wpb.GetPayoutSummaryRequest(parent=f"vendors/{vendor}")
    return to_dict(clients.read(clients.workforce.GetPayoutSummary, request))


@router.get("/projects/{project}/forecast")
def project_forecast(
    clients: ClientsDep,
    project: ProjectId,
    window_hours: Annotated[int, Query(ge=0, le=720, description="Hours of throughput history.")] = 0,
) -> dict[str, Any]:
    """Time and cost to finish the project, per vendor."""
    request = wpb.GetProjectForecastRequest(project=f"projects/{project}", window_hours=window_hours)
    return to_dict(clients.read(clients.workforce.GetProjectForecast, request))
