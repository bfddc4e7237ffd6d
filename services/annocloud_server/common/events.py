"""Events between services: transactional outbox, relay, idempotent consumers, dead letters.

A service never publishes inside a request. It writes its state change and an outbox row in one
transaction (:class:`EventWriter`). An :class:`OutboxRelay` publishes unpublished rows through an
:class:`EventBus` and marks them published only after the bus acknowledged them, so a crash in
between publishes again (at-least-once). A :class:`ConsumerRunner` applies each event in one
transaction together with an inbox row keyed by (consumer, event_id), so a redelivered event takes
effect once; it commits its position after processing; an event that keeps failing goes to the
dead-letter store with the error and can be redriven.

Tracing: ``EventWriter.emit`` stores the W3C trace context of the emitting span in the envelope; the
consumer applies each event in a CONSUMER span whose parent is that context, so one trace runs from
a request through every event it causes; the relay publishes each batch in a PRODUCER span linked
to the events' contexts. Fault points (``faults.hit``) mark where the chaos suite kills a process.

The bus is an interface: ``inprocess.InProcessEventBus`` (embedded default, a durable log in
SQLite) and a Kafka implementation share these semantics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from annocloud.events.v1 import events_pb2
from google.protobuf.message import DecodeError, Message
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from annocloud_server.common import faults
from annocloud_server.common.db import Database
from annocloud_server.common.paging import new_id
from annocloud_server.common.telemetry import consume_span, inject_trace_context, publish_span

log = logging.getLogger(__name__)

EventEnvelope = events_pb2.EventEnvelope
Handler = Callable[[Session, events_pb2.EventEnvelope], None]

TOPIC_INGESTION = "annocloud.ingestion.v1"
TOPIC_TASKS = "annocloud.tasks.v1"
TOPIC_ANNOTATIONS = "annocloud.annotations.v1"
TOPIC_QA = "annocloud.qa.v1"
TOPIC_EXPORT = "annocloud.export.v1"
TOPIC_MODELASSIST = "annocloud.modelassist.v1"


def event_type_of(payload_type: type[Message]) -> str:
    """The event_type string of a payload message class, e.g. ``annocloud.events.v1.ItemIngested``."""
    return str(payload_type.DESCRIPTOR.full_name)


_PAYLOAD_FIELD = {
    field.message_type.full_name: field.name
    for field in EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if field.message_type is not None
}


def outbox_table(metadata: MetaData) -> Table:
    """The outbox of a service, in the service's own database."""
    return Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("topic", String(128), nullable=False),
        Column("key", String(512), nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("created_time", DateTime(timezone=True), nullable=False),
        Column("published_time", DateTime(timezone=True), nullable=True, index=True),
    )


def inbox_table(metadata: MetaData) -> Table:
    """Events a consumer of this service already applied, in the service's own database."""
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(128), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("applied_time", DateTime(timezone=True), nullable=False),
    )


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: str
    value: bytes


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


class Subscription(Protocol):
    def poll(self, max_records: int, timeout: float) -> list[Record]: ...

    def commit(self, records: Sequence[Record]) -> None: ...

    def rewind(self, records: Sequence[Record]) -> None:
        """The next poll delivers ``records`` (and what followed them) again: used when a batch
        could not be processed and must not be skipped."""
        ...

    def lag(self) -> int: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    """Where events travel between services."""

    def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Returns only once every record is durably acknowledged; raises otherwise."""
        ...

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription: ...

    def dead_letter(self, group: str, record: Record, error: str) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def messaging_system(bus: EventBus) -> str:
    """``kafka`` or ``inprocess``: the bus's ``messaging_system`` (the span attribute)."""
    return str(getattr(bus, "messaging_system", "annocloud"))


class EventWriter:
    """Adds events to a service's outbox inside the caller's transaction."""

    def __init__(self, outbox: Table, topic: str, on_commit: Callable[[], None] | None = None):
        self._outbox = outbox
        self._topic = topic
        self._on_commit = on_commit

    def emit(
        self,
        session: Session,
        *,
        tenant_id: str,
        resource_name: str,
        aggregate_version: int,
        payload: Message,
    ) -> events_pb2.EventEnvelope:
        field = _PAYLOAD_FIELD.get(payload.DESCRIPTOR.full_name)
        if field is None:
            raise TypeError(f"{payload.DESCRIPTOR.full_name} is not an event payload")
        envelope = EventEnvelope(
            event_id=new_id(),
            event_type=payload.DESCRIPTOR.full_name,
            tenant_id=tenant_id,
            resource_name=resource_name,
            aggregate_version=aggregate_version,
        )
        envelope.occurred_time.GetCurrentTime()
        carrier: dict[str, str] = {}
        inject_trace_context(carrier)
        envelope.trace_context.update(carrier)
        getattr(envelope, field).CopyFrom(payload)
        session.execute(
            insert(self._outbox).values(
                event_id=envelope.event_id,
                topic=self._topic,
                key=resource_name,
                value=envelope.SerializeToString(),
                created_time=_now(),
            )
        )
        if self._on_commit is not None and not session.info.get("_outbox_hook"):
            session.info["_outbox_hook"] = True
            hook = self._on_commit

            def _after_commit(_session: Session) -> None:
                _session.info.pop("_outbox_hook", None)
                hook()

            sa_event.listen(session, "after_commit", _after_commit, once=True)
        return envelope


