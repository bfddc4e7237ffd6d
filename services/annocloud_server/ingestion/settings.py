"""Ingestion settings, read once from the environment when the component starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class IngestionSettings:
    """Limits of the ingestion service."""

    max_upload_bytes: int = 50 * MIB
    """Largest upload or fetched URL body (``ANNOCLOUD_MAX_UPLOAD_BYTES``)."""
    max_image_pixels: int = 40_000_000
    """Largest width*height decoded; more is a decompression bomb (``ANNOCLOUD_MAX_IMAGE_PIXELS``)."""
    max_import_bytes: int = 4 * 1024 * MIB
    """Largest import upload, archive or label file (``ANNOCLOUD_MAX_IMPORT_BYTES``)."""
    max_import_entries: int = 100_000
    """Most entries an import zip may have (``ANNOCLOUD_MAX_IMPORT_ENTRIES``)."""
    allowed_private_hosts: frozenset[str] = frozenset()
    """Hosts, IPs or ``ip:port`` pairs URL fetches may reach although they are private or loopback
    (``ANNOCLOUD_INGEST_ALLOWED_PRIVATE_HOSTS``, comma separated). Cloud metadata stays refused."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestionSettings:
        source = os.environ if env is None else env
        hosts = source.get("ANNOCLOUD_INGEST_ALLOWED_PRIVATE_HOSTS", "")
        return cls(
            max_upload_bytes=_positive_int(source, "ANNOCLOUD_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_image_pixels=_positive_int(source, "ANNOCLOUD_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_import_bytes=_positive_int(source, "ANNOCLOUD_MAX_IMPORT_BYTES", cls.max_import_bytes),
            max_import_entries=_positive_int(source, "ANNOCLOUD_MAX_IMPORT_ENTRIES", cls.max_import_entries),
            allowed_private_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        )


def _positive_int(source: Mapping[str, str], key: str, default: int) -> int:
    raw = source.get(key, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {raw!r}")
    return value
