"""The chaos workload: uniquely identified annotations pushed through a running cluster over gRPC.

A scenario makes its own dataset of text records and a project with redundancy 1, then
``workers`` threads lease and submit until every task is done. Every call is retried on transient
errors (a service, the broker or the database may be down at that moment); a submit is retried with
the same ``request_id`` so a retry after an unknown outcome never creates a second annotation. What
the clients got acknowledged is the ground truth the audit (``audit.py``) compares the databases
against.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from annocloud.annotations.v1 import annotations_pb2, annotations_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common.auth import ADMIN, ANNOTATOR, Authenticator, make_principal

T = TypeVar("T")

TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
CLASSES = ("billing", "shipping", "returns")
RETRY_FOR = 120.0  # seconds a call keeps retrying through an outage before the workload gives up


class WorkloadError(RuntimeError):
    """The workload could not go on (an outage outlasted the retries, or a definitive error)."""


@dataclass
class Acknowledged:
    annotation: str
    task: str
    ack_time: datetime


@dataclass
class WorkloadResult:
    project: str
    dataset: str
    items: int
    acknowledged: dict[str, Acknowledged] = field(default_factory=dict)
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


def call_with_retries(
    fn: Callable[[], T], *, what: str, counter: list[int], give_up_after: float = RETRY_FOR
) -> T:
    """fn() until it succeeds or fails with a non-transient status; transient failures back off."""
    deadline = time.monotonic() + give_up_after
    delay = 0.05
    while True:
        try:
            return fn()
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code not in TRANSIENT:
                raise
            if time.monotonic() > deadline:
                raise WorkloadError(f"{what}: still {code.name} after {give_up_after:.0f}s: {exc}") from exc
            counter[0] += 1
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class Workload:
    """One scenario's project, driven by ``workers`` annotator threads."""

    def __init__(
        self,
        channel_for: Callable[[str], grpc.Channel],
        secret: bytes,
        *,
        organization: str,
        workers: int = 8,
    ):
        auth = Authenticator(secret)
        self.organization = organization
        self.admin = auth.metadata_for(make_principal(organization, "key:chaos", [ADMIN]))
        self.annotators = [
            auth.metadata_for(make_principal(organization, f"user:chaos-{i}", [ANNOTATOR]))
            for i in range(workers)
        ]
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel_for("ingestion"))
        self.tasks = tasks_pb2_grpc.TaskServiceStub(channel_for("tasks"))
        self.annotations = annotations_pb2_grpc.AnnotationServiceStub(channel_for("annotations"))
        self._retries = [0]
        self._lock = threading.Lock()

    def prepare(self, name: str, items: int, *, timeout: float = 180.0) -> WorkloadResult:
        """A dataset of ``items`` unique text records and a project (redundancy 1) whose tasks all exist."""
        run = uuid.uuid4().hex[:8]
        dataset = call_with_retries(
            lambda: (
                self.ingestion.CreateDataset(
                    ingestion_pb2.CreateDatasetRequest(
                        dataset=ingestion_pb2.Dataset(display_name=f"chaos {name}"), request_id=f"ds-{run}"
                    ),
                    metadata=self.admin,
                    timeout=30,
                ).dataset
            ),
            what="CreateDataset",
            counter=self._retries,
        )
        for start in range(0, items, 1000):
            records = [
                ingestion_pb2.TextRecord(
                    text=f"chaos {name} {run} ticket #{i}: where is my parcel {uuid.uuid4()}"
                )
                for i in range(start, min(items, start + 1000))
            ]
            call_with_retries(
                lambda records=records, start=start: self.ingestion.CreateTextItems(
                    ingestion_pb2.CreateTextItemsRequest(
                        parent=dataset.name, records=records, request_id=f"items-{run}-{start}"
                    ),
                    metadata=self.admin,
                    timeout=120,
                ),
                what="CreateTextItems",
                counter=self._retries,
            )
        schema = tasks_pb2.LabelSchema(
            classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
            classes=[tasks_pb2.ClassLabel(name=c) for c in CLASSES],
        )
        project = call_with_retries(
            lambda: (
                self.tasks.CreateProject(
                    tasks_pb2.CreateProjectRequest(
                        project=tasks_pb2.Project(
                            display_name=f"chaos {name}", redundancy=1, datasets=[dataset.name]
                        ),
                        schema=schema,
                        request_id=f"project-{run}",
                    ),
                    metadata=self.admin,
                    timeout=60,
                ).project
            ),
            what="CreateProject",
            counter=self._retries,
        )
        deadline = time.monotonic() + timeout
        while self.queued(project.name) < items:
            if time.monotonic() > deadline:
                raise WorkloadError(
                    f"only {self.queued(project.name)} of {items} tasks were created in {timeout}s"
                )
            time.sleep(0.2)
        return WorkloadResult(project=project.name, dataset=dataset.name, items=items)

    def queued(self, project: str) -> int:
        response = call_with_retries(
            lambda: self.tasks.GetProject(
                tasks_pb2.GetProjectRequest(name=project), metadata=self.admin, timeout=10
            ),
            what="GetProject",
            counter=self._retries,
        )
        return int(response.project.task_counts.queued)

    def run(
        self, result: WorkloadResult, *, on_progress: Callable[[int], None] | None = None
    ) -> WorkloadResult:
        """Leases and submits until no task is left; returns with ``result.acknowledged`` filled."""
        result.started = time.monotonic()
        threads = [
            threading.Thread(target=self._worker, args=(result, md, on_progress), name=f"chaos-worker-{i}")
            for i, md in enumerate(self.annotators)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.finished = time.monotonic()
        result.retries = self._retries[0]
        if result.errors:
            raise WorkloadError("; ".join(result.errors[:5]))
        return result

    def _worker(
        self, result: WorkloadResult, metadata: Any, on_progress: Callable[[int], None] | None
    ) -> None:
        try:
            while True:
                try:
                    task = call_with_retries(
                        lambda: (
                            self.tasks.LeaseNextTask(
                                tasks_pb2.LeaseNextTaskRequest(parent=result.project),
                                metadata=metadata,
                                timeout=15,
                            ).task
                        ),
                        what="LeaseNextTask",
                        counter=self._retries,
                    )
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:  # NO_TASK_AVAILABLE: the queue is empty
                        return
                    raise
                labels = annotations_pb2.Labels(classes=[CLASSES[hash(task.name) % len(CLASSES)]])
                request = annotations_pb2.SubmitAnnotationRequest(
                    task=task.name,
                    lease_id=task.lease.lease_id,
                    labels=labels,
                    request_id=f"submit-{task.name.rsplit('/', 1)[-1]}-{task.lease.lease_id}",
                )
                try:
                    annotation = call_with_retries(
                        lambda request=request: (
                            self.annotations.SubmitAnnotation(
                                request, metadata=metadata, timeout=15
                            ).annotation
                        ),
                        what="SubmitAnnotation",
                        counter=self._retries,
                    )
                except grpc.RpcError as exc:
                    # The lease lapsed during an outage: the task went back to the queue and is
                    # leased again (by anyone); nothing was acknowledged for this attempt.
                    if exc.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION):
                        continue
                    raise
                with self._lock:
                    result.acknowledged[annotation.name] = Acknowledged(
                        annotation=annotation.name, task=task.name, ack_time=datetime.now(UTC)
                    )
                    done = len(result.acknowledged)
                if on_progress is not None:
                    on_progress(done)
        except Exception as exc:  # surfaced by run()
            with self._lock:
                result.errors.append(f"{type(exc).__name__}: {exc}")
