"""Alembic migrations of the annotations service's PostgreSQL schema (see annocloud_server.common.migrations)."""
