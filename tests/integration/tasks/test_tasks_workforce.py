"""WorkforceService and the routing rules of LeaseNextTask, on a real tasks service (port 0, the
in-process bus): vendors, workers, grants, skills and levels, gold, dynamic overlap, difficulty,
the payouts ledger, forecasts, and what one vendor can never see of another."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc, workforce_pb2_grpc
from annocloud.tasks.v1 import workforce_pb2 as wpb
from annocloud_server.common.auth import ADMIN, ANNOTATOR, MANAGER, VENDOR_ADMIN, VENDOR_WORKER
from annocloud_server.common.events import TOPIC_ANNOTATIONS, TOPIC_INGESTION, TOPIC_QA, OutgoingRecord
from annocloud_server.common.paging import new_id
from annocloud_server.runtime import Runtime
from annocloud_server.tasks.component import create_component
from google.rpc import error_details_pb2
from grpc_status import rpc_status

SCHEMA = tasks_pb2.LabelSchema(
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="cat"), tasks_pb2.ClassLabel(name="dog")],
)
IMAGE = common_pb2.MEDIA_TYPE_IMAGE
IMAGE_SKILLS = wpb.Skills(media_types=[IMAGE], languages=["en"])


def reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason)


def fails(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


class Market:
    """One enterprise (acme) with a manager and an annotator; two vendors (ven-a, ven-b)."""

    def __init__(self, runtime: Runtime, channel: grpc.Channel, caller: Callable[..., Any]):
        self.runtime = runtime
        self.tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        self.wf = workforce_pb2_grpc.WorkforceServiceStub(channel)
        self.caller = caller
        self.manager = caller(org="acme", subject="user:mgr", roles=(MANAGER,)).md
        self.annotator = caller(org="acme", subject="user:ann", roles=(ANNOTATOR,)).md
        self.vendor_admin = {
            v: caller(org=v, subject="user:boss", roles=(VENDOR_ADMIN,)).md for v in ("ven-a", "ven-b")
        }

    def worker(self, vendor: str, subject: str) -> Any:
        return self.caller(org=vendor, subject=subject, roles=(VENDOR_WORKER,)).md

    def register(self, vendor: str, *workers: tuple[str, int], skills: wpb.Skills = IMAGE_SKILLS) -> None:
        self.wf.RegisterVendor(
            wpb.RegisterVendorRequest(display_name=vendor.upper()), metadata=self.vendor_admin[vendor]
        )
        for worker_id, level in workers:
            self.wf.CreateWorker(
                wpb.CreateWorkerRequest(
                    parent=f"vendors/{vendor}",
                    worker_id=worker_id,
                    worker=wpb.Worker(
                        subject=f"user:{worker_id}", display_name=worker_id, level=level, skills=skills
                    ),
                ),
                metadata=self.vendor_admin[vendor],
            )

    def project(self, quality: tasks_pb2.QualitySettings | None = None, redundancy: int = 1) -> str:
        project = tasks_pb2.Project(display_name="Cats", redundancy=redundancy, datasets=["datasets/ds1"])
        if quality is not None:
            project.quality.CopyFrom(quality)
        return str(
            self.tasks.CreateProject(
                tasks_pb2.CreateProjectRequest(project=project, schema=SCHEMA), metadata=self.manager
            ).project.name
        )

    def grant(self, project: str, vendor: str, min_level: int = 1) -> None:
        self.wf.GrantProject(
            wpb.GrantProjectRequest(parent=project, vendor=f"vendors/{vendor}", min_level=min_level),
            metadata=self.manager,
        )

    def publish(self, topic: str, resource: str, **payload: Any) -> None:
        envelope = events_pb2.EventEnvelope(
            event_id=new_id(),
            event_type="annocloud.events.v1." + type(next(iter(payload.values()))).__name__,
            tenant_id="acme",
            resource_name=resource,
            aggregate_version=1,
            **payload,
        )
        envelope.occurred_time.FromDatetime(datetime.now(UTC))
        self.runtime.bus.publish([OutgoingRecord(topic, resource, envelope.SerializeToString())])
        self.runtime.wait_idle()

    def ingest(self, *items: str) -> None:
        for item in items:
            name = f"datasets/ds1/items/{item}"
            message = ingestion_pb2.Item(
                name=name, media_type=IMAGE, file_name=f"{item}.png", width=32, height=16
            )
            self.publish(TOPIC_INGESTION, name, item_ingested=events_pb2.ItemIngested(item=message))

    def lease(self, project: str, md: Any) -> tasks_pb2.Task:
        return self.tasks.LeaseNextTask(tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md).task

    def submit(self, task: tasks_pb2.Task, annotator: str, annotator_org: str) -> str:
        """What annotations publishes when the task's labels are submitted."""
        project_id = task.name.split("/")[1]
        annotation = annotations_pb2.Annotation(
            name=f"projects/{project_id}/annotations/{new_id()}",
            task=task.name,
            item=task.item,
            annotator=annotator,
        )
        self.publish(
            TOPIC_ANNOTATIONS,
            annotation.name,
            annotation_submitted=events_pb2.AnnotationSubmitted(
                annotation=annotation, annotator_organization=annotator_org
            ),
        )
        return annotation.name

    def accept(self, project: str, item: str, *credited: tuple[str, str, str]) -> None:
        """What qa publishes when an item is accepted: (task, annotator, annotator organization)."""
        label = qa_pb2.AcceptedLabel(name=f"{project}/acceptedLabels/{item.rsplit('/', 1)[-1]}", item=item)
        label.accept_time.FromDatetime(datetime.now(UTC))
        self.publish(
            TOPIC_QA,
            label.name,
            item_accepted=events_pb2.ItemAccepted(
                accepted_label=label,
                credited=[
                    events_pb2.CreditedWork(task=t, annotator=a, annotator_organization=o)
                    for t, a, o in credited
                ],
            ),
        )

    def summary(self, parent: str, md: Any) -> wpb.GetPayoutSummaryResponse:
        return self.wf.GetPayoutSummary(wpb.GetPayoutSummaryRequest(parent=parent), metadata=md)


