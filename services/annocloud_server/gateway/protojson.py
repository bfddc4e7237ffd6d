"""Proto JSON in and out: snake_case field names, unknown fields rejected, int64 as numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from annocloud_server.gateway.errors import bad_request

M = TypeVar("M", bound=Message)

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_ID = re.compile(ID_PATTERN)


def to_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready dict: proto field names, every field printed, int64 unquoted."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def unwrap(response: Message) -> dict[str, Any]:
    """The resource of a response that carries exactly one message field; else the whole response."""
    fields = response.DESCRIPTOR.fields
    if len(fields) == 1 and fields[0].message_type is not None and not _is_repeated(fields[0]):
        return to_dict(getattr(response, fields[0].name))
    return to_dict(response)


def _is_repeated(field: Any) -> bool:
    return bool(getattr(field, "is_repeated", False) or getattr(field, "label", 0) == 3)


def parse(body: Any, message_class: type[M], *, what: str = "body") -> M:
    """``body`` (decoded JSON) parsed into ``message_class``; 400 BAD_REQUEST_BODY when it does not fit."""
    if not isinstance(body, Mapping):
        raise bad_request("BAD_REQUEST_BODY", f"{what} must be a JSON object")
    message = message_class()
    try:
        json_format.ParseDict(dict(body), message, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise bad_request("BAD_REQUEST_BODY", f"{what}: {exc}") from exc
    return message


def split_body(body: Any, allowed: set[str], *, what: str = "body") -> dict[str, Any]:
    """``body`` as a dict with only ``allowed`` keys (400 on anything else)."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise bad_request("BAD_REQUEST_BODY", f"{what} must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(
            "BAD_REQUEST_BODY",
            f"{what} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
        )
    return dict(body)


def string_field(body: Mapping[str, Any], key: str, *, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_request("BAD_REQUEST_BODY", f"{key} must be a string")
    return value


def resource_ref(value: str, collection: str, *, field: str) -> str:
    """A full resource name from ``datasets/abc`` or a bare ``abc``; 400 when malformed."""
    ident = value[len(collection) + 1 :] if value.startswith(collection + "/") else value
    if not _ID.match(ident):
        raise bad_request(
            "BAD_RESOURCE_NAME", f"{field} must be {collection}/{{id}} with id matching {ID_PATTERN}"
        )
    return f"{collection}/{ident}"


def enum_value(enum: Any, value: str | None, *, prefix: str, field: str) -> int:
    """An enum number from ``QUEUED``, ``queued`` or ``TASK_STATE_QUEUED``; 0 when absent."""
    if value is None or value == "":
        return 0
    name = value.upper()
    if not name.startswith(prefix):
        name = prefix + name
    names: list[str] = list(enum.keys())
    if name not in names or name == prefix + "UNSPECIFIED":
        choices = ", ".join(k[len(prefix) :] for k in names if not k.endswith("_UNSPECIFIED"))
        raise bad_request("BAD_ENUM_VALUE", f"{field} must be one of {choices}")
    return int(enum.Value(name))


_ITEM = re.compile(r"^datasets/[a-z0-9][a-z0-9-]{0,62}/items/[a-z0-9][a-z0-9-]{0,62}$")


def item_name(value: str | None, *, field: str = "item") -> str:
    """A validated ``datasets/{d}/items/{i}`` name ("" when absent); 400 when malformed."""
    if not value:
        return ""
    if not _ITEM.match(value):
        raise bad_request("BAD_RESOURCE_NAME", f"{field} must be datasets/{{dataset}}/items/{{item}}")
    return value
