"""One trace across Kafka, and the runtime's metrics, with real services on a REAL broker.

ingestion + tasks run in-process (``start_runtime``) on a ``KafkaEventBus`` with a namespace of
their own. A traced CreateTextItems call gives: the test's span → the gRPC server span → the outbox
row (its envelope carries the server span's context) → the relay's PRODUCER span (linked to it) →
Kafka (``traceparent`` header) → the tasks consumer's CONSUMER span (child of the server span) →
TaskCreated, emitted inside that span (its envelope carries the consumer span's context).
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common.auth import ADMIN, Authenticator, make_principal
from annocloud_server.common.events import TOPIC_INGESTION, TOPIC_TASKS
from annocloud_server.common.kafka_bus import KafkaEventBus
from annocloud_server.common.metrics import MetricsServer
from annocloud_server.common.server import make_channel
from annocloud_server.common.telemetry import setup_tracing
from annocloud_server.ingestion.component import create_component as create_ingestion
from annocloud_server.runtime import Runtime, start_runtime
from annocloud_server.tasks.component import create_component as create_tasks
from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

SECRET = b"cluster-tracing-secret-0123456789abcdef"
SCHEMA = tasks_pb2.LabelSchema(
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="positive"), tasks_pb2.ClassLabel(name="negative")],
)
CONSUME_INGESTED = "consume annocloud.events.v1.ItemIngested"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes, from the tracer provider the services use."""
    setup_tracing("annocloud-cluster-tests")  # the SDK provider + gRPC instrumentation, as a service has
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), type(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@dataclass
class Stack:
    runtime: Runtime
    bus: KafkaEventBus
    channel: grpc.Channel
    metadata: tuple[tuple[str, str | bytes], ...]

    @property
    def ingestion(self) -> ingestion_pb2_grpc.IngestionServiceStub:
        return ingestion_pb2_grpc.IngestionServiceStub(self.channel)

    @property
    def tasks(self) -> tasks_pb2_grpc.TaskServiceStub:
        return tasks_pb2_grpc.TaskServiceStub(self.channel)

    def dataset_in_project(self) -> str:
        """A text dataset added to a project, so that each ingested item becomes a task."""
        dataset = self.ingestion.CreateDataset(
            ingestion_pb2.CreateDatasetRequest(dataset=ingestion_pb2.Dataset(display_name="Reviews")),
            metadata=self.metadata,
            timeout=10,
        ).dataset.name
        self.tasks.CreateProject(
            tasks_pb2.CreateProjectRequest(
                project=tasks_pb2.Project(display_name="Sentiment", datasets=[dataset]), schema=SCHEMA
            ),
            metadata=self.metadata,
            timeout=10,
        )
        return str(dataset)

    def ingest_text(self, dataset: str, text: str) -> str:
        response = self.ingestion.CreateTextItems(
            ingestion_pb2.CreateTextItemsRequest(
                parent=dataset, records=[ingestion_pb2.TextRecord(text=text)]
            ),
            metadata=self.metadata,
            timeout=10,
        )
        return str(response.items[0].name)


@pytest.fixture
def stack(kafka_broker: Any, tmp_path: Path, spans: InMemorySpanExporter) -> Iterator[Stack]:
    """ingestion + tasks on Kafka, in a namespace of this test's own; the client channel is make_channel's."""
    bus = KafkaEventBus(
        kafka_broker.bootstrap, client_id="annocloud-tracing", namespace=f"trace-{uuid.uuid4().hex[:10]}"
    )
    bus.ensure_topics()
    runtime = start_runtime(
        [create_ingestion, create_tasks], data_dir=tmp_path, bus=bus, authenticator=Authenticator(SECRET)
    )
    channel = make_channel(runtime.address)  # its service config must be one gRPC accepts
    metadata = Authenticator(SECRET).metadata_for(make_principal("acme", "user:admin", [ADMIN]))
    yield Stack(runtime, bus, channel, metadata)
    channel.close()
    runtime.stop()  # closes the bus too


def wait_for(what: str, found: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s"
        time.sleep(0.1)


def read_topic(bus: KafkaEventBus, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of ``topic`` (in the bus's namespace), with headers, read by a group-less consumer."""
    physical = bus.physical(topic)
    consumer = KafkaConsumer(bootstrap_servers=bus.bootstrap, group_id=None, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(physical, p) for p in sorted(consumer.partitions_for_topic(physical))]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {physical} to its end"
            for batch in consumer.poll(timeout_ms=300).values():
                messages.extend(batch)
        return messages
    finally:
        consumer.close()


def span_id_in(traceparent: str) -> tuple[int, int]:
    """(trace_id, parent span id) of a W3C traceparent."""
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def only(found: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(found) == 1, f"expected one {what}, got {[s.name for s in found]}"
    return found[0]


def test_a_request_and_the_consumer_it_causes_share_one_trace(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """The consumer span of ItemIngested is a child of the producing server span, in the request's trace,
    the Kafka record carries that traceparent, and TaskCreated (emitted by the consumer) continues it."""
    dataset = stack.dataset_in_project()
    with trace.get_tracer("tests").start_as_current_span("client request") as root:
        item = stack.ingest_text(dataset, "a lovely product")
    trace_id = root.get_span_context().trace_id

    def consume_span() -> ReadableSpan | None:
        for span in spans.get_finished_spans():
            if span.name == CONSUME_INGESTED and span.context.trace_id == trace_id:
                return span
        return None

    consumed = wait_for("tasks consuming the traced ItemIngested", consume_span)
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    server = only(
        [
            s
            for s in in_trace
            if s.kind == SpanKind.SERVER and s.name.endswith("IngestionService/CreateTextItems")
        ],
        "server span",
    )
    client = only([s for s in in_trace if s.kind == SpanKind.CLIENT and s.name == server.name], "client span")
    assert client.parent is not None
    assert client.parent.span_id == root.get_span_context().span_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id

    assert consumed.kind == SpanKind.CONSUMER
    assert consumed.parent is not None
    assert (consumed.parent.trace_id, consumed.parent.span_id) == (trace_id, server.context.span_id)
    attributes = dict(consumed.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == TOPIC_INGESTION
    assert attributes["messaging.consumer.group.name"] == "tasks"

    ingested = [
        (message, events_pb2.EventEnvelope.FromString(message.value))
        for message in read_topic(stack.bus, TOPIC_INGESTION)
    ]
    message, envelope = only(
        [(m, e) for m, e in ingested if e.item_ingested.item.name == item],  # type: ignore[misc]
        "ItemIngested record",
    )
    assert attributes["messaging.message.id"] == envelope.event_id
    headers = dict(message.headers)
    assert headers["traceparent"].decode() == envelope.trace_context["traceparent"]
    assert span_id_in(headers["traceparent"].decode()) == (trace_id, server.context.span_id)

    publish = only(
        [
            s
            for s in spans.get_finished_spans()
            if s.kind == SpanKind.PRODUCER
            and any(link.context.span_id == server.context.span_id for link in s.links)
        ],
        "relay publish span linked to the server span",
    )
    assert dict(publish.attributes or {})["annocloud.relay"] == "ingestion"

    def task_created() -> list[events_pb2.EventEnvelope]:
        envelopes = [events_pb2.EventEnvelope.FromString(m.value) for m in read_topic(stack.bus, TOPIC_TASKS)]
        return [e for e in envelopes if e.HasField("task_created") and e.task_created.task.item == item]

    (created,) = wait_for("TaskCreated for the item", task_created)
    assert span_id_in(created.trace_context["traceparent"]) == (trace_id, consumed.context.span_id)


def value(stack: Stack, name: str, **labels: str) -> float | None:
    return stack.runtime.metrics_registry.get_sample_value(name, labels)


def test_runtime_metrics_count_the_flow_and_are_served_over_http(stack: Stack) -> None:
    """After one ingest on Kafka: gRPC, consumer, outbox and dead-letter series, on a /metrics server."""
    dataset = stack.dataset_in_project()
    stack.ingest_text(dataset, "metrics, please")
    stack.runtime.wait_idle(timeout=60)
    create = {"service": "annocloud.ingestion.v1.IngestionService", "method": "CreateTextItems"}
    assert value(stack, "annocloud_grpc_server_requests_total", **create, code="OK") == 1
    assert value(stack, "annocloud_grpc_server_request_seconds_count", **create) == 1
    assert wait_for(
        "tasks applying ItemIngested",
        lambda: value(stack, "annocloud_consumer_events_applied_total", group="tasks"),
    )
    assert value(stack, "annocloud_consumer_duplicates_skipped_total", group="tasks") == 0
    assert value(stack, "annocloud_consumer_dead_lettered_total", group="tasks") == 0
    assert (value(stack, "annocloud_outbox_published_total", service="ingestion") or 0) >= 1
    assert wait_for(
        "lag and backlog sampled", lambda: value(stack, "annocloud_consumer_lag", group="tasks") == 0
    )
    assert value(stack, "annocloud_outbox_backlog", service="ingestion") == 0
    assert wait_for(
        "dead letters sampled", lambda: value(stack, "annocloud_dead_letters", group="tasks") is not None
    )
    assert value(stack, "annocloud_dead_letters", group="tasks") == 0

    server = MetricsServer("127.0.0.1:0", stack.runtime.metrics_registry)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            page = response.read().decode()
    finally:
        server.stop()
    assert server.url.startswith("http://127.0.0.1:")
    assert 'annocloud_consumer_events_applied_total{group="tasks"}' in page
    assert 'annocloud_grpc_server_requests_total{code="OK",method="CreateTextItems"' in page
