"""Revisions of the export schema, numbered 0001, 0002, ... (Alembic skips this file)."""
