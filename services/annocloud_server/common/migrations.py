"""Alembic migrations of the cluster mode: one schema per service, one migration history per service.

Each service has ``annocloud_server/<service>/migrations/`` (``env.py`` + ``versions/``); no
``alembic.ini`` is needed: :func:`config` builds the Alembic configuration in code. The schema is
the URL's ``?schema=`` or, without one, the service's name; the version table ``alembic_version``
lives inside that schema. Every connection has ``search_path`` set to the schema and the
migrations name no schema, so one history can build any schema name.

Entry points (the CLI's ``annocloud migrate <service>`` calls these)::

    upgrade(service, url, revision="head")
    downgrade(service, url, revision)          # "base" drops every table of the service
    current(service, url) -> str | None        # the revision the schema is at
    heads(service) -> list[str]                # the revision the code needs
    check(service, url) -> list                # differences between the models and the schema
    revision(service, url, message)            # autogenerate a new revision file (development)
    upgrade_all(url)                           # every service, each in its own schema
"""

from __future__ import annotations

import importlib
import logging
import re
import zlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.pool import NullPool

from annocloud_server.common.db import (
    Database,
    check_schema_name,
    is_postgresql,
    postgresql_engine,
    schema_of,
)
from annocloud_server.common.service_names import SERVICES as SERVICES

log = logging.getLogger(__name__)


VERSION_TABLE = "alembic_version"

_URL_ATTR = "annocloud_url"
_SERVICE_ATTR = "annocloud_service"
_SCHEMA_ATTR = "annocloud_schema"


def _check_service(service: str) -> str:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")
    return service


def schema_for(service: str, url: str) -> str:
    """The schema a service's tables live in: the URL's ``?schema=``, else the service's name."""
    return check_schema_name(schema_of(url) or _check_service(service))


def script_location(service: str) -> Path:
    """The folder holding the service's ``env.py`` and ``versions/`` (inside the installed package)."""
    package = importlib.import_module(f"annocloud_server.{_check_service(service)}.migrations")
    return Path(next(iter(package.__path__)))


def target_metadata(service: str) -> MetaData:
    """The service's ``Base.metadata`` (its tables, outbox and inbox included)."""
    models = importlib.import_module(f"annocloud_server.{_check_service(service)}.models")
    metadata: MetaData = models.Base.metadata
    return metadata


def config(service: str, url: str) -> Config:
    """An Alembic configuration for ``service`` on ``url``, without an ini file."""
    if not is_postgresql(url):
        raise ValueError("migrations are for PostgreSQL (cluster mode); SQLite creates its tables itself")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location(service)))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes[_URL_ATTR] = url
    cfg.attributes[_SERVICE_ATTR] = service
    cfg.attributes[_SCHEMA_ATTR] = schema_for(service, url)
    return cfg


def heads(service: str) -> list[str]:
    """The head revision(s) of the service's migration history (what the code expects)."""
    return list(ScriptDirectory(str(script_location(service))).get_heads())


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # The version table lives in the schema but belongs to Alembic, not to the models.
    return not (type_ == "table" and name == VERSION_TABLE)


def _lock_key(schema: str) -> int:
    """An advisory-lock key per schema: two `migrate` runs on one schema never interleave."""
    return zlib.crc32(f"annocloud-migrate:{schema}".encode()) & 0x7FFFFFFF


def run_env(service: str) -> None:
    """The body of every service's ``migrations/env.py`` (online mode only)."""
    from alembic import context

    cfg = context.config
    url = cfg.attributes.get(_URL_ATTR) or cfg.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: use annocloud_server.common.migrations (or `annocloud migrate`)")
    schema = cfg.attributes.get(_SCHEMA_ATTR) or schema_for(service, url)
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported; run them against a database")
    engine = postgresql_engine(url, schema, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(schema)})
            try:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                connection.commit()
                context.configure(
                    connection=connection,
                    target_metadata=target_metadata(service),
                    version_table=VERSION_TABLE,
                    version_table_schema=schema,
                    include_name=_include_name,
                    compare_type=True,
                    compare_server_default=True,
                    transaction_per_migration=True,
                )
                with context.begin_transaction():
                    context.run_migrations()
                connection.commit()
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(schema)})
                connection.commit()
    finally:
        engine.dispose()


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Migrates the service's schema up to ``revision`` (creating the schema if missing)."""
    command.upgrade(config(service, url), revision)


def downgrade(service: str, url: str, revision: str) -> None:
    """Migrates the service's schema down to ``revision`` (``"base"``: no tables left)."""
    command.downgrade(config(service, url), revision)


def upgrade_all(url: str) -> None:
    """Every service at its head, each in the schema named after it (``url`` must carry no schema)."""
    if schema_of(url):
        raise ValueError("upgrade_all puts each service in its own schema: give a URL without ?schema=")
    for service in SERVICES:
        upgrade(service, url)


def _current_in(connection: Connection, schema: str) -> str | None:
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    revisions = context.get_current_heads()
    return ",".join(revisions) if revisions else None


def current(service: str, url: str) -> str | None:
    """The revision the service's schema is at (None: never migrated, or downgraded to base)."""
    schema = schema_for(service, url)
    engine = postgresql_engine(url, schema, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return _current_in(connection, schema)
    finally:
        engine.dispose()


def check(service: str, url: str) -> list[Any]:
    """Differences between the service's models and its schema (``[]`` when they match)."""
    schema = schema_for(service, url)
    engine = postgresql_engine(url, schema, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": VERSION_TABLE,
                    "version_table_schema": schema,
                    "include_name": _include_name,
                    "compare_type": True,
                    "compare_server_default": True,
                    "target_metadata": target_metadata(service),
                },
            )
            return list(compare_metadata(context, target_metadata(service)))
    finally:
        engine.dispose()


def revision(service: str, url: str, message: str, *, autogenerate: bool = True) -> Path:
    """Writes the next numbered revision (``000N_<slug>.py``) from the models' difference to the
    schema at ``url`` (which must be at head). Review the file before committing it."""
    location = script_location(service)
    numbers = [
        int(m.group(1)) for p in (location / "versions").glob("*.py") if (m := re.match(r"(\d{4})_", p.name))
    ]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    script = command.revision(config(service, url), message=message, autogenerate=autogenerate, rev_id=rev_id)
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic did not write exactly one revision")
    return Path(script.path)


def require_head(db: Database, metadata: MetaData) -> None:
    """Raises RuntimeError unless ``db``'s schema is at the head of the service owning ``metadata``."""
    service = next((s for s in SERVICES if target_metadata(s) is metadata), None)
    if service is None:
        raise RuntimeError("these tables belong to no annocloud service; cannot check their migrations")
    schema = db.schema or service
    expected = heads(service)
    with db.engine.connect() as connection:
        found = _current_in(connection, schema)
    if found is None or sorted(found.split(",")) != sorted(expected):
        raise RuntimeError(
            f"the {service} schema {schema!r} is at revision {found or '(none)'} but this code needs "
            f"{','.join(expected)}: run `annocloud migrate {service}` against this database first"
        )
