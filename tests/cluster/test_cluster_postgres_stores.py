"""Store-level behaviour that differs between SQLite and PostgreSQL: Database on PostgreSQL (schema,
isolation, read-only reads, pool) and the export job claim under concurrent workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pg_support
import pytest
from annocloud_server.common import migrations
from annocloud_server.common.db import Database, with_schema
from annocloud_server.export import store as export_store
from annocloud_server.export.models import Base as ExportBase
from sqlalchemy import text
from sqlalchemy.exc import InternalError


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> pg_support.PgServer:
    return pg_support.server(request.config)


@pytest.fixture
def export_db(pg: pg_support.PgServer) -> Iterator[Database]:
    url = with_schema(pg.fresh_database("store"), "export")
    migrations.upgrade("export", url)
    db = Database(url)
    db.create_tables(ExportBase.metadata)  # at head: a no-op check
    yield db
    db.dispose()


def test_database_settings_on_postgresql(export_db: Database) -> None:
    """search_path = the service's schema, READ COMMITTED, read() is read-only, transaction() is not."""
    with export_db.read() as session:
        row = session.execute(
            text(
                "SELECT current_schema(), current_setting('transaction_isolation'), "
                "current_setting('transaction_read_only')"
            )
        ).one()
        assert tuple(row) == ("export", "read committed", "on")
        with pytest.raises(InternalError, match="read-only"):
            session.execute(text("DELETE FROM exports"))
    with export_db.transaction() as session:
        row = session.execute(text("SELECT current_schema(), current_setting('transaction_read_only')")).one()
        assert tuple(row) == ("export", "off")
    # A connection that served a read goes back to the pool writable.
    for _ in range(3):
        with export_db.read() as session:
            session.execute(text("SELECT 1"))
        with export_db.transaction() as session:
            session.execute(text("DELETE FROM exports WHERE false"))


def test_pool_settings_come_from_the_url(pg: pg_support.PgServer) -> None:
    url = with_schema(pg.fresh_database("pool"), "qa") + "&pool_size=2&max_overflow=1"
    db = Database(url)
    try:
        assert (db.engine.pool.size(), db.engine.pool._max_overflow) == (2, 1)  # type: ignore[attr-defined]
        with db.read() as session:
            assert session.execute(text("SELECT current_schema()")).scalar_one() is None  # not migrated yet
            assert session.execute(text("SHOW search_path")).scalar_one() == "qa"
    finally:
        db.dispose()


def test_two_export_workers_never_claim_one_job(export_db: Database) -> None:
    """While one worker's claim is uncommitted, a second worker skips that job (FOR UPDATE SKIP LOCKED)."""
    with export_db.transaction() as session:
        export_store.upsert_project(
            session,
            organization_id="acme",
            project_id="p1",
            display_name="P",
            create_time=export_store.utc_now(),
        )
        export_store.create_export(
            session, organization_id="acme", project_id="p1", export_format=1, request_id=None
        )
    claimed_first = threading.Event()
    release_first = threading.Event()
    claims: dict[str, str | None] = {}

    def first() -> None:
        with export_db.transaction() as session:
            job = export_store.claim_next(
                session, owner="w1", now=export_store.utc_now(), lease=timedelta(minutes=1)
            )
            session.flush()
            claims["w1"] = job.export_id if job else None
            claimed_first.set()
            release_first.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert claimed_first.wait(10)
    try:
        with export_db.transaction() as session:
            job = export_store.claim_next(
                session, owner="w2", now=export_store.utc_now(), lease=timedelta(minutes=1)
            )
            claims["w2"] = job.export_id if job else None
    finally:
        release_first.set()
        thread.join(10)
    assert claims["w1"] is not None
    assert claims["w2"] is None
    with export_db.read() as session:
        owner = session.execute(text("SELECT lease_owner FROM exports")).scalar_one()
    assert owner == "w1"


def test_pooled_connections_survive_a_postgresql_restart(
    pg: pg_support.PgServer, export_db: Database
) -> None:
    """After `postgres.sh restart` the pool's dead connections are replaced (pool_pre_ping)."""
    for _ in range(3):  # fill the pool with connections
        with export_db.transaction() as session:
            session.execute(text("SELECT 1"))
    with export_db.read() as session:
        before = session.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
    pg.script("restart")
    with export_db.transaction() as session:
        session.execute(text("INSERT INTO inbox VALUES ('c', 'e1', now())"))
    with export_db.read() as session:
        after = session.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
        assert session.execute(text("SELECT count(*) FROM inbox")).scalar_one() == 1
    assert after > before
