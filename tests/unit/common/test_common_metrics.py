"""Prometheus metrics (per-runtime registries, the gRPC interceptor, event gauges, the HTTP middleware)
and the gRPC client channel config that every client uses (deadlines, read retries, keepalive)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from annocloud_server.common.auth import Authenticator
from annocloud_server.common.errors import NotFound
from annocloud_server.common.metrics import (
    EventMetrics,
    GrpcMetrics,
    new_registry,
    parse_address,
)
from annocloud_server.common.server import (
    SERVICES,
    ErrorInterceptor,
    MetricsInterceptor,
    channel_options,
    service_config,
)
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.app import create_app
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.process import ProcessSettings
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- gRPC server interceptor ----------------------------------------------------------------------


class FakeContext:
    """The parts of grpc.ServicerContext the interceptors use."""

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None

    def abort_with_status(self, status: grpc.Status) -> None:
        self._code = status.code
        raise Exception("aborted")  # what grpc does

    def code(self) -> grpc.StatusCode | None:
        return self._code


def serve_once(interceptors: list[Any], behavior: Any, method: str, *, stream: bool = False) -> Any:
    """Runs one call of ``behavior`` through ``interceptors`` (outermost first), like grpc would."""

    def innermost(_details: Any) -> Any:
        if stream:
            return grpc.unary_stream_rpc_method_handler(behavior)
        return grpc.unary_unary_rpc_method_handler(behavior)

    continuation = innermost
    for interceptor in reversed(interceptors):
        continuation = (lambda i, c: lambda d: i.intercept_service(c, d))(interceptor, continuation)

    class Details(grpc.HandlerCallDetails):
        pass

    details = Details()
    details.method = method  # type: ignore[misc]
    details.invocation_metadata = ()  # type: ignore[misc]
    handler = continuation(details)
    context = FakeContext()
    if stream:
        return list(handler.unary_stream("request", context))
    return handler.unary_unary("request", context)


def test_grpc_calls_are_counted_by_final_code_and_timed() -> None:
    """OK and a mapped domain error (NOT_FOUND, raised as an exception) land in the counter and histogram."""
    registry = new_registry()
    interceptors = [MetricsInterceptor(GrpcMetrics(registry)), ErrorInterceptor()]
    method = "/annocloud.tasks.v1.TaskService/GetTask"

    assert serve_once(interceptors, lambda request, context: "response", method) == "response"

    def missing(request: Any, context: Any) -> Any:
        raise NotFound("no task", reason="TASK_NOT_FOUND")

    with pytest.raises(Exception, match="aborted"):
        serve_once(interceptors, missing, method)
    labels = {"service": "annocloud.tasks.v1.TaskService", "method": "GetTask"}
    assert value(registry, "annocloud_grpc_server_requests_total", **labels, code="OK") == 1
    assert value(registry, "annocloud_grpc_server_requests_total", **labels, code="NOT_FOUND") == 1
    assert value(registry, "annocloud_grpc_server_request_seconds_count", **labels) == 2


def test_a_server_stream_is_timed_until_its_last_message() -> None:
    """A streaming call is recorded once, after the stream ends, with its final code."""
    registry = new_registry()
    interceptors = [MetricsInterceptor(GrpcMetrics(registry)), ErrorInterceptor()]
    method = "/annocloud.ingestion.v1.IngestionService/ReadItemContent"

    def chunks(request: Any, context: Any) -> Any:
        assert value(registry, "annocloud_grpc_server_requests_total", **labels, code="OK") is None
        yield b"a"
        time.sleep(0.02)
        yield b"b"

    labels = {"service": "annocloud.ingestion.v1.IngestionService", "method": "ReadItemContent"}
    assert serve_once(interceptors, chunks, method, stream=True) == [b"a", b"b"]
    assert value(registry, "annocloud_grpc_server_requests_total", **labels, code="OK") == 1
    assert (value(registry, "annocloud_grpc_server_request_seconds_sum", **labels) or 0) >= 0.02


# --- consumers, outbox, dead letters --------------------------------------------------------------


class FakeConsumer:
    def __init__(self, group: str, lag: int = 0, fail: bool = False):
        self.group = group
        self.applied = 7
        self.duplicates_skipped = 2
        self.dead_lettered = 1
        self._lag = lag
        self._fail = fail
        self.lag_reads = 0

    def lag(self) -> int:
        self.lag_reads += 1
        if self._fail:
            raise ConnectionError("broker unreachable")
        return self._lag


class FakeRelay:
    def __init__(self, name: str, backlog: int):
        self.name = name
        self.published = 40
        self._backlog = backlog
        self.release = threading.Event()
        self.release.set()

    def backlog(self) -> int:
        self.release.wait(10)
        return self._backlog


def test_event_metrics_report_counters_gauges_and_dead_letters() -> None:
    """Applied/duplicates/dead-lettered/published counters, lag and backlog gauges, dead letters per group."""
    registry = new_registry()
    registry.register(
        EventMetrics(
            consumers=[FakeConsumer("tasks", lag=3), FakeConsumer("qa")],
            relays=[FakeRelay("tasks", backlog=5)],
            dead_letter_counts=lambda: {"tasks": 4, "other-service": 9},
        )
    )
    assert value(registry, "annocloud_consumer_events_applied_total", group="tasks") == 7
    assert value(registry, "annocloud_consumer_duplicates_skipped_total", group="tasks") == 2
    assert value(registry, "annocloud_consumer_dead_lettered_total", group="qa") == 1
    assert value(registry, "annocloud_consumer_lag", group="tasks") == 3
    assert value(registry, "annocloud_consumer_lag", group="qa") == 0
    assert value(registry, "annocloud_outbox_published_total", service="tasks") == 40
    assert value(registry, "annocloud_outbox_backlog", service="tasks") == 5
    assert value(registry, "annocloud_dead_letters", group="tasks") == 4
    assert value(registry, "annocloud_dead_letters", group="qa") == 0
    assert value(registry, "annocloud_dead_letters", group="other-service") is None  # not this runtime's


def test_a_failing_backend_reports_minus_one_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A lag read that raises gives -1 (and a warning); the scrape itself succeeds."""
    registry = new_registry()
    registry.register(EventMetrics(consumers=[FakeConsumer("tasks", fail=True)], relays=[]))
    with caplog.at_level(logging.WARNING, logger="annocloud_server.common.metrics"):
        assert value(registry, "annocloud_consumer_lag", group="tasks") == -1
        assert value(registry, "annocloud_consumer_events_applied_total", group="tasks") == 7
    assert any("lag-tasks" in record.getMessage() for record in caplog.records)


