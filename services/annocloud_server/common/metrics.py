"""Prometheus metrics in one place: the families, the event-machinery collector, the HTTP middleware.

Every process (or runtime) has its own :class:`~prometheus_client.CollectorRegistry`; nothing
registers in prometheus_client's global default registry, so runtimes side by side (tests, the
embedded default) never clash. Counters are updated inline; the gauges that cost a query (consumer
lag, outbox backlog, dead letters) are sampled off the scrape thread, at most every few seconds,
and a scrape waits for a sample only a fraction of a second: a slow or failing backend never
breaks or stalls a scrape (it reports the last value, or -1 after a failed read, and logs).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.routing import compile_path

log = logging.getLogger(__name__)

T = TypeVar("T")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FAILED = -1.0
"""The value of a sampled gauge whose last read failed."""


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


class GrpcMetrics:
    """``annocloud_grpc_server_requests_total`` and ``annocloud_grpc_server_request_seconds``."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "annocloud_grpc_server_requests",
            "gRPC requests handled, by service, method and final status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "annocloud_grpc_server_request_seconds",
            "Time to handle a gRPC request (streams: until the last message).",
            ["service", "method"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def observe(self, full_method: str, code: str, seconds: float) -> None:
        """Records one finished call of ``/package.Service/Method``."""
        service, _, method = full_method.lstrip("/").rpartition("/")
        self.requests.labels(service, method, code).inc()
        self.seconds.labels(service, method).observe(seconds)


class ConsumerStats(Protocol):
    """What a consumer (``events.ConsumerRunner``) exposes."""

    @property
    def group(self) -> str: ...
    @property
    def applied(self) -> int: ...
    @property
    def duplicates_skipped(self) -> int: ...
    @property
    def dead_lettered(self) -> int: ...
    def lag(self) -> int: ...


class RelayStats(Protocol):
    """What an outbox relay (``events.OutboxRelay``) exposes."""

    @property
    def name(self) -> str: ...
    @property
    def published(self) -> int: ...
    def backlog(self) -> int: ...


class Sampled(Generic[T]):
    """A value that costs a query, read in a background thread at most every ``max_age`` seconds."""

    def __init__(self, what: str, read: Callable[[], T], max_age: float):
        self.what = what
        self._read = read
        self._max_age = max_age
        self._lock = threading.Lock()
        self._read_time = float("-inf")
        self._thread: threading.Thread | None = None
        self.value: T | None = None
        self.failed = False

    def refresh_if_stale(self) -> threading.Thread | None:
        """Starts a read when the value is older than ``max_age``; the read in flight, if any."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self._thread
            if time.monotonic() - self._read_time < self._max_age:
                return None
            self._thread = threading.Thread(target=self._run, name=f"metrics-{self.what}", daemon=True)
            self._thread.start()
            return self._thread

    def _run(self) -> None:
        try:
            value, failed = self._read(), False
        except Exception:
            log.warning("metrics: reading %s failed; reporting %s", self.what, FAILED, exc_info=True)
            value, failed = None, True
        with self._lock:
            if not failed:
                self.value = value
            self.failed = failed
            self._read_time = time.monotonic()


class EventMetrics:
    """Collector of a runtime's consumers, relays and dead letters (register it in the registry)."""

    def __init__(
        self,
        *,
        consumers: Sequence[ConsumerStats],
        relays: Sequence[RelayStats],
        dead_letter_counts: Callable[[], Mapping[str, int]] | None = None,
        max_age: float = 5.0,
        dead_letter_max_age: float = 30.0,
        budget: float = 0.5,
    ):
        self._consumers = list(consumers)
        self._relays = list(relays)
        self._budget = budget
        self._lags = [Sampled(f"lag-{c.group}", c.lag, max_age) for c in self._consumers]
        self._backlogs = [Sampled(f"backlog-{r.name}", r.backlog, max_age) for r in self._relays]
        self._dead: Sampled[Mapping[str, int]] | None = None
        if dead_letter_counts is not None and self._consumers:
            self._dead = Sampled("dead-letters", dead_letter_counts, dead_letter_max_age)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "annocloud_consumer_events_applied", "Events applied (new inbox rows).", labels=["group"]
            ),
            CounterMetricFamily(
                "annocloud_consumer_duplicates_skipped",
                "Duplicate deliveries skipped because the inbox had the event.",
                labels=["group"],
            ),
            CounterMetricFamily(
                "annocloud_consumer_dead_lettered", "Events sent to the dead-letter store.", labels=["group"]
            ),
            GaugeMetricFamily(
                "annocloud_consumer_lag",
                "Records not yet committed by the group (-1: unknown).",
                labels=["group"],
            ),
            CounterMetricFamily(
                "annocloud_outbox_published", "Outbox rows published and marked.", labels=["service"]
            ),
            GaugeMetricFamily(
                "annocloud_outbox_backlog", "Outbox rows not yet published (-1: unknown).", labels=["service"]
            ),
            GaugeMetricFamily(
                "annocloud_dead_letters", "Dead letters not yet redriven (-1: unknown).", labels=["group"]
            ),
        )

    def collect(self) -> Iterable[Metric]:
        samples: list[Sampled[Any]] = [*self._lags, *self._backlogs, *([self._dead] if self._dead else [])]
        in_flight = [t for t in (s.refresh_if_stale() for s in samples) if t is not None]
        deadline = time.monotonic() + self._budget
        for thread in in_flight:
            thread.join(max(0.0, deadline - time.monotonic()))
        applied, duplicates, dead, lag, published, backlog, letters = self._families()
        for consumer, sampled in zip(self._consumers, self._lags, strict=True):
            applied.add_metric([consumer.group], consumer.applied)
            duplicates.add_metric([consumer.group], consumer.duplicates_skipped)
            dead.add_metric([consumer.group], consumer.dead_lettered)
            _add_sampled(lag, consumer.group, sampled, float(sampled.value or 0))
        for relay, sampled in zip(self._relays, self._backlogs, strict=True):
            published.add_metric([relay.name], relay.published)
            _add_sampled(backlog, relay.name, sampled, float(sampled.value or 0))
        if self._dead is not None:
            counts = self._dead.value or {}
            for consumer in self._consumers:
                _add_sampled(letters, consumer.group, self._dead, float(counts.get(consumer.group, 0)))
        return [applied, duplicates, dead, lag, published, backlog, letters]