class ConsumerStopping(Exception):
    """The consumer was asked to stop while it waited for its database: the batch is abandoned
    uncommitted (it is delivered again to whoever consumes next)."""


def is_transient(exc: BaseException) -> bool:
    """An infrastructure failure (the database is restarting, a connection dropped, the pool timed
    out) rather than a problem of the event: retried until it passes, never dead-lettered."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.TimeoutError
        | sa_exc.DisconnectionError
        | ConnectionError,
    )


class _Worker:
    """A daemon thread that runs ``step`` until stopped; ``step`` returns True when it did work."""

    def __init__(self, name: str, step: Callable[[], bool], idle_wait: float):
        self._name = name
        self._step = step
        self._idle_wait = idle_wait
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                busy = self._step()
                backoff = 0.05
            except ConsumerStopping:
                return
            except Exception:
                log.exception("%s failed; retrying in %.2fs", self._name, backoff)
                busy = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            if not busy:
                self._wake.wait(self._idle_wait)
                self._wake.clear()


class OutboxRelay:
    """Publishes a service's outbox rows in order and marks them published after the ack."""

    def __init__(
        self,
        name: str,
        db: Database,
        outbox: Table,
        bus: EventBus,
        *,
        batch_size: int = 500,
        linger: float = 0.002,
    ):
        self.name = name
        self._db = db
        self._outbox = outbox
        self._bus = bus
        self._batch_size = batch_size
        self._linger = linger
        self._worker = _Worker(f"relay-{name}", self.publish_pending, idle_wait=0.5)
        self.published = 0

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    def wake(self) -> None:
        self._worker.wake()

    def publish_pending(self) -> bool:
        """Publishes one batch; True when there was something to publish."""
        time.sleep(self._linger)  # woken by a commit: let the burst land, publish it in one batch
        with self._db.read() as session:
            rows = session.execute(
                select(self._outbox.c.id, self._outbox.c.topic, self._outbox.c.key, self._outbox.c.value)
                .where(self._outbox.c.published_time.is_(None))
                .order_by(self._outbox.c.id)
                .limit(self._batch_size)
            ).all()
        if not rows:
            return False
        with publish_span(
            system=messaging_system(self._bus),
            relay=self.name,
            topics=sorted({r.topic for r in rows}),
            values=[r.value for r in rows],
        ):
            self._bus.publish([OutgoingRecord(topic=r.topic, key=r.key, value=r.value) for r in rows])
            faults.hit("relay.after_ack", self.name)
            with self._db.transaction() as session:
                session.execute(
                    update(self._outbox)
                    .where(self._outbox.c.id.in_([r.id for r in rows]))
                    .values(published_time=_now())
                )
        self.published += len(rows)
        return True

    def backlog(self) -> int:
        with self._db.read() as session:
            count = session.execute(
                select(func.count()).select_from(self._outbox).where(self._outbox.c.published_time.is_(None))
            ).scalar_one()
        return int(count)