def test_a_slow_backend_never_stalls_a_scrape() -> None:
    """A backlog read that hangs: the scrape returns within its budget without the series, later with it."""
    relay = FakeRelay("ingestion", backlog=12)
    relay.release.clear()
    registry = new_registry()
    registry.register(EventMetrics(consumers=[], relays=[relay], budget=0.1))
    began = time.monotonic()
    assert value(registry, "annocloud_outbox_backlog", service="ingestion") is None
    assert value(registry, "annocloud_outbox_published_total", service="ingestion") == 40
    assert time.monotonic() - began < 2.0
    relay.release.set()
    deadline = time.monotonic() + 5
    while value(registry, "annocloud_outbox_backlog", service="ingestion") is None:
        assert time.monotonic() < deadline, "the sampled backlog never arrived"
        time.sleep(0.02)
    assert value(registry, "annocloud_outbox_backlog", service="ingestion") == 12


def test_sampled_gauges_are_read_at_most_once_per_max_age() -> None:
    """Scrapes in quick succession reuse the last sample instead of querying the bus each time."""
    consumer = FakeConsumer("tasks", lag=1)
    registry = new_registry()
    registry.register(EventMetrics(consumers=[consumer], relays=[], max_age=60))
    for _ in range(5):
        assert value(registry, "annocloud_consumer_lag", group="tasks") == 1
    assert consumer.lag_reads == 1


def test_runtime_registries_stay_out_of_the_global_default_registry() -> None:
    """Two registries with the same families coexist, and the process-global registry has none of them."""
    first, second = new_registry(), new_registry()
    GrpcMetrics(first)
    GrpcMetrics(second)
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("annocloud_")]