@pytest.fixture
def market(
    start_services: Callable[..., Runtime],
    channel_to: Callable[..., grpc.Channel],
    caller: Callable[..., Any],
) -> Market:
    runtime = start_services([create_component])
    return Market(runtime, channel_to(runtime), caller)


def test_vendor_worker_leases_only_through_a_grant_and_a_worker_record(market: Market) -> None:
    """No grant: NOT_FOUND; granted but unregistered: WORKER_NOT_REGISTERED; registered: the task."""
    project = market.project()
    market.ingest("i1")
    ana = market.worker("ven-a", "user:ana")
    assert fails(market.lease, project, ana).code() == grpc.StatusCode.NOT_FOUND
    market.register("ven-a")
    market.grant(project, "ven-a")
    error = fails(market.lease, project, ana)
    assert (error.code(), reason(error)) == (grpc.StatusCode.FAILED_PRECONDITION, "WORKER_NOT_REGISTERED")
    market.register("ven-a", ("ana", 1))
    task = market.lease(project, ana)
    assert task.lease.worker == "user:ana@ven-a"
    assert task.lease.worker_organization == "ven-a"


def test_routing_respects_skills_level_and_grant_minimum(market: Market) -> None:
    """Missing language skill, a level below the grant's minimum and a suspended worker are refused
    with the reason; hard items (tier 3) go only to workers of level 3 or more."""
    quality = tasks_pb2.QualitySettings(language="de")
    project = market.project(quality)
    market.register(
        "ven-a", ("low", 1), ("high", 4), skills=wpb.Skills(media_types=[IMAGE], languages=["de"])
    )
    market.register("ven-b", ("en-only", 5))
    market.grant(project, "ven-a")
    market.grant(project, "ven-b")
    error = fails(market.lease, project, market.worker("ven-b", "user:en-only"))
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "SKILLS_MISSING")
    market.ingest("easy", "hard")
    market.publish(
        TOPIC_QA,
        project,
        item_difficulty_assessed=events_pb2.ItemDifficultyAssessed(
            project=project, item="datasets/ds1/items/hard", difficulty=0.5, source="disagreement"
        ),
    )
    low, high = market.worker("ven-a", "user:low"), market.worker("ven-a", "user:high")
    assert market.lease(project, low).item == "datasets/ds1/items/easy"
    assert reason(fails(market.lease, project, low)) == "NO_TASK_AVAILABLE"
    hard = market.lease(project, high)
    assert (hard.item, hard.difficulty_tier) == ("datasets/ds1/items/hard", 3)
    market.grant(project, "ven-a", min_level=2)
    error = fails(market.lease, project, low)
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "LEVEL_TOO_LOW")
    market.wf.UpdateWorker(
        wpb.UpdateWorkerRequest(name="vendors/ven-a/workers/high", state=wpb.WORKER_STATE_SUSPENDED),
        metadata=market.vendor_admin["ven-a"],
    )
    assert reason(fails(market.lease, project, high)) == "WORKER_SUSPENDED"


