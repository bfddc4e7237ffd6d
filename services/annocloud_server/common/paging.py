"""Pagination and resource names shared by every List method.

Page tokens are opaque to clients (url-safe base64 of a small JSON cursor) and are rejected with
INVALID_ARGUMENT when tampered with.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Any

from annocloud_server.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The page size to use: default when 0, INVALID_ARGUMENT when negative, capped at the maximum."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="BAD_PAGE_SIZE")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_token(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    """The cursor in ``token`` ({} for an empty token)."""
    if not token:
        return {}
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN") from exc
    if not isinstance(cursor, dict):
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return cursor


def new_id() -> str:
    """A new resource id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


_SEGMENT = r"([a-z0-9][a-z0-9-]{0,62})"


def parse_name(name: str, pattern: str) -> tuple[str, ...]:
    """Split a resource name by a pattern such as ``projects/{}/tasks/{}``.

    Returns the ids in order; INVALID_ARGUMENT (with the expected shape) when it does not match.
    """
    regex = "^" + re.escape(pattern).replace(r"\{\}", _SEGMENT) + "$"
    match = re.match(regex, name or "")
    if not match:
        raise InvalidArgument(
            f"resource name {name!r} does not have the form {pattern.replace('{}', '*')}",
            reason="BAD_RESOURCE_NAME",
        )
    return match.groups()
