"""Alembic migrations of the ingestion service's PostgreSQL schema (see annocloud_server.common.migrations)."""
