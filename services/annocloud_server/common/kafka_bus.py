"""The cluster mode's event bus: Apache Kafka through kafka-python, with the semantics of the
in-process bus (``inprocess_bus.InProcessEventBus``).

- ``publish`` returns only after the broker acknowledged every record (idempotent producer,
  ``acks="all"``, ``enable_idempotence=True`` passed explicitly so no other setting can silently turn
  it off); it raises otherwise, so the outbox relay marks rows published only after the ack. The key
  is the aggregate's resource name: one aggregate maps to one partition and stays in order (the
  idempotent producer keeps order with up to 5 requests in flight, even across retries). After a
  fatal producer error the producer is dropped and a new one is created on the next call.
- ``subscribe`` gives a consumer-group subscription with auto-commit off, ``earliest`` and
  ``read_committed``; ``commit`` commits offset+1 of the highest processed record per partition, so
  a crash before the commit redelivers (the consumer's inbox skips what it had applied).
- ``dead_letter`` produces the failed record to ``annocloud.deadletter.v1`` (same key and value,
  the consumer group, origin and error in headers) and waits for the ack before the consumer
  commits past it. ``redrive`` republishes a group's dead letters to their original topics and then
  records how far it got in the compacted topic ``annocloud.deadletter.redrives.v1`` (one marker per
  group and dead-letter partition), so a second redrive does not repeat them.
- The envelope's W3C trace context (``traceparent``/``tracestate``) travels in Kafka headers.
- A ``namespace`` (``ANNOCLOUD_KAFKA_NAMESPACE``) prefixes every topic and consumer group on the
  broker (``<ns>.annocloud.tasks.v1``), so several stacks (test runs, staging) can share one broker
  without seeing each other's events; the rest of the code only ever sees the plain names.

Settings (``KafkaEventBus.from_env``): ``ANNOCLOUD_KAFKA_BOOTSTRAP`` (default ``127.0.0.1:19092``),
``ANNOCLOUD_KAFKA_CLIENT_ID``, ``ANNOCLOUD_KAFKA_PARTITIONS``, ``ANNOCLOUD_KAFKA_REPLICATION``,
``ANNOCLOUD_KAFKA_NAMESPACE``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]
from kafka.errors import (  # type: ignore[import-untyped]
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

from annocloud_server.common.events import (
    TOPIC_ANNOTATIONS,
    TOPIC_EXPORT,
    TOPIC_INGESTION,
    TOPIC_MODELASSIST,
    TOPIC_QA,
    TOPIC_TASKS,
    EventEnvelope,
    OutgoingRecord,
    Record,
)

log = logging.getLogger(__name__)

TOPIC_DEAD_LETTER = "annocloud.deadletter.v1"
TOPIC_REDRIVES = "annocloud.deadletter.redrives.v1"
EVENT_TOPICS = (TOPIC_INGESTION, TOPIC_TASKS, TOPIC_ANNOTATIONS, TOPIC_QA, TOPIC_EXPORT, TOPIC_MODELASSIST)
ALL_TOPICS = (*EVENT_TOPICS, TOPIC_DEAD_LETTER)

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"

# Headers of a dead letter (besides the trace context of the original event).
H_GROUP = "annocloud.dlq.group"
H_TOPIC = "annocloud.dlq.topic"
H_PARTITION = "annocloud.dlq.partition"
H_OFFSET = "annocloud.dlq.offset"
H_ERROR = "annocloud.dlq.error"
H_TIME = "annocloud.dlq.time"

Headers = list[tuple[str, bytes]]


class PublishError(RuntimeError):
    """The broker did not acknowledge every record of a publish; nothing may be marked published."""


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    key: str
    value: bytes
    headers: Headers


def trace_headers(value: bytes) -> Headers:
    """Kafka headers for an envelope: its trace context (``traceparent``…), event id and type."""
    try:
        envelope = EventEnvelope.FromString(value)
    except DecodeError:
        return []
    headers: Headers = [(name, carried.encode()) for name, carried in sorted(envelope.trace_context.items())]
    if envelope.event_id:
        headers.append(("annocloud.event_id", envelope.event_id.encode()))
    if envelope.event_type:
        headers.append(("annocloud.event_type", envelope.event_type.encode()))
    return headers


def _header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str:
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace") if value is not None else ""
    return ""


WEDGED_AFTER_FAILURES = 2
"""Consecutive failed sends after which the producer is replaced even for retriable errors."""


def _is_fatal(exc: BaseException) -> bool:
    """A producer error after which the producer must be replaced (not a passing broker hiccup)."""
    if isinstance(exc, IllegalStateError):  # e.g. a closed producer
        return True
    if isinstance(exc, KafkaError):
        return not bool(getattr(exc, "retriable", False))
    return True


class KafkaEventBus:
    """An :class:`~annocloud_server.common.events.EventBus` on Apache Kafka."""

    messaging_system = "kafka"

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "annocloud",
        partitions: int = 3,
        replication_factor: int = 1,
        send_timeout: float = 30.0,
        linger_ms: int = 2,
        join_timeout: float = 30.0,
        namespace: str = "",
    ):
        if namespace and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", namespace):
            raise ValueError(f"Kafka namespace {namespace!r} must be 1-64 of [A-Za-z0-9_-]")
        self.bootstrap = bootstrap
        self.namespace = namespace
        self._client_id = client_id
        self._partitions = partitions
        self._replication = replication_factor
        self._send_timeout = send_timeout
        self._linger_ms = linger_ms
        self._join_timeout = join_timeout
        self._producer: Any = None
        self._producer_lock = threading.Lock()
        self._admin: Any = None
        self._admin_lock = threading.Lock()
        self.producers_created = 0
        self._failed_sends = 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> KafkaEventBus:
        env = dict(os.environ) if environ is None else environ
        return cls(
            env.get("ANNOCLOUD_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
            client_id=env.get("ANNOCLOUD_KAFKA_CLIENT_ID", "annocloud"),
            partitions=int(env.get("ANNOCLOUD_KAFKA_PARTITIONS", "3")),
            replication_factor=int(env.get("ANNOCLOUD_KAFKA_REPLICATION", "1")),
            namespace=env.get("ANNOCLOUD_KAFKA_NAMESPACE", ""),
        )

    def physical(self, name: str) -> str:
        """The broker-side name of a topic or consumer group (namespace-prefixed)."""
        return f"{self.namespace}.{name}" if self.namespace else name

    def logical(self, name: str) -> str:
        """The plain name of a broker-side topic (the namespace prefix removed)."""
        prefix = f"{self.namespace}." if self.namespace else ""
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name

    # --- topics ---------------------------------------------------------------------------------

    def _admin_client(self) -> Any:
        with self._admin_lock:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id=f"{self._client_id}-admin",
                    request_timeout_ms=int(self._send_timeout * 1000),
                )
            return self._admin

    def ensure_topics(self, topics: Sequence[str] = ALL_TOPICS, partitions: int | None = None) -> list[str]:
        """Creates the missing topics (and the redrive-marker topic); returns the ones it created."""
        count = partitions or self._partitions
        topics = [self.physical(t) for t in topics]
        redrives = self.physical(TOPIC_REDRIVES)
        admin = self._admin_client()
        existing = set(admin.list_topics())
        wanted: dict[str, dict[str, Any]] = {}
        for topic in topics:
            if topic not in existing:
                wanted[topic] = {
                    "num_partitions": count,
                    "replication_factor": self._replication,
                    "configs": {"min.insync.replicas": str(min(2, self._replication))},
                }
        if redrives not in existing:
            wanted[redrives] = {
                "num_partitions": 1,
                "replication_factor": self._replication,
                "configs": {
                    "cleanup.policy": "compact",
                    "min.insync.replicas": str(min(2, self._replication)),
                },
            }
        created: list[str] = []
        for topic, options in wanted.items():
            try:
                admin.create_topics({topic: options})
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # someone else created it in between: fine
        admin.wait_for_topics([*topics, redrives], timeout_ms=30000)
        if created:
            log.info("created Kafka topics %s", ", ".join(created))
        return created

    # --- producing ------------------------------------------------------------------------------

    def _new_producer(self) -> Any:
        self.producers_created += 1
        send_ms = int(self._send_timeout * 1000)
        request_ms = min(15000, max(1000, send_ms // 2))
        return KafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self._client_id}-producer",
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=5,
            retries=2147483647,  # bounded by delivery_timeout_ms
            delivery_timeout_ms=max(send_ms, request_ms + self._linger_ms + 1),
            request_timeout_ms=request_ms,
            max_block_ms=send_ms,
            linger_ms=self._linger_ms,
            allow_auto_create_topics=False,
        )

    def _send(self, records: Sequence[_Outgoing]) -> None:
        """Sends every record and returns once all are acknowledged; raises :class:`PublishError`."""
        if not records:
            return
        with self._producer_lock:
            if self._producer is None:
                self._producer = self._new_producer()
            producer = self._producer
        try:
            futures = [
                producer.send(self.physical(r.topic), key=r.key.encode(), value=r.value, headers=r.headers)
                for r in records
            ]
            producer.flush(timeout=self._send_timeout)
            failure: BaseException | None = None
            for future in futures:
                try:
                    future.get(timeout=self._send_timeout)
                except Exception as exc:  # every failure must surface
                    failure = failure or exc
            if failure is not None:
                raise failure
            self._failed_sends = 0
        except Exception as exc:
            self._failed_sends += 1
            # A retriable error that keeps coming (seen after a broker restart: every flush times out
            # for minutes) means this producer is wedged; a new one re-bootstraps. Resending is safe:
            # rows stay unpublished until acknowledged and consumers deduplicate on the inbox.
            wedged = self._failed_sends >= WEDGED_AFTER_FAILURES
            if _is_fatal(exc) or wedged:
                log.warning(
                    "Kafka producer %s (%s: %s); it will be recreated",
                    "failed fatally" if _is_fatal(exc) else f"failed {self._failed_sends} sends in a row",
                    type(exc).__name__,
                    exc,
                )
                self._failed_sends = 0
                self._drop_producer(producer)
            raise PublishError(
                f"{len(records)} record(s) not acknowledged: {type(exc).__name__}: {exc}"
            ) from exc

    def _drop_producer(self, producer: Any) -> None:
        with self._producer_lock:
            if self._producer is producer:
                self._producer = None
        try:
            producer.close(timeout=1)
        except Exception:  # it is being thrown away
            log.debug("closing a failed producer failed", exc_info=True)

    def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Returns only once every record is acknowledged by the broker (acks=all); raises otherwise."""
        self._send([_Outgoing(r.topic, r.key, r.value, trace_headers(r.value)) for r in records])

    # --- consuming ------------------------------------------------------------------------------

    def _consumer(self, group: str | None, **extra: Any) -> Any:
        return KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self._client_id}-consumer",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            request_timeout_ms=30000,
            **extra,
        )

    def subscribe(self, group: str, topics: Sequence[str]) -> KafkaSubscription:
        consumer = self._consumer(self.physical(group), session_timeout_ms=10000, heartbeat_interval_ms=3000)
        physical = [self.physical(t) for t in topics]
        consumer.subscribe(physical)
        return KafkaSubscription(consumer, physical, self._join_timeout, self)

    def end_offset(self, topics: Sequence[str]) -> int:
        """Sum of the end offsets of every partition of ``topics`` (how many records they hold)."""
        consumer = self._consumer(None)
        try:
            physical = [self.physical(t) for t in topics]
            partitions = [
                TopicPartition(topic, p)
                for topic in physical
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            return sum(int(v) for v in consumer.end_offsets(partitions).values()) if partitions else 0
        finally:
            consumer.close(autocommit=False)

    # --- dead letters ---------------------------------------------------------------------------

    def dead_letter(self, group: str, record: Record, error: str) -> None:
        """Produces the record to the dead-letter topic and waits for the ack (before the commit)."""
        headers = [
            *trace_headers(record.value),
            (H_GROUP, group.encode()),
            (H_TOPIC, record.topic.encode()),
            (H_PARTITION, str(record.partition).encode()),
            (H_OFFSET, str(record.offset).encode()),
            (H_ERROR, error[:4000].encode("utf-8", "replace")),
            (H_TIME, datetime.now(UTC).isoformat().encode()),
        ]
        self._send([_Outgoing(TOPIC_DEAD_LETTER, record.key, record.value, headers)])

    def _read_all(
        self, topic: str, start: dict[int, int] | None, timeout: float
    ) -> tuple[list[Any], dict[int, int]]:
        """Reads ``topic`` from ``start`` (per partition; else the beginning) up to its current end.

        Returns the records and, per partition, the next offset after what was read. Raises
        TimeoutError when the end is not reached in ``timeout`` seconds.
        """
        topic = self.physical(topic)
        consumer = self._consumer(None)
        try:
            ids = sorted(consumer.partitions_for_topic(topic) or ())
            if not ids:
                raise RuntimeError(f"topic {topic} does not exist (run KafkaEventBus.ensure_topics)")
            partitions = [TopicPartition(topic, p) for p in ids]
            consumer.assign(partitions)
            first = consumer.beginning_offsets(partitions)
            end = consumer.end_offsets(partitions)
            reached: dict[int, int] = {}
            for tp in partitions:
                offset = max(int(first[tp]), (start or {}).get(tp.partition, 0))
                consumer.seek(tp, offset)
                reached[tp.partition] = offset
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while any(reached[tp.partition] < int(end[tp]) for tp in partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} did not reach its end in {timeout}s")
                for tp, batch in consumer.poll(timeout_ms=200, max_records=1000).items():
                    for message in batch:
                        if message.offset < int(end[tp]):
                            records.append(message)
                    reached[tp.partition] = max(reached[tp.partition], consumer.position(tp))
                for tp in partitions:  # transaction markers / compacted gaps move the position too
                    reached[tp.partition] = max(reached[tp.partition], consumer.position(tp))
            return records, {p: min(o, int(end[TopicPartition(topic, p)])) for p, o in reached.items()}
        finally:
            consumer.close(autocommit=False)

    def _redrive_marks(self, timeout: float) -> dict[tuple[str, int], int]:
        """(group, dead-letter partition) -> next dead-letter offset not yet redriven."""
        records, _ = self._read_all(TOPIC_REDRIVES, None, timeout)
        marks: dict[tuple[str, int], int] = {}
        for message in records:
            if message.key is None or message.value is None:
                continue
            group, _, partition = message.key.decode().rpartition("|")
            marks[(group, int(partition))] = int(message.value.decode())
        return marks

    def _pending(
        self, group: str | None, timeout: float
    ) -> tuple[list[dict[str, object]], dict[int, int], dict[tuple[str, int], int]]:
        marks = self._redrive_marks(timeout)
        start = {p: o for (g, p), o in marks.items() if g == group} if group else None
        records, reached = self._read_all(TOPIC_DEAD_LETTER, start, timeout)
        letters: list[dict[str, object]] = []
        for message in records:
            letter_group = _header(message.headers, H_GROUP)
            if group and letter_group != group:
                continue
            if message.offset < marks.get((letter_group, message.partition), 0):
                continue  # already redriven
            letters.append(
                {
                    "id": f"{message.partition}:{message.offset}",
                    "group_id": letter_group,
                    "topic": _header(message.headers, H_TOPIC),
                    "partition": int(_header(message.headers, H_PARTITION) or -1),
                    "offset": int(_header(message.headers, H_OFFSET) or -1),
                    "key": message.key.decode() if message.key is not None else "",
                    "value": message.value,
                    "error": _header(message.headers, H_ERROR),
                    "dead_time": _header(message.headers, H_TIME),
                    "redrive_time": None,
                    "dlq_partition": message.partition,
                    "dlq_offset": message.offset,
                }
            )
        return letters, reached, marks

    def dead_letters(self, group: str | None = None, timeout: float = 15.0) -> list[dict[str, object]]:
        """Dead letters not yet redriven (optionally of one consumer group), oldest first per partition."""
        letters, _, _ = self._pending(group, timeout)
        return letters

    def dead_letter_counts(self, timeout: float = 15.0) -> dict[str, int]:
        """Dead letters not yet redriven, per consumer group (one read of the dead-letter topic)."""
        return dict(Counter(str(d["group_id"]) for d in self.dead_letters(None, timeout)))

    def redrive(self, group: str | None = None, timeout: float = 15.0) -> int:
        """Republishes dead letters to their original topics, then records the redrive.

        At least once: a crash between the republish and the marker repeats the redrive next time,
        and the consumers' inboxes skip what they had applied.
        """
        letters, reached, _ = self._pending(group, timeout)
        self.publish(
            [
                OutgoingRecord(topic=str(d["topic"]), key=str(d["key"]), value=bytes(d["value"]))  # type: ignore[call-overload]
                for d in letters
            ]
        )
        groups = {group} if group else {str(d["group_id"]) for d in letters}
        markers = [
            _Outgoing(TOPIC_REDRIVES, f"{g}|{partition}", str(offset).encode(), [])
            for g in sorted(groups)
            for partition, offset in sorted(reached.items())
        ]
        self._send(markers)
        if letters:
            log.info("redrove %d dead letter(s)%s", len(letters), f" of {group}" if group else "")
        return len(letters)

    def close(self) -> None:
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
        with self._admin_lock:
            admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()


class KafkaSubscription:
    """One member of a consumer group (auto-commit off, earliest, read_committed)."""

    def __init__(self, consumer: Any, topics: list[str], join_timeout: float, bus: KafkaEventBus):
        self._bus = bus
        self._consumer = consumer
        self._topics = topics
        self._join_timeout = join_timeout
        self._joined = False
        self._closed = False
        self._closing = threading.Event()
        self._lock = threading.Lock()

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records; the first poll waits (bounded) until the group is joined."""
        if max_records <= 0:
            return []
        with self._lock:
            now = time.monotonic()
            deadline = now + timeout
            join_deadline = now + max(timeout, self._join_timeout)
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                batches = self._consumer.poll(timeout_ms=int(remaining * 1000), max_records=max_records)
                if batches:
                    self._joined = True
                    return [
                        Record(
                            topic=self._bus.logical(message.topic),
                            partition=message.partition,
                            offset=message.offset,
                            key=message.key.decode() if message.key is not None else "",
                            value=message.value if message.value is not None else b"",
                        )
                        for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition))
                        for message in batches[tp]
                    ]
                now = time.monotonic()
                if not self._joined:
                    if self._consumer.assignment():
                        # Just joined: give the first fetch a moment even when called with timeout 0.
                        self._joined = True
                        deadline = max(deadline, now + 0.5)
                        continue
                    if now < join_deadline and not self._closing.is_set():
                        time.sleep(0.01)
                        continue
                    self._joined = True  # an empty assignment is possible: stop waiting for one
                if now >= deadline:
                    return []

    def commit(self, records: Sequence[Record]) -> None:
        """Commits, per partition, the offset after the highest processed record."""
        if not records:
            return
        highest: dict[tuple[str, int], int] = {}
        for record in records:
            key = (self._bus.physical(record.topic), record.partition)
            highest[key] = max(highest.get(key, -1), record.offset)
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset + 1, "", -1)
            for (topic, partition), offset in highest.items()
        }
        with self._lock:
            self._consumer.commit(offsets=offsets)

    def rewind(self, records: Sequence[Record]) -> None:
        """Seeks each partition back to its lowest offset in ``records`` (still assigned ones only:
        a revoked partition restarts from its committed offset at its new owner anyway)."""
        lowest: dict[tuple[str, int], int] = {}
        for record in records:
            key = (self._bus.physical(record.topic), record.partition)
            lowest[key] = min(lowest.get(key, record.offset), record.offset)
        with self._lock:
            assigned = set(self._consumer.assignment() or ())
            for (topic, partition), offset in lowest.items():
                tp = TopicPartition(topic, partition)
                if tp in assigned:
                    self._consumer.seek(tp, offset)

    def lag(self) -> int:
        """Records not yet committed: sum over the assigned partitions of end offset - committed."""
        with self._lock:
            partitions = set(self._consumer.assignment() or ())
            if not partitions:  # not joined yet: the group's lag over every partition
                partitions = {
                    TopicPartition(topic, p)
                    for topic in self._topics
                    for p in (self._consumer.partitions_for_topic(topic) or ())
                }
            if not partitions:
                return 0
            ordered = sorted(partitions, key=lambda tp: (tp.topic, tp.partition))
            end = self._consumer.end_offsets(ordered)
            first = self._consumer.beginning_offsets(ordered)
            total = 0
            for tp in ordered:
                committed = self._consumer.committed(tp)
                base = int(committed) if committed is not None else int(first[tp])
                total += max(0, int(end[tp]) - base)
            return total

    def interrupt(self) -> None:
        """A poll that is waiting to join the group returns now (shutdown must not wait ~30 s for a
        rebalance after a crashed predecessor); a batch in flight is not affected."""
        self._closing.set()

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._consumer.close(autocommit=False)