def test_qualification_serves_only_gold_until_the_worker_qualifies(market: Market) -> None:
    """A new worker gets the gold items first (looking like any task), then real work once qa's
    scores qualify them; a low gold accuracy stops real work with QUALITY_TOO_LOW."""
    quality = tasks_pb2.QualitySettings(qualification_gold_tasks=2, min_worker_accuracy=0.6)
    project = market.project(quality)
    market.register("ven-a", ("ana", 1), ("bob", 1))
    market.grant(project, "ven-a")
    market.ingest("g1", "g2", "real")
    for gold in ("g1", "g2"):
        market.publish(
            TOPIC_QA,
            f"{project}/goldItems/{gold}",
            gold_item_added=events_pb2.GoldItemAdded(project=project, item=f"datasets/ds1/items/{gold}"),
        )
    counts = market.tasks.GetProject(
        tasks_pb2.GetProjectRequest(name=project), metadata=market.manager
    ).project.task_counts
    assert counts.queued == 1  # the gold items' ordinary tasks were cancelled
    ana = market.worker("ven-a", "user:ana")
    served = []
    for answered in range(2):
        task = market.lease(project, ana)
        served.append(task.item)
        assert task.kind == tasks_pb2.TASK_KIND_LABEL
        assert task.priority == 0
        market.submit(task, "user:ana@ven-a", "ven-a")
        market.publish(
            TOPIC_QA,
            project,
            worker_scored=events_pb2.WorkerScored(
                project=project,
                worker="user:ana@ven-a",
                worker_organization="ven-a",
                task=task.name,
                correct=True,
                gold_answered=answered + 1,
                gold_correct=answered + 1,
            ),
        )
    assert sorted(served) == ["datasets/ds1/items/g1", "datasets/ds1/items/g2"]
    assert market.lease(project, ana).item == "datasets/ds1/items/real"
    bob = market.worker("ven-a", "user:bob")
    market.publish(
        TOPIC_QA,
        project,
        worker_scored=events_pb2.WorkerScored(
            project=project,
            worker="user:bob@ven-a",
            worker_organization="ven-a",
            gold_answered=2,
            gold_correct=0,
        ),
    )
    error = fails(market.lease, project, bob)
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "QUALITY_TOO_LOW")
    worker = market.wf.GetWorker(
        wpb.GetWorkerRequest(name="vendors/ven-a/workers/ana"), metadata=market.vendor_admin["ven-a"]
    ).worker
    assert (worker.gold_answered, worker.gold_correct) == (2, 2)


