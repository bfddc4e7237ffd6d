"""Content-addressed blob storage behind one interface (local filesystem now, S3 in the cluster)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
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


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
        raise InvalidArgument(f"bad blob key {key!r}", reason="BAD_BLOB_KEY")
    return key


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
        tmp, sha, size = self._write(chunks, None)
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return sha, size

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
