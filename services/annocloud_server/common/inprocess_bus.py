"""The embedded default's event bus: a durable, ordered log in one SQLite file.

Semantics match what the Kafka bus gives: ``publish`` returns after the records are committed to
disk (the "ack"), each consumer group has a committed position per topic that survives restarts,
records are delivered at least once, and failed records go to a dead-letter table from which
``redrive`` republishes them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from annocloud_server.common.db import NAMING_CONVENTION, Database, sqlite_url
from annocloud_server.common.events import OutgoingRecord, Record

_metadata = MetaData(naming_convention=NAMING_CONVENTION)
_records = Table(
    "records",
    _metadata,
    Column("offset", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(128), nullable=False),
    Column("key", String(512), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("append_time", DateTime(timezone=True), nullable=False),
    # Consumers read "topic IN (...) AND offset > position": a seek per topic, never a topic scan.
    Index("ix_records_topic_offset", "topic", "offset"),
)
_positions = Table(
    "consumer_positions",
    _metadata,
    Column("group_id", String(128), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("offset", Integer, nullable=False),
)
_dead_letters = Table(
    "dead_letters",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_id", String(128), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("offset", Integer, nullable=False),
    Column("key", String(512), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("error", Text, nullable=False),
    Column("dead_time", DateTime(timezone=True), nullable=False),
    Column("redrive_time", DateTime(timezone=True), nullable=True),
)


class InProcessEventBus:
    """Durable log shared by every service of one process."""

    messaging_system = "inprocess"

    def __init__(self, path: str):
        self._db = Database(sqlite_url(path))
        self._db.create_tables(_metadata)
        self._appended = threading.Condition()

    def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if not records:
            return
        now = datetime.now(UTC)
        with self._db.transaction() as session:
            session.execute(
                insert(_records),
                [{"topic": r.topic, "key": r.key, "value": r.value, "append_time": now} for r in records],
            )
        with self._appended:
            self._appended.notify_all()

    def subscribe(self, group: str, topics: Sequence[str]) -> _Subscription:
        return _Subscription(self, group, list(topics))

    def dead_letter(self, group: str, record: Record, error: str) -> None:
        with self._db.transaction() as session:
            session.execute(
                insert(_dead_letters).values(
                    group_id=group,
                    topic=record.topic,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    error=error[:4000],
                    dead_time=datetime.now(UTC),
                )
            )

    def dead_letters(self, group: str | None = None) -> list[dict[str, object]]:
        """Dead letters not yet redriven (optionally of one consumer group)."""
        query = (
            select(_dead_letters).where(_dead_letters.c.redrive_time.is_(None)).order_by(_dead_letters.c.id)
        )
        if group:
            query = query.where(_dead_letters.c.group_id == group)
        with self._db.read() as session:
            return [dict(row._mapping) for row in session.execute(query)]

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters not yet redriven, per consumer group."""
        with self._db.read() as session:
            rows = session.execute(
                select(_dead_letters.c.group_id, func.count())
                .where(_dead_letters.c.redrive_time.is_(None))
                .group_by(_dead_letters.c.group_id)
            ).all()
        return {str(group): int(count) for group, count in rows}

    def redrive(self, group: str | None = None) -> int:
        """Republishes dead letters to their topics; consumers' inboxes skip groups that had applied them."""
        letters = self.dead_letters(group)
        self.publish(
            [OutgoingRecord(topic=str(d["topic"]), key=str(d["key"]), value=d["value"]) for d in letters]  # type: ignore[arg-type]
        )
        with self._db.transaction() as session:
            session.execute(
                update(_dead_letters)
                .where(_dead_letters.c.id.in_([d["id"] for d in letters]))
                .values(redrive_time=datetime.now(UTC))
            )
        return len(letters)

    def end_offset(self, topics: Sequence[str]) -> int:
        with self._db.read() as session:
            value = session.execute(
                select(func.max(_records.c.offset)).where(_records.c.topic.in_(topics))
            ).scalar()
        return int(value or 0)

    def _committed(self, group: str, topics: Sequence[str]) -> int:
        with self._db.read() as session:
            value = session.execute(
                select(func.min(_positions.c.offset)).where(
                    _positions.c.group_id == group, _positions.c.topic.in_(topics)
                )
            ).scalar()
        return int(value or 0)

    def _fetch(self, topics: Sequence[str], after: int, limit: int) -> list[Record]:
        with self._db.read() as session:
            rows = session.execute(
                select(_records.c.offset, _records.c.topic, _records.c.key, _records.c.value)
                .where(_records.c.topic.in_(topics), _records.c.offset > after)
                .order_by(_records.c.offset)
                .limit(limit)
            ).all()
        return [Record(topic=r.topic, partition=0, offset=r.offset, key=r.key, value=r.value) for r in rows]

    def _commit(self, group: str, topics: Sequence[str], offset: int) -> None:
        with self._db.transaction() as session:
            for topic in topics:
                statement = sqlite_insert(_positions).values(group_id=group, topic=topic, offset=offset)
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["group_id", "topic"], set_={"offset": statement.excluded.offset}
                    )
                )

    def _wait(self, timeout: float) -> None:
        with self._appended:
            self._appended.wait(timeout)

    def close(self) -> None:
        with self._appended:
            self._appended.notify_all()
        self._db.dispose()


class _Subscription:
    """One consumer group's cursor over a set of topics (a single shared sequence of offsets)."""

    def __init__(self, bus: InProcessEventBus, group: str, topics: list[str]):
        self._bus = bus
        self._group = group
        self._topics = topics
        self._position = bus._committed(group, topics)

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        records = self._bus._fetch(self._topics, self._position, max_records)
        if not records and timeout > 0:
            self._bus._wait(timeout)
            records = self._bus._fetch(self._topics, self._position, max_records)
        if records:
            self._position = records[-1].offset
        return records

    def commit(self, records: Sequence[Record]) -> None:
        if records:
            self._bus._commit(self._group, self._topics, max(r.offset for r in records))

    def lag(self) -> int:
        end = self._bus.end_offset(self._topics)
        return max(0, end - self._bus._committed(self._group, self._topics)) if end else 0

    def rewind(self, records: Sequence[Record]) -> None:
        if records:
            self._position = min(self._position, min(r.offset for r in records) - 1)

    def close(self) -> None:
        return None
