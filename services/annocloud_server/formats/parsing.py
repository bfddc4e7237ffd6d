"""Strict JSON, streaming JSONL and XML through defusedxml: the only ways importers parse text.

JSON refuses NaN / Infinity, nesting deeper than 64 and documents over a byte cap; XML refuses
DTDs, entities and external references (XXE, billion laughs). Refusals are
:class:`InvalidArgument` with ``JSON_*`` / ``XML_*`` reasons; the JSONL reader reports a bad line
as a :class:`LineError` and goes on with the next.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import defusedxml.ElementTree as DET
import numpy as np
from defusedxml import DefusedXmlException

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.safety import MIB, ByteStream

MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 512 * MIB
MAX_JSONL_LINE_BYTES = 16 * MIB
MAX_XML_BYTES = 16 * MIB
_READ_CHUNK = 1 << 20

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _non_finite(token: str) -> Any:
    raise InvalidArgument(f"{token} is not a JSON number", reason="JSON_NON_FINITE")


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays/objects in ``data`` (brackets inside strings do not count)."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = _DEPTH_STEP[np.frombuffer(brackets, dtype=np.uint8)].astype(np.int32)
    return int(np.cumsum(steps).max())


_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_OUTSIDE_STRINGS = re.compile(rb'[^"]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^"]*)*', re.DOTALL)
_NON_FINITE_START = re.compile(rb"[NI]")
_QUOTE = 0x22


class StrictJsonReader:
    """A byte stream wrapper that refuses what ``loads_strict`` refuses, chunk by chunk, before an
    incremental parser sees the bytes: more than ``max_bytes`` (``JSON_TOO_LARGE``), nesting deeper
    than ``max_depth`` (``JSON_TOO_DEEP``) and ``NaN`` / ``Infinity`` (``JSON_NON_FINITE``: outside
    strings, JSON has no capital ``N`` or ``I``). Holds no more than one chunk; strings may span chunks.
    """

    def __init__(self, stream: ByteStream, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, where: str):
        self._stream = stream
        self._max_bytes = max_bytes
        self._max_depth = max_depth
        self._where = where
        self.total = 0
        self.depth = 0
        self._in_string = False
        self._escape = False

    def read(self, size: int = -1, /) -> bytes:
        """At most ``size`` bytes (one chunk when ``size`` is negative, so memory stays bounded)."""
        if size == 0:
            return b""
        data = self._stream.read(size if size > 0 else _READ_CHUNK)
        self.total += len(data)
        if self.total > self._max_bytes:
            raise InvalidArgument(
                f"{self._where} is larger than {self._max_bytes} bytes", reason="JSON_TOO_LARGE"
            )
        self._scan(data)
        return data

    def _scan(self, data: bytes) -> None:
        if not self._escape and b"\\" not in data:
            self._scan_without_escapes(data)
            return
        pos, end = 0, len(data)
        while pos < end:
            if self._escape:
                pos, self._escape = pos + 1, False
                continue
            if self._in_string:
                stop = _STRING_BODY.match(data, pos).end()  # type: ignore[union-attr]
                if stop == end:
                    return
                if data[stop] == _QUOTE:
                    self._in_string, pos = False, stop + 1
                else:  # a backslash ending the chunk escapes the next one's first byte
                    self._escape, pos = True, stop + 1
                continue
            stop = _OUTSIDE_STRINGS.match(data, pos).end()  # type: ignore[union-attr]
            self._structure(data[pos:stop])
            if stop == end:
                return
            self._in_string, pos = True, stop + 1

    def _scan_without_escapes(self, data: bytes) -> None:
        """The common case, vectorised: without backslashes every quote opens or closes a string."""
        codes = np.frombuffer(data, dtype=np.uint8)
        if not codes.size:
            return
        quotes = codes == _QUOTE
        parity = np.cumsum(quotes, dtype=np.uint8) + np.uint8(self._in_string)
        outside = ((parity & 1) == 0) & ~quotes
        if np.any(outside & ((codes == ord("N")) | (codes == ord("I")))):
            raise InvalidArgument(
                f"{self._where}: NaN / Infinity is not a JSON number", reason="JSON_NON_FINITE"
            )
        steps = np.where(outside, _DEPTH_STEP[codes], 0).astype(np.int32)
        self._check_depth(np.cumsum(steps) + self.depth)
        self._in_string = bool(parity[-1] & 1)

    def _check_depth(self, depths: np.ndarray[Any, np.dtype[np.int32]]) -> None:
        if int(depths.max()) > self._max_depth:
            raise InvalidArgument(
                f"{self._where} nests deeper than {self._max_depth} levels", reason="JSON_TOO_DEEP"
            )
        self.depth = int(depths[-1])

    def _structure(self, segment: bytes) -> None:
        """Checks text outside strings (``segment`` holds only complete strings)."""
        bare = _JSON_STRING.sub(b"", segment)
        if _NON_FINITE_START.search(bare):
            raise InvalidArgument(
                f"{self._where}: NaN / Infinity is not a JSON number", reason="JSON_NON_FINITE"
            )
        brackets = bare.translate(None, _NOT_BRACKETS)
        if not brackets:
            return
        self._check_depth(
            np.cumsum(_DEPTH_STEP[np.frombuffer(brackets, dtype=np.uint8)].astype(np.int32)) + self.depth
        )


def loads_strict(data: bytes, *, max_depth: int = MAX_JSON_DEPTH, where: str = "the document") -> Any:
    """Parses JSON bytes strictly: RFC 8259 numbers only, nesting at most ``max_depth``."""
    if json_depth(data) > max_depth:
        raise InvalidArgument(f"{where} nests deeper than {max_depth} levels", reason="JSON_TOO_DEEP")
    try:
        return json.loads(data, parse_constant=_non_finite)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.message}", reason=exc.reason) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{where} is not valid JSON ({exc})", reason="JSON_INVALID") from exc


def read_capped(stream: ByteStream, max_bytes: int, *, where: str, reason: str) -> bytes:
    """All of ``stream``, refused with ``reason`` as soon as it passes ``max_bytes``."""
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(_READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise InvalidArgument(f"{where} is larger than {max_bytes} bytes", reason=reason)
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(
    stream: ByteStream,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    where: str = "the document",
) -> Any:
    """A whole JSON document from a stream, under a size cap (``JSON_TOO_LARGE``)."""
    data = read_capped(stream, max_bytes, where=where, reason="JSON_TOO_LARGE")
    return loads_strict(data, max_depth=max_depth, where=where)


@dataclass(frozen=True)
class LineError:
    """A JSONL line that could not be read."""

    line: int
    reason: str
    message: str


def iter_jsonl(
    stream: ByteStream,
    *,
    max_line_bytes: int = MAX_JSONL_LINE_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Iterator[tuple[int, Any] | LineError]:
    """(line number, value) per non-blank line, or a :class:`LineError`; never holds two lines."""
    number = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line_bytes:
            while line and not line.endswith(b"\n"):
                line = stream.readline(_READ_CHUNK)
            yield LineError(number, "JSON_TOO_LARGE", f"line {number} is longer than {max_line_bytes} bytes")
            continue
        if not line.strip():
            continue
        try:
            yield number, loads_strict(line, max_depth=max_depth, where=f"line {number}")
        except InvalidArgument as exc:
            yield LineError(number, exc.reason, exc.message)


def _xml_error(where: str, exc: Exception) -> InvalidArgument:
    if isinstance(exc, DefusedXmlException):
        return InvalidArgument(
            f"{where}: DTDs, entities and external references are not accepted ({type(exc).__name__})",
            reason="XML_FORBIDDEN",
        )
    return InvalidArgument(f"{where} is not well-formed XML ({exc})", reason="XML_INVALID")


def parse_xml(data: bytes, *, where: str = "the document", max_bytes: int = MAX_XML_BYTES) -> ET.Element:
    """The root element of a small XML document (a VOC file), parsed by defusedxml."""
    if len(data) > max_bytes:
        raise InvalidArgument(f"{where} is larger than {max_bytes} bytes", reason="XML_TOO_LARGE")
    try:
        root: ET.Element = DET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ET.ParseError) as exc:
        raise _xml_error(where, exc) from exc
    return root


def iterparse_xml(stream: ByteStream, *, where: str = "the document") -> Iterator[tuple[str, ET.Element]]:
    """(event, element) for ``start`` and ``end`` events of a streamed XML document (CVAT)."""
    try:
        yield from DET.iterparse(
            stream, events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DefusedXmlException, ET.ParseError) as exc:
        raise _xml_error(where, exc) from exc
