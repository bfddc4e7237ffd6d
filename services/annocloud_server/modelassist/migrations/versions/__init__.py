"""Revisions of the qa schema, numbered 0001, 0002, ... (Alembic skips this file)."""
