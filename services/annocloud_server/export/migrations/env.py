"""Alembic environment of the export service: its models, its schema, its version table."""

from annocloud_server.common.migrations import run_env

run_env("export")
