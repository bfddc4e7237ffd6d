"""Storage plumbing: one database per service, SQLAlchemy 2.0 sessions, one transaction per unit.

Embedded mode uses a SQLite file per service (WAL, every transaction ``BEGIN IMMEDIATE`` so two
writers never deadlock on a lock upgrade). Cluster mode passes a PostgreSQL URL instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_base() -> type[DeclarativeBase]:
    """A declarative base with its own MetaData (one per service: each owns its tables)."""

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    return Base


def _configure_sqlite(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


class Database:
    """A service's database: an engine and a session factory."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine = create_engine(url, **kwargs)
        self._read_engine = self.engine
        if url.startswith("sqlite"):
            _configure_sqlite(self.engine, "BEGIN IMMEDIATE")
            # WAL lets readers run beside the one writer: reads get their own deferred connections.
            self._read_engine = create_engine(url, **kwargs)
            _configure_sqlite(self._read_engine, "BEGIN")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        # SQLite allows one writer per file; its busy handler sleeps with growing backoff, which
        # gave p99 latencies of seconds under 8 concurrent workers. Queueing writers of this
        # process on a lock instead is FIFO-ish and never sleeps. Other processes still rely on
        # busy_timeout.
        self._writer_lock: threading.RLock | None = threading.RLock() if url.startswith("sqlite") else None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        if self._writer_lock is None:
            with self._sessions() as session, session.begin():
                yield session
            return
        with self._writer_lock, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A snapshot for reads that neither waits for nor blocks writers (WAL); do not write in it."""
        with self._read_sessions() as session, session.begin():
            yield session

    def create_tables(self, metadata: MetaData) -> None:
        """Embedded mode only: the cluster runs Alembic migrations instead."""
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()


def sqlite_url(path: str) -> str:
    return f"sqlite+pysqlite:///{path}"
