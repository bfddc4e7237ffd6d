"""Revisions of the tasks schema, numbered 0001, 0002, ... (Alembic skips this file)."""
