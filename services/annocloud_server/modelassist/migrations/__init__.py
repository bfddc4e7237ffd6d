"""Alembic migrations of the qa service's PostgreSQL schema (see annocloud_server.common.migrations)."""
