"""Alembic environment of the modelassist service: its models, its schema, its version table."""

from annocloud_server.common.migrations import run_env

run_env("modelassist")
