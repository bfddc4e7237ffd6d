"""Alembic migrations of the tasks service's PostgreSQL schema (see annocloud_server.common.migrations)."""
