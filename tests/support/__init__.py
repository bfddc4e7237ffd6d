"""Helpers shared by several test layers (imported as ``support.<module>``; ``tests/`` is on sys.path)."""
