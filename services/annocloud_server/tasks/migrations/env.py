"""Alembic environment of the tasks service: its models, its schema, its version table."""

from annocloud_server.common.migrations import run_env

run_env("tasks")
