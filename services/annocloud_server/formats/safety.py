"""Hostile archives and file names: a zip reader that refuses what could hurt, before reading it.

:class:`SafeZip` checks the whole central directory when it is opened (paths, symlinks, nested
archives, entry count, declared sizes and compression ratios) and then counts the bytes it really
inflates while an entry is streamed, so a lying header cannot get past the caps either. Every
refusal is an :class:`InvalidArgument` with a ``ZIP_*`` reason.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from types import TracebackType
from typing import IO, Protocol

from annocloud_server.common.errors import InvalidArgument

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MAX_ENTRIES = 100_000
MAX_TOTAL_BYTES = 20 * GIB
MAX_ENTRY_BYTES = 4 * GIB
MAX_RATIO = 100.0
RATIO_FLOOR_BYTES = 1 * MIB
"""Entries smaller than this are not ratio-checked (tiny text files compress very well)."""
MAX_FILE_NAME_CHARS = 1024

NESTED_ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".jar", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".lz4", ".lzma"}
)
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"Rar!")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ByteStream(Protocol):
    """What importers read from: a binary stream (a file, ``io.BytesIO``, a zip entry)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


def _unsafe(name: str, why: str, reason: str = "UNSAFE_FILE_NAME") -> InvalidArgument:
    return InvalidArgument(f"file name {name[:200]!r} is not allowed: {why}", reason=reason)


def safe_file_name(name: str, *, reason: str = "UNSAFE_FILE_NAME") -> str:
    """``name`` as a relative POSIX path that cannot leave its folder, or INVALID_ARGUMENT.

    Refused: empty names, absolute paths, drive letters, backslashes, ``..`` segments, control
    characters (NUL included) and names longer than 1024 characters. ``./`` segments and doubled
    slashes are dropped.
    """
    if not name or not name.strip():
        raise _unsafe(name, "it is empty", reason)
    if len(name) > MAX_FILE_NAME_CHARS:
        raise _unsafe(name, f"longer than {MAX_FILE_NAME_CHARS} characters", reason)
    if _CONTROL.search(name):
        raise _unsafe(name, "it contains a control character", reason)
    if "\\" in name:
        raise _unsafe(name, "backslashes are not path separators here", reason)
    if name.startswith("/") or _DRIVE.match(name):
        raise _unsafe(name, "it is an absolute path", reason)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(name, "it climbs out of its folder (..)", reason)
    if not parts:
        raise _unsafe(name, "it names no file", reason)
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def is_archive_name(name: str) -> bool:
    return PurePosixPath(name.lower()).suffix in NESTED_ARCHIVE_SUFFIXES


