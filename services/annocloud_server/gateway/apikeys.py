"""API keys kept as sha256 hashes in a JSON file (``api_keys.json`` in the data directory).

The plaintext key (``ak_`` + 32 random url-safe bytes) is shown once by :meth:`ApiKeyStore.create_key`
and never stored. Looking a key up hashes it and reads the map; the file is re-read when another
process (``annocloud keys create``) changed it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from annocloud.common.v1 import common_pb2

KEY_PREFIX = "ak_"
FILE_NAME = "api_keys.json"

ROLE_ALIASES: dict[str, int] = {
    "admin": common_pb2.ROLE_ORG_ADMIN,
    "manager": common_pb2.ROLE_PROJECT_MANAGER,
    "reviewer": common_pb2.ROLE_REVIEWER,
    "annotator": common_pb2.ROLE_ANNOTATOR,
    "vendor-admin": common_pb2.ROLE_VENDOR_ADMIN,
    "vendor-worker": common_pb2.ROLE_VENDOR_WORKER,
}

_ORG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def parse_role(role: str | int) -> int:
    """A role from a short alias (``admin``), an enum name (``ROLE_ORG_ADMIN``) or its number."""
    if isinstance(role, int):
        if role not in common_pb2.Role.values() or role == common_pb2.ROLE_UNSPECIFIED:
            raise ValueError(f"unknown role {role}")
        return role
    if role.lower() in ROLE_ALIASES:
        return ROLE_ALIASES[role.lower()]
    name = role.upper()
    if not name.startswith("ROLE_"):
        name = "ROLE_" + name
    if name not in list(common_pb2.Role.keys()) or name == "ROLE_UNSPECIFIED":
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLE_ALIASES)}")
    return common_pb2.Role.Value(name)


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class ApiKeyStore:
    """Hashed API keys → principals, in one JSON file written atomically."""

    def __init__(self, path: Path):
        self._path = path if path.suffix == ".json" else path / FILE_NAME
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None

    @property
    def path(self) -> Path:
        return self._path

    def _reload_if_changed(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        data = json.loads(self._path.read_text(encoding="utf-8") or "{}")
        keys = data.get("keys", {}) if isinstance(data, dict) else {}
        self._keys = {k: v for k, v in keys.items() if isinstance(v, dict)}
        self._stamp = stamp

    def _write(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"keys": self._keys}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".api_keys.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        stat = self._path.stat()
        self._stamp = (stat.st_mtime_ns, stat.st_size)

    def create_key(self, organization_id: str, subject: str, roles: Sequence[str | int]) -> str:
        """Stores a new key for the principal and returns its plaintext (shown once)."""
        if not _ORG.match(organization_id):
            raise ValueError(f"organization id {organization_id!r} must match {_ORG.pattern}")
        if not subject or len(subject) > 200:
            raise ValueError("subject must be 1 to 200 characters")
        parsed = sorted({parse_role(r) for r in roles})
        if not parsed:
            raise ValueError("at least one role is required")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._reload_if_changed()
            self._keys[_hash(plaintext)] = {
                "organization_id": organization_id,
                "subject": subject,
                "roles": [common_pb2.Role.Name(r) for r in parsed],  # type: ignore[arg-type]
                "create_time": datetime.now(UTC).isoformat(),
            }
            self._write()
        return plaintext

    def lookup(self, plaintext: str) -> common_pb2.Principal | None:
        """The principal of a key, or None when the key is unknown."""
        if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
            return None
        with self._lock:
            self._reload_if_changed()
            entry = self._keys.get(_hash(plaintext))
        if entry is None:
            return None
        roles = [
            common_pb2.Role.Value(r) for r in entry.get("roles", []) if r in list(common_pb2.Role.keys())
        ]
        return common_pb2.Principal(
            organization_id=str(entry.get("organization_id", "")),
            subject=str(entry.get("subject", "")),
            roles=roles,
        )
