"""Stubs of every service and per-request clients that sign the principal into each call.

Every call carries a deadline. Idempotent reads (Get/List/Read) are retried on UNAVAILABLE by the
channel itself (``common.server.make_channel``: gRPC service config with a retryPolicy, inside the
call's deadline); writes are never retried here (creates are idempotent on request_id, so the
client may retry them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc
from annocloud.annotations.v1 import annotations_pb2_grpc
from annocloud.common.v1 import common_pb2
from annocloud.export.v1 import export_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2_grpc
from annocloud.modelassist.v1 import modelassist_pb2_grpc
from annocloud.qa.v1 import qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2_grpc, workforce_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from annocloud_server.common.auth import Authenticator

Req = TypeVar("Req")
Resp = TypeVar("Resp")

SERVICE_NAMES: dict[str, str] = {
    "ingestion": "annocloud.ingestion.v1.IngestionService",
    "tasks": "annocloud.tasks.v1.TaskService",
    "annotations": "annocloud.annotations.v1.AnnotationService",
    "qa": "annocloud.qa.v1.QaService",
    "export": "annocloud.export.v1.ExportService",
    "modelassist": "annocloud.modelassist.v1.ModelAssistService",
}
"""Short name → full gRPC service name (the health-check name)."""
OPTIONAL_SERVICES = frozenset({"modelassist"})
"""Labeling goes on without them: not serving makes the gateway degraded, not unready."""


class ServiceStubs:
    """One stub per service, over one shared channel or one channel per service."""

    def __init__(self, channel: grpc.Channel | Mapping[str, grpc.Channel]):
        if isinstance(channel, Mapping):
            missing = sorted(set(SERVICE_NAMES) - set(channel))
            if missing:
                raise ValueError(f"no channel for service(s): {', '.join(missing)}")
            self.channels: dict[str, grpc.Channel] = {name: channel[name] for name in SERVICE_NAMES}
        else:
            self.channels = dict.fromkeys(SERVICE_NAMES, channel)
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self.channels["ingestion"])
        self.tasks = tasks_pb2_grpc.TaskServiceStub(self.channels["tasks"])
        self.workforce = workforce_pb2_grpc.WorkforceServiceStub(self.channels["tasks"])
        self.annotations = annotations_pb2_grpc.AnnotationServiceStub(self.channels["annotations"])
        self.qa = qa_pb2_grpc.QaServiceStub(self.channels["qa"])
        self.export = export_pb2_grpc.ExportServiceStub(self.channels["export"])
        self.modelassist = modelassist_pb2_grpc.ModelAssistServiceStub(self.channels["modelassist"])

    def health(self, timeout: float = 2.0) -> dict[str, str]:
        """Serving status of every service by full name ("SERVING", "NOT_SERVING", "UNAVAILABLE"...)."""
        result: dict[str, str] = {}
        for short, full in SERVICE_NAMES.items():
            stub = health_pb2_grpc.HealthStub(self.channels[short])
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=full), timeout=timeout)
                result[full] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                result[full] = code.name
        return result


@dataclass
class Clients:
    """The stubs bound to one caller: every call is signed and has a deadline."""

    stubs: ServiceStubs
    metadata: tuple[tuple[str, str | bytes], ...]
    deadline: float
    stream_deadline: float

    @property
    def ingestion(self) -> ingestion_pb2_grpc.IngestionServiceStub:
        return self.stubs.ingestion

    @property
    def tasks(self) -> tasks_pb2_grpc.TaskServiceStub:
        return self.stubs.tasks

    @property
    def workforce(self) -> workforce_pb2_grpc.WorkforceServiceStub:
        return self.stubs.workforce

    @property
    def annotations(self) -> annotations_pb2_grpc.AnnotationServiceStub:
        return self.stubs.annotations

    @property
    def qa(self) -> qa_pb2_grpc.QaServiceStub:
        return self.stubs.qa

    @property
    def modelassist(self) -> modelassist_pb2_grpc.ModelAssistServiceStub:
        return self.stubs.modelassist

    @property
    def export(self) -> export_pb2_grpc.ExportServiceStub:
        return self.stubs.export

    def call(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        """A write: one attempt."""
        return method(request, timeout=self.deadline, metadata=self.metadata)

    def read(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        """An idempotent read; the channel's retry policy retries it on UNAVAILABLE within the deadline."""
        return method(request, timeout=self.deadline, metadata=self.metadata)

    def upload(self, method: grpc.StreamUnaryMultiCallable[Req, Resp], requests: Iterator[Req]) -> Resp:
        """A client-streaming write (uploads), with the streaming deadline."""
        return method(requests, timeout=self.stream_deadline, metadata=self.metadata)

    def stream(
        self, method: grpc.UnaryStreamMultiCallable[Req, Resp], request: Req
    ) -> grpc.CallIterator[Resp]:
        """A server-streaming read (downloads), with the streaming deadline."""
        return method(request, timeout=self.stream_deadline, metadata=self.metadata)


def bind(
    stubs: ServiceStubs,
    authenticator: Authenticator,
    principal: common_pb2.Principal,
    *,
    deadline: float,
    stream_deadline: float,
) -> Clients:
    """Clients of ``principal``; read retries are the channel's (``make_channel(..., read_attempts=...)``)."""
    return Clients(stubs, authenticator.metadata_for(principal), deadline, stream_deadline)