def test_dynamic_overlap_starts_at_min_labels_adds_on_request_and_cancels_on_accept(market: Market) -> None:
    """min_labels tasks up front; MoreLabelsRequested adds up to max_labels (idempotently);
    ItemAccepted cancels what is still queued."""
    quality = tasks_pb2.QualitySettings(
        dynamic_overlap=tasks_pb2.DynamicOverlap(min_labels=2, max_labels=4, confidence_threshold=0.9)
    )
    project = market.project(quality, redundancy=5)
    market.ingest("i1")
    item = "datasets/ds1/items/i1"

    def queued() -> int:
        request = tasks_pb2.ListTasksRequest(parent=project, state=tasks_pb2.TASK_STATE_QUEUED, page_size=100)
        return len(market.tasks.ListTasks(request, metadata=market.manager).tasks)

    assert queued() == 2
    context = events_pb2.ItemContext(item=item, media_type=IMAGE, width=32, height=16)
    for _ in range(2):  # the same request twice adds one task once
        market.publish(
            TOPIC_QA,
            project,
            more_labels_requested=events_pb2.MoreLabelsRequested(
                project=project, item=context, labels_wanted=3
            ),
        )
    assert queued() == 3
    market.publish(
        TOPIC_QA,
        project,
        more_labels_requested=events_pb2.MoreLabelsRequested(project=project, item=context, labels_wanted=9),
    )
    assert queued() == 4  # capped at max_labels
    market.accept(project, item)
    assert queued() == 0


def test_ledger_pays_accepted_work_at_the_rate_in_force_and_reverses_on_audit(market: Market) -> None:
    """Accruals use the rate in force at acceptance (a later rate change leaves them alone), a
    repeated ItemAccepted pays nothing twice, an audit reversal takes the pay back, a bonus adds;
    the totals equal the sum of accepted work and the summary says it reconciles."""
    project = market.project()
    market.register("ven-a", ("ana", 1))
    market.grant(project, "ven-a")
    market.wf.SetPayRate(
        wpb.SetPayRateRequest(
            parent=project,
            pay_rate=wpb.PayRate(
                task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=1, amount_micros=50_000, currency="USD"
            ),
        ),
        metadata=market.manager,
    )
    market.ingest("i1", "i2", "i3")
    ana = market.worker("ven-a", "user:ana")
    tasks = []
    for _ in range(3):
        task = market.lease(project, ana)
        market.submit(task, "user:ana@ven-a", "ven-a")
        tasks.append(task)
    market.accept(project, tasks[0].item, (tasks[0].name, "user:ana@ven-a", "ven-a"))
    market.accept(
        project, tasks[0].item, (tasks[0].name, "user:ana@ven-a", "ven-a")
    )  # redelivered / re-accepted
    market.wf.SetPayRate(
        wpb.SetPayRateRequest(
            parent=project,
            pay_rate=wpb.PayRate(
                task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=1, amount_micros=80_000, currency="USD"
            ),
        ),
        metadata=market.manager,
    )
    market.accept(project, tasks[1].item, (tasks[1].name, "user:ana@ven-a", "ven-a"))
    market.accept(project, tasks[2].item, (tasks[2].name, "user:ana@ven-a", "ven-a"))
    market.publish(
        TOPIC_QA,
        f"{project}/acceptedLabels/x",
        acceptance_revoked=events_pb2.AcceptanceRevoked(
            revoked=[
                events_pb2.CreditedWork(
                    task=tasks[2].name, annotator="user:ana@ven-a", annotator_organization="ven-a"
                )
            ],
            reason_code="wrong_class",
            reason="a dog",
        ),
    )
    market.wf.AddBonus(
        wpb.AddBonusRequest(
            parent=project,
            worker="vendors/ven-a/workers/ana",
            amount_micros=1_000,
            currency="USD",
            reason="fast",
        ),
        metadata=market.manager,
    )
    entries = market.wf.ListLedgerEntries(
        wpb.ListLedgerEntriesRequest(parent=project), metadata=market.manager
    ).entries
    assert [(e.kind, e.amount_micros) for e in entries] == [
        (wpb.LEDGER_ENTRY_KIND_ACCRUAL, 50_000),
        (wpb.LEDGER_ENTRY_KIND_ACCRUAL, 80_000),
        (wpb.LEDGER_ENTRY_KIND_ACCRUAL, 80_000),
        (wpb.LEDGER_ENTRY_KIND_REVERSAL, -80_000),
        (wpb.LEDGER_ENTRY_KIND_BONUS, 1_000),
    ]
    assert entries[3].reason == "wrong_class: a dog"
    summary = market.summary(project, market.manager)
    (payout,) = summary.payouts
    assert (payout.accepted_tasks, payout.reversed_tasks) == (3, 1)
    assert payout.total_micros == 50_000 + 80_000 + 1_000 == summary.totals_micros["USD"]
    assert summary.reconciled
    assert market.summary("vendors/ven-a", market.vendor_admin["ven-a"]).totals_micros["USD"] == 131_000