class ConsumerRunner:
    """Applies events to a service's database, once each, in one transaction with an inbox row."""

    def __init__(
        self,
        group: str,
        db: Database,
        inbox: Table,
        bus: EventBus,
        handlers: Mapping[str, Handler],
        topics: Sequence[str],
        *,
        max_attempts: int = 3,
        batch_size: int = 100,
        linger: float = 0.005,
    ):
        self.group = group
        self._db = db
        self._inbox = inbox
        self._bus = bus
        self._handlers = dict(handlers)
        self._topics = list(topics)
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._linger = linger
        self._subscription: Subscription | None = None
        self._subscription_lock = threading.Lock()
        self._worker = _Worker(f"consumer-{group}", self.consume_batch, idle_wait=0.0)
        self.applied = 0
        self.duplicates_skipped = 0
        self.dead_lettered = 0

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        interrupt = getattr(self._subscription, "interrupt", None)
        if interrupt is not None:
            interrupt()  # Kafka: stop waiting for a group join; the batch in flight still commits
        self._worker.stop()
        if self._subscription is not None:
            self._subscription.close()

    def _sub(self) -> Subscription:
        with self._subscription_lock:  # the worker and lag() (metrics, wait_idle) may race here
            if self._subscription is None:
                self._subscription = self._bus.subscribe(self.group, self._topics)
            return self._subscription

    def lag(self) -> int:
        return self._sub().lag()

    def consume_batch(self, timeout: float = 0.5) -> bool:
        """Polls and applies one batch; True when records were processed.

        The batch is applied in one transaction (one commit for many events); if any event of it
        fails, the transaction is rolled back and the events are applied one by one, so a poison
        event only affects itself. The position is committed after the batch is applied.
        """
        subscription = self._sub()
        records = subscription.poll(self._batch_size, timeout)
        if records and len(records) < self._batch_size and self._linger > 0:
            time.sleep(self._linger)  # let a burst accumulate: one transaction for all of it
            records += subscription.poll(self._batch_size - len(records), 0)
        if not records:
            return False
        try:
            self._process(records)
        except BaseException:
            # Nothing of this batch may be skipped: deliver it again (the inbox skips what was applied).
            subscription.rewind(records)
            raise
        subscription.commit(records)
        return True

    def _process(self, records: Sequence[Record]) -> None:
        pending: list[tuple[Record, events_pb2.EventEnvelope, Handler]] = []
        for record in records:
            try:
                envelope = EventEnvelope.FromString(record.value)
            except DecodeError as exc:
                self._bus.dead_letter(self.group, record, f"undecodable event: {exc}")
                self.dead_lettered += 1
                continue
            handler = self._handlers.get(envelope.event_type)
            if handler is not None:
                pending.append((record, envelope, handler))
        if pending:
            if not self._apply_batch(pending):
                for record, envelope, handler in pending:
                    self._apply_with_retries(record, envelope, handler)
            faults.hit("consumer.after_db_commit", self.group)

    def _apply_batch(self, pending: Sequence[tuple[Record, events_pb2.EventEnvelope, Handler]]) -> bool:
        applied = duplicates = 0
        try:
            with self._db.transaction() as session:
                for record, envelope, handler in pending:
                    if self._apply_in(session, handler, record, envelope):
                        applied += 1
                    else:
                        duplicates += 1
        except Exception as exc:
            log.info("%s: batch of %d failed (%s); applying one by one", self.group, len(pending), exc)
            return False
        self.applied += applied
        self.duplicates_skipped += duplicates
        return True

    def _apply_with_retries(
        self, record: Record, envelope: events_pb2.EventEnvelope, handler: Handler
    ) -> None:
        last_error = ""
        attempt = 0
        outage = 0.0
        while attempt < self._max_attempts:
            try:
                self._apply_once(handler, record, envelope)
                return
            except Exception as exc:
                if is_transient(exc):
                    # The database is away (restart, failover): wait for it however long it takes.
                    # Dead-lettering here would drop a good event on the floor.
                    if self._worker.stopping:
                        raise ConsumerStopping(self.group) from exc
                    if outage == 0.0 or int(outage) % 10 == 0:
                        log.warning("%s: database unavailable (%s); waiting", self.group, type(exc).__name__)
                    pause = min(2.0, 0.1 * 2 ** min(outage, 4))
                    outage += pause
                    time.sleep(pause)
                    continue
                attempt += 1
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "%s: %s attempt %d failed: %s", self.group, envelope.event_type, attempt, last_error
                )
                time.sleep(0.05 * attempt)
        log.error("%s: dead-lettering %s %s", self.group, envelope.event_type, envelope.event_id)
        self._bus.dead_letter(self.group, record, last_error)
        self.dead_lettered += 1

    def _apply_once(self, handler: Handler, record: Record, envelope: events_pb2.EventEnvelope) -> None:
        with self._db.transaction() as session:
            fresh = self._apply_in(session, handler, record, envelope)
        if fresh:
            self.applied += 1
        else:
            self.duplicates_skipped += 1

    def _apply_in(
        self, session: Session, handler: Handler, record: Record, envelope: events_pb2.EventEnvelope
    ) -> bool:
        """Applies one event inside ``session`` with its inbox row; False when it was applied before.

        Runs in a CONSUMER span whose parent is the emitter's span, so events the handler emits
        continue the same trace.
        """
        with consume_span(
            envelope,
            system=messaging_system(self._bus),
            topic=record.topic,
            partition=record.partition,
            group=self.group,
        ) as span:
            seen = session.execute(
                select(self._inbox.c.event_id).where(
                    self._inbox.c.consumer == self.group, self._inbox.c.event_id == envelope.event_id
                )
            ).first()
            if seen is not None:
                span.set_attribute("annocloud.inbox.duplicate", True)
                return False
            handler(session, envelope)
            session.execute(
                insert(self._inbox).values(
                    consumer=self.group, event_id=envelope.event_id, applied_time=_now()
                )
            )
            faults.hit("consumer.before_db_commit", self.group)
            return True