class EntryStream:
    """Streams one entry, refusing it once it inflates past its cap or the archive's total cap."""

    def __init__(self, raw: IO[bytes], name: str, owner: SafeZip):
        self._raw = raw
        self._name = name
        self._owner = owner
        self._read = 0
        self._checked_magic = False

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._raw.read(size)
        except zipfile.BadZipFile as exc:
            raise InvalidArgument(f"{self._name!r} is corrupt ({exc})", reason="ZIP_INVALID") from exc
        if not self._checked_magic and data:
            self._checked_magic = True
            if data.startswith(_ARCHIVE_MAGIC):
                raise InvalidArgument(
                    f"{self._name!r} is itself an archive; nested archives are not accepted",
                    reason="ZIP_NESTED_ARCHIVE",
                )
        self._read += len(data)
        self._owner.account(self._name, len(data), self._read)
        return data

    def readline(self, size: int = -1, /) -> bytes:
        try:
            line = self._raw.readline(size)
        except zipfile.BadZipFile as exc:
            raise InvalidArgument(f"{self._name!r} is corrupt ({exc})", reason="ZIP_INVALID") from exc
        self._read += len(line)
        self._owner.account(self._name, len(line), self._read)
        return line

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> EntryStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SafeZip:
    """A zip archive opened for reading, refused as a whole when any entry is hostile.

    Caps are keyword arguments; the defaults suit a media upload of a few GiB.
    """

    def __init__(
        self,
        source: str | IO[bytes],
        *,
        max_entries: int = MAX_ENTRIES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        max_ratio: float = MAX_RATIO,
        allow_nested_archives: bool = False,
    ):
        self.max_entries = max_entries
        self.max_total_bytes = max_total_bytes
        self.max_entry_bytes = max_entry_bytes
        self.max_ratio = max_ratio
        self._allow_nested = allow_nested_archives
        self._inflated = 0
        try:
            self._zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
            raise InvalidArgument(f"not a readable zip archive ({exc})", reason="ZIP_INVALID") from exc
        try:
            self._entries = self._check_directory()
        except Exception:
            self._zip.close()
            raise

    def _check_directory(self) -> dict[str, zipfile.ZipInfo]:
        infos = self._zip.infolist()
        if len(infos) > self.max_entries:
            raise InvalidArgument(
                f"the archive has {len(infos)} entries, more than {self.max_entries}",
                reason="ZIP_TOO_MANY_ENTRIES",
            )
        entries: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = safe_file_name(info.filename, reason="ZIP_UNSAFE_PATH")
            if _is_symlink(info):
                raise InvalidArgument(f"{name!r} is a symbolic link", reason="ZIP_SYMLINK")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise InvalidArgument(f"{name!r} is encrypted", reason="ZIP_ENCRYPTED")
            if not self._allow_nested and is_archive_name(name):
                raise InvalidArgument(
                    f"{name!r} is itself an archive; nested archives are not accepted",
                    reason="ZIP_NESTED_ARCHIVE",
                )
            if name in entries:
                raise InvalidArgument(f"{name!r} appears twice in the archive", reason="ZIP_DUPLICATE_ENTRY")
            self._check_sizes(name, info)
            total += info.file_size
            if total > self.max_total_bytes:
                raise InvalidArgument(
                    f"the archive inflates to more than {self.max_total_bytes} bytes", reason="ZIP_TOO_LARGE"
                )
            entries[name] = info
        return entries

    def _check_sizes(self, name: str, info: zipfile.ZipInfo) -> None:
        if info.file_size > self.max_entry_bytes:
            raise InvalidArgument(
                f"{name!r} inflates to {info.file_size} bytes, more than {self.max_entry_bytes}",
                reason="ZIP_ENTRY_TOO_LARGE",
            )
        if info.file_size >= RATIO_FLOOR_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > self.max_ratio:
                raise InvalidArgument(
                    f"{name!r} has a compression ratio of {ratio:.0f}:1, more than {self.max_ratio:.0f}:1"
                    " (zip bomb?)",
                    reason="ZIP_BOMB",
                )

    def account(self, name: str, delta: int, entry_total: int) -> None:
        """Called by entry readers for every chunk inflated."""
        self._inflated += delta
        info = self._entries[name]
        if entry_total > self.max_entry_bytes or entry_total > info.file_size:
            raise InvalidArgument(f"{name!r} inflates past its declared size", reason="ZIP_ENTRY_TOO_LARGE")
        if entry_total >= RATIO_FLOOR_BYTES and entry_total / max(info.compress_size, 1) > self.max_ratio:
            raise InvalidArgument(f"{name!r} inflates past the allowed compression ratio", reason="ZIP_BOMB")
        if self._inflated > self.max_total_bytes:
            raise InvalidArgument(
                f"the archive inflates to more than {self.max_total_bytes} bytes", reason="ZIP_TOO_LARGE"
            )

    def names(self) -> list[str]:
        """Safe names of the file entries, in archive order (directories left out)."""
        return list(self._entries)

    def size(self, name: str) -> int:
        return self._entries[name].file_size

    def open(self, name: str) -> EntryStream:
        """A stream of one entry (``name`` as :meth:`names` gives it)."""
        info = self._entries.get(name)
        if info is None:
            raise InvalidArgument(f"the archive has no file {name!r}", reason="ZIP_MISSING_ENTRY")
        try:
            raw = self._zip.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
            raise InvalidArgument(f"{name!r} cannot be read ({exc})", reason="ZIP_INVALID") from exc
        return EntryStream(raw, name, self)

    def read(self, name: str, *, max_bytes: int) -> bytes:
        """A whole entry, refused with ``FILE_TOO_LARGE`` when it is larger than ``max_bytes``."""
        if self.size(name) > max_bytes:
            raise InvalidArgument(
                f"{name!r} is {self.size(name)} bytes, more than {max_bytes}", reason="FILE_TOO_LARGE"
            )
        with self.open(name) as stream:
            return stream.read()

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