def test_reconciliation_catches_an_accrual_that_does_not_match_its_rate(market: Market) -> None:
    """The summary re-derives every accrual from the rates: a tampered amount reads unreconciled."""
    from annocloud_server.tasks.models import LedgerEntry
    from sqlalchemy import update

    project = market.project()
    market.wf.SetPayRate(
        wpb.SetPayRateRequest(
            parent=project,
            pay_rate=wpb.PayRate(
                task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=1, amount_micros=10, currency="EUR"
            ),
        ),
        metadata=market.manager,
    )
    market.ingest("i1")
    task = market.lease(project, market.annotator)
    market.submit(task, "user:ann", "acme")
    market.accept(project, task.item, (task.name, "user:ann", "acme"))
    assert market.summary(project, market.manager).reconciled
    (db,) = [c.db for c in market.runtime.components if c.name == "tasks"]
    with db.transaction() as session:
        session.execute(update(LedgerEntry).values(amount_micros=11))
    assert not market.summary(project, market.manager).reconciled


def test_vendors_never_see_each_other(market: Market) -> None:
    """Vendor B cannot list, lease, read or pay-read vendor A's tasks, workers or payouts; a
    worker cannot read a task not leased to them; neither vendor reads the project's full queue."""
    project = market.project()
    market.register("ven-a", ("ana", 1))
    market.register("ven-b", ("bea", 1))
    market.grant(project, "ven-a")
    market.ingest("i1", "i2")
    ana, bea = market.worker("ven-a", "user:ana"), market.worker("ven-b", "user:bea")
    b_admin = market.vendor_admin["ven-b"]
    task = market.lease(project, ana)
    # B has no grant: the project and its tasks do not exist for B.
    lease = tasks_pb2.LeaseNextTaskRequest(parent=project)
    assert fails(market.tasks.LeaseNextTask, lease, metadata=bea).code() == grpc.StatusCode.NOT_FOUND
    assert (
        fails(market.tasks.LeaseNextTask, lease, metadata=b_admin).code() == grpc.StatusCode.PERMISSION_DENIED
    )
    for call, request in (
        (market.tasks.GetTask, tasks_pb2.GetTaskRequest(name=task.name)),
        (market.tasks.ListTasks, tasks_pb2.ListTasksRequest(parent=project)),
        (market.tasks.GetProject, tasks_pb2.GetProjectRequest(name=project)),
    ):
        for md in (bea, b_admin):
            assert fails(call, request, metadata=md).code() == grpc.StatusCode.NOT_FOUND
    for call, request in (
        (market.wf.ListWorkers, wpb.ListWorkersRequest(parent="vendors/ven-a")),
        (market.wf.GetWorker, wpb.GetWorkerRequest(name="vendors/ven-a/workers/ana")),
        (market.wf.ListLedgerEntries, wpb.ListLedgerEntriesRequest(parent="vendors/ven-a")),
        (market.wf.GetPayoutSummary, wpb.GetPayoutSummaryRequest(parent="vendors/ven-a")),
        (market.wf.ListGrants, wpb.ListGrantsRequest(parent="vendors/ven-a")),
        (market.wf.GetPayoutSummary, wpb.GetPayoutSummaryRequest(parent=project)),
    ):
        assert fails(call, request, metadata=b_admin).code() == grpc.StatusCode.NOT_FOUND
    # Even granted, B sees none of A's work.
    market.grant(project, "ven-b")
    listed = market.tasks.ListTasks(tasks_pb2.ListTasksRequest(parent=project), metadata=b_admin).tasks
    assert list(listed) == []
    assert (
        fails(market.tasks.GetTask, tasks_pb2.GetTaskRequest(name=task.name), metadata=b_admin).code()
        == grpc.StatusCode.NOT_FOUND
    )
    other = market.lease(project, bea)
    assert other.name != task.name
    # A worker reads the task they hold, not the one another worker holds.
    assert market.tasks.GetTask(tasks_pb2.GetTaskRequest(name=task.name), metadata=ana).task.name == task.name
    assert (
        fails(market.tasks.GetTask, tasks_pb2.GetTaskRequest(name=other.name), metadata=ana).code()
        == grpc.StatusCode.NOT_FOUND
    )
    mine = market.tasks.ListTasks(tasks_pb2.ListTasksRequest(parent=project), metadata=ana).tasks
    assert [t.name for t in mine] == [task.name]
    a_view = market.tasks.ListTasks(
        tasks_pb2.ListTasksRequest(parent=project), metadata=market.vendor_admin["ven-a"]
    ).tasks
    assert [t.name for t in a_view] == [task.name]


