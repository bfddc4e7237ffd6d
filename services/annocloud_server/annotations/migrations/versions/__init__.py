"""Revisions of the annotations schema, numbered 0001, 0002, ... (Alembic skips this file)."""