def _add_sampled(family: GaugeMetricFamily, label: str, sampled: Sampled[Any], value: float) -> None:
    """Adds ``value`` of ``sampled``; -1 after a failed read; nothing before the first read finished."""
    if sampled.failed:
        family.add_metric([label], FAILED)
    elif sampled.value is not None:
        family.add_metric([label], value)


# --- HTTP (the gateway) ---------------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpMetrics:
    """``annocloud_http_requests_total`` and ``annocloud_http_request_seconds`` by route template."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "annocloud_http_requests",
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "annocloud_http_request_seconds",
            "Time to answer an HTTP request (until the last body byte).",
            ["method", "route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )


class RouteTable:
    """Maps a request path to its route template (``/v1/projects/{project}``), first match wins.

    ``templates`` is read on first use, when every route is registered. Matching the path here,
    rather than reading what the router chose, also labels requests rejected before routing (413).
    """

    def __init__(self, templates: Callable[[], Sequence[str]]):
        self._templates = templates
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def template_for(self, path: str) -> str:
        if self._compiled is None:
            unique = dict.fromkeys(self._templates())
            self._compiled = [(compile_path(template)[0], template) for template in unique]
        for pattern, template in self._compiled:
            if pattern.match(path):
                return template
        return UNMATCHED_ROUTE


class HttpMetricsMiddleware:
    """ASGI middleware recording every HTTP request in :class:`HttpMetrics` (add it outermost)."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, templates: Callable[[], Sequence[str]]):
        self.app = app
        self.metrics = metrics
        self.routes = RouteTable(templates)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            method = str(scope.get("method", "")).upper()
            method = method if method in _METHODS else "OTHER"
            route = self.routes.template_for(str(scope.get("path", "")))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.seconds.labels(method, route).observe(time.perf_counter() - began)


# --- serving /metrics from a service process ------------------------------------------------------


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6) → (host, port); ValueError when malformed."""
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class MetricsServer:
    """prometheus_client's HTTP server for one registry, bound to one host only."""

    def __init__(self, address: str, registry: CollectorRegistry):
        host, port = parse_address(address)
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
