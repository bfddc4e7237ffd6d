"""Storage plumbing: one database per service, SQLAlchemy 2.0 sessions, one transaction per unit.

Embedded mode uses a SQLite file per service (WAL, every transaction ``BEGIN IMMEDIATE`` so two
writers never deadlock on a lock upgrade). Cluster mode passes a PostgreSQL URL instead: one
database, one schema per service, a pooled psycopg 3 engine whose connections all have
``search_path`` set to that schema, READ COMMITTED, and tables made by Alembic migrations
(:mod:`annocloud_server.common.migrations`), never by ``create_all``.

The schema travels in the URL, so a component's ``Database(ctx.database_url)`` needs no change:
``postgresql+psycopg://annocloud@127.0.0.1:15432/annocloud?schema=tasks`` (see :func:`with_schema`).
Three more query parameters are read (and removed) by this module: ``pool_size``, ``max_overflow``
and ``pool_timeout``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, Engine, MetaData, create_engine, event, make_url
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


SCHEMA_PARAM = "schema"
_POOL_PARAMS = {"pool_size": 5, "max_overflow": 10, "pool_timeout": 30}
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def is_postgresql(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def schema_of(url: str | URL) -> str | None:
    """The ``?schema=`` of a URL, or None."""
    value = make_url(url).query.get(SCHEMA_PARAM)
    if isinstance(value, tuple):
        value = value[-1]
    return value or None


def with_schema(url: str | URL, schema: str) -> str:
    """``url`` with ``?schema=<schema>`` (replacing any), as a string with the password kept."""
    check_schema_name(schema)
    parsed = make_url(url).update_query_dict({SCHEMA_PARAM: schema})
    return parsed.render_as_string(hide_password=False)


def check_schema_name(schema: str) -> str:
    """A schema name we can put in ``search_path`` and DDL unquoted: lower-case identifier."""
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"schema {schema!r} is not a lower-case SQL identifier ([a-z_][a-z0-9_]*, <= 63)")
    return schema


def postgresql_engine(url: str | URL, schema: str, *, echo: bool = False, **pool: Any) -> Engine:
    """A psycopg 3 engine on ``url`` whose every connection has ``search_path`` = ``schema``.

    Annocloud's own query parameters (``schema``, ``pool_*``) are removed from the URL; the pool
    settings come from ``pool`` (e.g. ``poolclass=NullPool`` for one-off tools) or the URL.
    """
    check_schema_name(schema)
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # the bare scheme means psycopg2 to SQLAlchemy; we ship psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg")
    query = dict(parsed.query)
    query.pop(SCHEMA_PARAM, None)
    kwargs: dict[str, Any] = {}
    for name, default in _POOL_PARAMS.items():
        raw = query.pop(name, None)
        if isinstance(raw, tuple):
            raw = raw[-1]
        try:
            kwargs[name] = int(raw) if raw is not None else default
        except ValueError:
            raise ValueError(f"{name}={raw!r} in the database URL is not a number") from None
    options = query.pop("options", None)
    if isinstance(options, tuple):
        options = " ".join(options)
    parsed = parsed.set(query=query)
    if "poolclass" in pool:
        kwargs = {}  # NullPool and friends take no size settings
    kwargs.update(pool)
    search_path = f"-csearch_path={schema}"
    return create_engine(
        parsed,
        echo=echo,
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
        connect_args={"options": f"{options} {search_path}" if options else search_path},
        **kwargs,
    )


class Database:
    """A service's database: an engine and a session factory.

    ``schema`` (PostgreSQL only) defaults to the URL's ``?schema=``; a PostgreSQL URL without one
    is refused, since every service owns exactly one schema.
    """

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False):
        self.url = url
        self.schema: str | None = None
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgresql = not self.is_sqlite and is_postgresql(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_postgresql:
            chosen = schema or schema_of(url)
            if not chosen:
                raise ValueError(
                    "a PostgreSQL database URL needs the service's schema: add ?schema=<service> "
                    "(annocloud_server.common.db.with_schema) or pass schema="
                )
            self.schema = check_schema_name(chosen)
            self.engine = postgresql_engine(url, self.schema, echo=echo)
            # Same pool; psycopg opens these transactions with BEGIN READ ONLY (reset on check-in).
            self._read_engine: Engine = self.engine.execution_options(postgresql_readonly=True)
        else:
            if self.is_sqlite:
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            else:
                kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.engine = create_engine(url, **kwargs)
            self._read_engine = self.engine
        if self.is_sqlite:
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
        self._writer_lock: threading.RLock | None = threading.RLock() if self.is_sqlite else None

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
        """A snapshot for reads that neither waits for nor blocks writers (WAL); do not write in it.

        On PostgreSQL it is a READ ONLY transaction (READ COMMITTED: each statement sees what was
        committed when it started).
        """
        with self._read_sessions() as session, session.begin():
            yield session

    def create_tables(self, metadata: MetaData) -> None:
        """SQLite: creates missing tables. PostgreSQL: checks the schema is at the Alembic head.

        The cluster never creates tables from the models: ``annocloud migrate <service>`` does,
        and a service refuses to start on a schema that is behind (or ahead of) its code.
        """
        if not self.is_postgresql:
            metadata.create_all(self.engine)
            return
        from annocloud_server.common import migrations

        migrations.require_head(self, metadata)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.is_sqlite:  # on PostgreSQL the read engine shares the writer's pool
            self._read_engine.dispose()


def sqlite_url(path: str) -> str:
    return f"sqlite+pysqlite:///{path}"
