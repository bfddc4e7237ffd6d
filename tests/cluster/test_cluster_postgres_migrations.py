"""Alembic migrations of every service on a real PostgreSQL: upgrade, no drift, downgrade, upgrade."""

from __future__ import annotations

import subprocess
import sys

import pg_support
import psycopg
import pytest
from alembic import command
from annocloud_server.common import migrations
from annocloud_server.common.db import Database, with_schema


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> pg_support.PgServer:
    return pg_support.server(request.config)


@pytest.fixture(scope="module")
def db_url(pg: pg_support.PgServer) -> str:
    return pg.fresh_database("mig")


def tables_in(pg: pg_support.PgServer, db_url: str, schema: str) -> set[str]:
    database = db_url.rsplit("/", 1)[1]
    with psycopg.connect(pg.libpq(database)) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("service", migrations.SERVICES)
def test_upgrade_matches_models_then_downgrade_and_upgrade_again(
    pg: pg_support.PgServer, db_url: str, service: str
) -> None:
    """Each service's history builds exactly its models (outbox/inbox included) in its own schema,
    undoes itself to base and builds again."""
    url = with_schema(db_url, service)
    assert migrations.current(service, url) is None
    migrations.upgrade(service, db_url)  # no ?schema=: the service's name
    heads = migrations.heads(service)
    assert len(heads) == 1, f"{service} has branched migration heads: {heads}"
    assert migrations.current(service, url) == heads[0]
    model_tables = set(migrations.target_metadata(service).tables)
    assert {"outbox", "inbox"} <= model_tables
    assert tables_in(pg, db_url, service) == model_tables | {"alembic_version"}
    assert migrations.check(service, url) == []
    command.check(migrations.config(service, url))  # `alembic check`: raises on any difference

    migrations.downgrade(service, url, "base")
    assert migrations.current(service, url) is None
    assert tables_in(pg, db_url, service) == {"alembic_version"}
    drift = migrations.check(service, url)
    assert {d[1].name for d in drift if d[0] == "add_table"} == model_tables  # the comparison sees

    migrations.upgrade(service, url)
    assert migrations.current(service, url) == heads[0]
    assert migrations.check(service, url) == []
    assert tables_in(pg, db_url, "public") == set()  # nothing leaked outside the service's schema


def test_services_start_only_on_a_migrated_schema(pg: pg_support.PgServer) -> None:
    """create_tables on PostgreSQL never creates tables: it refuses a schema behind its code."""
    from annocloud_server.qa.models import Base

    db_url = pg.fresh_database("head")
    url = with_schema(db_url, "qa")
    db = Database(url)
    try:
        with pytest.raises(RuntimeError, match=r"run `annocloud migrate qa`"):
            db.create_tables(Base.metadata)
        assert tables_in(pg, db_url, "qa") == set()
        migrations.upgrade("qa", url)
        db.create_tables(Base.metadata)  # at head: fine
        migrations.downgrade("qa", url, "base")
        with pytest.raises(RuntimeError, match=r"at revision \(none\)"):
            db.create_tables(Base.metadata)
    finally:
        db.dispose()
    with pytest.raises(ValueError, match=r"\?schema="):
        Database(db_url)


def test_a_custom_schema_name_and_concurrent_migrations(pg: pg_support.PgServer) -> None:
    """?schema= picks the schema; three `migrate` processes at once serialize on an advisory lock
    (processes: Alembic's ``context`` is process-global, like two pods starting together)."""
    db_url = pg.fresh_database("conc")
    url = with_schema(db_url, "tasks_blue")
    code = (
        "import sys; from annocloud_server.common import migrations; migrations.upgrade('tasks', sys.argv[1])"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert migrations.current("tasks", url) == migrations.heads("tasks")[0]
    assert "tasks" in tables_in(pg, db_url, "tasks_blue")
    assert tables_in(pg, db_url, "tasks") == set()
    assert migrations.check("tasks", url) == []


def test_upgrade_all_gives_every_service_its_schema(pg: pg_support.PgServer) -> None:
    db_url = pg.fresh_database("all")
    migrations.upgrade_all(db_url)
    for service in migrations.SERVICES:
        assert migrations.current(service, db_url) == migrations.heads(service)[0]
        assert "outbox" in tables_in(pg, db_url, service)
    with pytest.raises(ValueError, match="without"):
        migrations.upgrade_all(with_schema(db_url, "qa"))
