"""Content-addressed blob storage behind one interface (local filesystem now, S3 in the cluster)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol

from annocloud_server.common.errors import InvalidArgument, NotFound

CHUNK = 256 * 1024


class BlobStore(Protocol):
    def put_stream(self, chunks: Iterable[bytes], *, max_bytes: int) -> tuple[str, int]:
        """Stores the bytes; returns (sha256 hex, size). INVALID_ARGUMENT past max_bytes."""
        ...

    def put_named(self, key: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Stores bytes under a caller-chosen key (export artifacts); returns (sha256, size)."""
        ...

    def open_writer(self, key: str) -> BlobWriter:
        """A chunked writer for a blob under a caller-chosen key; nothing is visible before commit."""
        ...

    def content_key(self, sha256: str) -> str:
        """The key of a content blob."""
        ...

    def delete(self, key: str) -> None:
        """Removes a blob; no error when it is absent."""
        ...

    def open(self, key: str) -> Iterator[bytes]: ...

    def path(self, key: str) -> Path:
        """Local path of a blob (for readers that need a file, e.g. image probing)."""
        ...

    def exists(self, key: str) -> bool: ...


class BlobWriter(Protocol):
    """A blob written chunk by chunk (zip files write through it): ``write`` buffers at most one
    chunk, ``commit`` publishes the blob atomically and returns (sha256 hex, size), ``abort`` (or
    leaving the ``with`` block on an exception) discards it."""

    def write(self, data: bytes) -> int: ...

    def tell(self) -> int: ...

    def flush(self) -> None: ...

    def commit(self) -> tuple[str, int]: ...

    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
        raise InvalidArgument(f"bad blob key {key!r}", reason="BAD_BLOB_KEY")
    return key


class LocalBlobWriter:
    """Chunks go straight to a hidden temp file next to the target, renamed into place on commit.

    At most ``chunk_size`` bytes are held in memory; no copy of the blob is made anywhere else.
    It has ``tell`` but no ``seek``, so :mod:`zipfile` writes through it in streaming mode.
    """

    def __init__(self, root: Path, target: Path, chunk_size: int = CHUNK):
        self._target = target
        self._chunk_size = chunk_size
        self._digest = hashlib.sha256()
        self._size = 0
        self._pending = bytearray()
        self.max_pending = 0
        """The most bytes ever held before a flush (tests check it stays under one chunk)."""
        self._done = False
        fd, self._tmp_name = tempfile.mkstemp(dir=root, prefix=".upload-")
        self._out = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> int:
        if self._done:
            raise ValueError("write to a finished blob writer")
        view = memoryview(data)
        while view:
            room = self._chunk_size - len(self._pending)
            self._pending += view[:room]
            view = view[room:]
            self.max_pending = max(self.max_pending, len(self._pending))
            if len(self._pending) >= self._chunk_size:
                self.flush()
        return len(data)

    def tell(self) -> int:
        return self._size + len(self._pending)

    def flush(self) -> None:
        if self._pending:
            self._digest.update(self._pending)
            self._out.write(self._pending)
            self._size += len(self._pending)
            self._pending.clear()

    def commit(self) -> tuple[str, int]:
        self.flush()
        self._out.close()
        self._target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp_name, self._target)
        self._done = True
        return self._digest.hexdigest(), self._size

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._out.close()
            Path(self._tmp_name).unlink(missing_ok=True)

    def __enter__(self) -> LocalBlobWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class LocalBlobStore:
    """Blobs as files under a root; content blobs at ``sha256/ab/cd/<hash>``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _write(self, chunks: Iterable[bytes], max_bytes: int | None) -> tuple[Path, str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise InvalidArgument(
                            f"content is larger than the limit of {max_bytes} bytes",
                            reason="CONTENT_TOO_LARGE",
                        )
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            os.unlink(tmp_name)
            raise
        return Path(tmp_name), digest.hexdigest(), size

    def put_stream(self, chunks: Iterable[bytes], *, max_bytes: int) -> tuple[str, int]:
        tmp, sha, size = self._write(chunks, max_bytes)
        target = self.path(f"sha256/{sha[:2]}/{sha[2:4]}/{sha}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return sha, size

    def put_named(self, key: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        with self.open_writer(key) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def open_writer(self, key: str) -> LocalBlobWriter:
        return LocalBlobWriter(self.root, self.path(key))

    def content_key(self, sha256: str) -> str:
        return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def open(self, key: str) -> Iterator[bytes]:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"blob {key} not found", reason="BLOB_NOT_FOUND")
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
