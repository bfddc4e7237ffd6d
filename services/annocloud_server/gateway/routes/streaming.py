"""Server-streaming gRPC reads as HTTP streaming bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import grpc


class _Chunk(Protocol):
    chunk: bytes


def first_and_rest(call: grpc.CallIterator[Any]) -> tuple[Any | None, Iterator[bytes]]:
    """Reads the first message now (so errors become proper HTTP statuses) and streams the rest.

    The rest cancels the gRPC call if the HTTP client goes away.
    """
    try:
        first = next(iter(call))
    except StopIteration:
        return None, iter(())

    def rest() -> Iterator[bytes]:
        try:
            if first.chunk:
                yield first.chunk
            for message in call:
                if message.chunk:
                    yield message.chunk
        finally:
            # Instrumented channels (OpenTelemetry) hand back a plain generator without cancel().
            cancel = getattr(call, "cancel", None)
            if cancel is not None:
                cancel()

    return first, rest()
