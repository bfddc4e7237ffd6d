"""Alembic migrations of the export service's PostgreSQL schema (see annocloud_server.common.migrations)."""