def test_equal_subjects_of_two_vendors_are_different_workers(market: Market) -> None:
    """user:x of ven-a and user:x of ven-b never share an item's slots or each other's tasks."""
    project = market.project(redundancy=2)
    market.register("ven-a", ("x", 1))
    market.register("ven-b", ("x", 1))
    market.grant(project, "ven-a")
    market.grant(project, "ven-b")
    market.ingest("i1")
    xa, xb = market.worker("ven-a", "user:x"), market.worker("ven-b", "user:x")
    ta, tb = market.lease(project, xa), market.lease(project, xb)
    assert ta.item == tb.item
    assert ta.name != tb.name
    assert (
        fails(market.tasks.GetTask, tasks_pb2.GetTaskRequest(name=ta.name), metadata=xb).code()
        == grpc.StatusCode.NOT_FOUND
    )


def test_forecast_splits_remaining_work_by_observed_throughput(market: Market) -> None:
    """Remaining tasks are split by the vendors' completions in the window, costed at the rates."""
    project = market.project()
    market.register("ven-a", ("ana", 1))
    market.grant(project, "ven-a")
    market.wf.SetPayRate(
        wpb.SetPayRateRequest(
            parent=project,
            pay_rate=wpb.PayRate(
                task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=1, amount_micros=1_000, currency="USD"
            ),
        ),
        metadata=market.manager,
    )
    market.ingest(*[f"i{n}" for n in range(6)])
    ana = market.worker("ven-a", "user:ana")
    for md, subject, org in (
        (ana, "user:ana@ven-a", "ven-a"),
        (market.annotator, "user:ann", "acme"),
        (ana, "user:ana@ven-a", "ven-a"),
    ):
        market.submit(market.lease(project, md), subject, org)
    result = market.wf.GetProjectForecast(
        wpb.GetProjectForecastRequest(project=project), metadata=market.manager
    )
    assert result.remaining_tasks == 3
    shares = {v.vendor: v.tasks for v in result.vendors}
    assert shares == {"vendors/ven-a": 2, "vendors/acme": 1}
    assert result.cost_micros == 3_000
    assert result.currency == "USD"
    assert result.hours > 0
    assert (
        fails(
            market.wf.GetProjectForecast,
            wpb.GetProjectForecastRequest(project=project),
            metadata=market.vendor_admin["ven-a"],
        ).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_bad_workforce_input_is_invalid_argument_and_writes_nothing(market: Market) -> None:
    """Bad ids, levels, currencies, amounts and quality settings name the field; nothing is stored."""
    market.register("ven-a")
    admin = market.vendor_admin["ven-a"]
    bad_workers = [
        wpb.CreateWorkerRequest(
            parent="vendors/ven-a", worker_id="Bad Id", worker=wpb.Worker(subject="user:a", display_name="a")
        ),
        wpb.CreateWorkerRequest(
            parent="vendors/ven-a",
            worker_id="a",
            worker=wpb.Worker(subject="user:a", display_name="a", level=9),
        ),
        wpb.CreateWorkerRequest(
            parent="vendors/ven-a",
            worker_id="a",
            worker=wpb.Worker(subject="user:a", display_name="a", skills=wpb.Skills(languages=["not a tag"])),
        ),
    ]
    for request in bad_workers:
        assert (
            fails(market.wf.CreateWorker, request, metadata=admin).code() == grpc.StatusCode.INVALID_ARGUMENT
        )
    assert (
        list(market.wf.ListWorkers(wpb.ListWorkersRequest(parent="vendors/ven-a"), metadata=admin).workers)
        == []
    )
    project = market.project()
    for rate in (
        wpb.PayRate(task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=1, amount_micros=1, currency="usd"),
        wpb.PayRate(task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=9, amount_micros=1, currency="USD"),
        wpb.PayRate(task_kind=tasks_pb2.TASK_KIND_LABEL, difficulty_tier=1, amount_micros=-5, currency="USD"),
    ):
        error = fails(
            market.wf.SetPayRate,
            wpb.SetPayRateRequest(parent=project, pay_rate=rate),
            metadata=market.manager,
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        list(
            market.wf.ListPayRates(wpb.ListPayRatesRequest(parent=project), metadata=market.manager).pay_rates
        )
        == []
    )
    for quality in (
        tasks_pb2.QualitySettings(audit_rate=1.5),
        tasks_pb2.QualitySettings(review_stages=[tasks_pb2.REVIEW_STAGE_AUDIT]),
        tasks_pb2.QualitySettings(
            dynamic_overlap=tasks_pb2.DynamicOverlap(min_labels=3, max_labels=2, confidence_threshold=0.9)
        ),
        tasks_pb2.QualitySettings(error_taxonomy=[tasks_pb2.ErrorCode(code="Bad Code")]),
    ):
        error = fails(market.project, quality)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "project.quality" in (error.details() or "")
    assert (
        fails(
            market.wf.GrantProject,
            wpb.GrantProjectRequest(parent=project, vendor="vendors/nobody"),
            metadata=market.manager,
        ).code()
        == grpc.StatusCode.FAILED_PRECONDITION
    )


def test_an_unregistered_in_house_annotator_works_as_before(market: Market) -> None:
    """No worker record: an in-house annotator still leases every tier (the pre-workforce behaviour)."""
    project = market.project()
    market.ingest("i1")
    market.publish(
        TOPIC_QA,
        project,
        item_difficulty_assessed=events_pb2.ItemDifficultyAssessed(
            project=project, item="datasets/ds1/items/i1", difficulty=0.95
        ),
    )
    task = market.lease(project, market.annotator)
    assert (task.difficulty_tier, task.lease.worker) == (5, "user:ann")
    assert timedelta(minutes=9) < task.lease.expire_time.ToDatetime(
        tzinfo=UTC
    ) - task.lease.lease_time.ToDatetime(tzinfo=UTC)


def test_admin_role_alone_is_not_a_vendor(market: Market) -> None:
    """An enterprise admin of another organization cannot reach a project granted to a vendor."""
    project = market.project()
    market.register("ven-a", ("ana", 1))
    market.grant(project, "ven-a")
    outsider = market.caller(org="ven-a", subject="user:boss", roles=(ADMIN,)).md
    assert (
        fails(market.tasks.GetProject, tasks_pb2.GetProjectRequest(name=project), metadata=outsider).code()
        == grpc.StatusCode.NOT_FOUND
    )