def test_metrics_addresses_are_host_and_port() -> None:
    """host:port and [v6]:port parse; a missing host, port or a bad port are refused."""
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("9464", ":9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="host:port"):
            parse_address(bad)


def test_the_process_setting_refuses_a_metrics_address_without_a_port() -> None:
    """ANNOCLOUD_METRICS_ADDRESS is empty (off) or host:port; anything else fails the settings."""
    secret = "s" * 40
    assert ProcessSettings(principal_secret=secret).metrics_address == ""  # type: ignore[arg-type]
    on = ProcessSettings(principal_secret=secret, metrics_address=" 127.0.0.1:9464 ")  # type: ignore[arg-type]
    assert on.metrics_address == "127.0.0.1:9464"
    with pytest.raises(ValidationError, match="host:port"):
        ProcessSettings(principal_secret=secret, metrics_address="0.0.0.0")  # type: ignore[arg-type]


# --- the gateway's HTTP metrics -------------------------------------------------------------------


def test_http_metrics_label_route_templates_not_raw_paths(tmp_path: Path) -> None:
    """Requests are counted by method, route template and status (404s and 413s too); /metrics serves them."""
    channel = grpc.insecure_channel("127.0.0.1:1")  # never called: every request below ends at the gateway
    settings = GatewaySettings(max_json_bytes=100)
    app = create_app(
        settings, channel=channel, authenticator=Authenticator(b"s" * 16), api_keys=ApiKeyStore(tmp_path)
    )
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        for project in ("p1", "p2", "p3"):
            assert client.get(f"/v1/projects/{project}").status_code == 401
        assert client.get("/v1/no/such/route").status_code == 404
        assert client.post("/v1/projects", content=b"x" * 500).status_code == 413
        page = client.get("/metrics")
    channel.close()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    samples = {
        (s.labels.get("method"), s.labels.get("route"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(page.text)
        if family.name == "annocloud_http_requests"
        for s in family.samples
        if s.name == "annocloud_http_requests_total"
    }
    assert samples[("GET", "/v1/projects/{project}", "401")] == 3
    assert samples[("GET", "/healthz", "200")] == 1
    assert samples[("GET", "<unmatched>", "404")] == 1
    assert samples[("POST", "/v1/projects", "413")] == 1
    assert not [key for key in samples if key[1] and "p1" in key[1]]
    registry = app.state.metrics_registry
    assert value(registry, "annocloud_http_request_seconds_count", method="GET", route="/healthz") == 1


# --- gRPC client channels: deadlines and retries ---------------------------------------------------


def method_configs(config: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(service, method) → its methodConfig ("" method: the service's default; ("", ""): global)."""
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in config["methodConfig"]:
        for name in entry["name"]:
            key = (name.get("service", ""), name.get("method", ""))
            assert key not in by_name, f"{key} configured twice"
            by_name[key] = entry
    return by_name


def test_the_service_config_retries_reads_only_and_gives_every_method_a_deadline() -> None:
    """Valid JSON: Get/List/Read and health checks retry on UNAVAILABLE; writes never; all have a timeout."""
    config = json.loads(service_config(unary_timeout=7, stream_timeout=90, read_attempts=3))
    by_name = method_configs(config)
    get_task = by_name[("annocloud.tasks.v1.TaskService", "GetTask")]
    assert get_task["timeout"] == "7s"
    assert get_task["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert "retryPolicy" in by_name[("grpc.health.v1.Health", "Check")]
    read_content = by_name[("annocloud.ingestion.v1.IngestionService", "ReadItemContent")]
    assert (read_content["timeout"], "retryPolicy" in read_content) == ("90s", True)
    upload = by_name[("annocloud.ingestion.v1.IngestionService", "UploadItem")]
    assert (upload["timeout"], "retryPolicy" in upload) == ("90s", False)
    for write in ("SubmitAnnotation", "CreatePrediction"):
        assert ("annocloud.annotations.v1.AnnotationService", write) not in by_name
    for service in SERVICES:  # writes fall back to their service's entry: a deadline, no retry
        default = by_name[(service.full_name, "")]
        assert (default["timeout"], "retryPolicy" in default) == ("7s", False)
        for method in service.methods:
            explicit = by_name.get((service.full_name, method.name))
            is_read = method.name.startswith(("Get", "List", "Read"))
            assert (explicit is not None and "retryPolicy" in explicit) == is_read, method.full_name
    assert by_name[("", "")]["timeout"] == "7s"
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_retry_attempts_are_capped_at_grpcs_maximum() -> None:
    """gRPC caps maxAttempts at 5; the config never asks for more, nor for fewer than one."""
    for asked, expected in ((10, 5), (0, 1)):
        by_name = method_configs(json.loads(service_config(read_attempts=asked)))
        assert by_name[("annocloud.qa.v1.QaService", "GetReview")]["retryPolicy"]["maxAttempts"] == expected


def test_channels_carry_the_service_config_keepalive_and_message_sizes() -> None:
    """channel_options() holds the service config, retries on, keepalive and 64 MiB messages."""
    options = dict(channel_options(unary_timeout=3))
    assert json.loads(options["grpc.service_config"]) == json.loads(service_config(unary_timeout=3))
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert options["grpc.max_send_message_length"] == 64 * 1024 * 1024
