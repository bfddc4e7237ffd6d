"""Hostile archives and file names are refused with INVALID_ARGUMENT and a ZIP_* / UNSAFE_* reason."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.safety import MIB, SafeZip, safe_file_name
from formats_support import make_zip


def _refused(source: io.BytesIO, **caps: float) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        SafeZip(source, **caps)  # type: ignore[arg-type]
    return err.value


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:/windows/x.txt", "c:evil", "a\\..\\b.txt"]
)
def test_zip_slip_names_are_refused(name: str) -> None:
    """Entries that climb out, are absolute, carry a drive letter or backslashes refuse the archive."""
    error = _refused(make_zip({"ok.txt": "x", name: "boom"}))
    assert error.reason == "ZIP_UNSAFE_PATH"
    assert "not allowed" in error.message


def test_symlink_entries_are_refused() -> None:
    """A zip entry with the Unix symlink mode bit is ZIP_SYMLINK, even with a harmless name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link.jpg")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    assert _refused(buffer).reason == "ZIP_SYMLINK"


def test_nested_archives_are_refused_by_name_and_by_content() -> None:
    """A .zip inside the zip is refused when opened; a zip disguised as .jpg when it is read."""
    inner = make_zip({"a.txt": "x"}).getvalue()
    assert _refused(make_zip({"inner.zip": inner})).reason == "ZIP_NESTED_ARCHIVE"
    with SafeZip(make_zip({"photo.jpg": inner})) as archive, pytest.raises(InvalidArgument) as err:
        archive.read("photo.jpg", max_bytes=MIB)
    assert err.value.reason == "ZIP_NESTED_ARCHIVE"


def test_too_many_entries_is_refused() -> None:
    """More entries than max_entries refuses the archive before anything is read."""
    source = make_zip({f"f{i}.txt": "x" for i in range(11)})
    assert _refused(source, max_entries=10).reason == "ZIP_TOO_MANY_ENTRIES"


def test_total_and_entry_size_caps() -> None:
    """Declared sizes over the per-entry or total cap are refused up front."""
    source = make_zip({"a.bin": b"x" * 600, "b.bin": b"y" * 600})
    assert _refused(source, max_entry_bytes=500).reason == "ZIP_ENTRY_TOO_LARGE"
    source.seek(0)
    assert _refused(source, max_total_bytes=1000).reason == "ZIP_TOO_LARGE"


def test_compression_ratio_bomb_is_refused() -> None:
    """Two MiB of zeros compress about 1000:1, past the default 100:1 ratio cap."""
    assert _refused(make_zip({"zeros.bin": bytes(2 * MIB)})).reason == "ZIP_BOMB"


def test_lying_header_is_caught_while_streaming() -> None:
    """An entry whose header understates its size cannot inflate past the declared size."""
    buffer = make_zip({"a.txt": b"A" * 5000})
    raw = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        info = archive.getinfo("a.txt")
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (100).to_bytes(4, "little")
    local = info.header_offset
    raw[local + 22 : local + 26] = (100).to_bytes(4, "little")
    with SafeZip(io.BytesIO(bytes(raw))) as archive, pytest.raises(InvalidArgument) as err:
        archive.read("a.txt", max_bytes=MIB)
    assert err.value.reason in ("ZIP_INVALID", "ZIP_ENTRY_TOO_LARGE")


def test_duplicate_and_garbage_archives() -> None:
    """Two entries with one name, and bytes that are no zip, are refused with clear reasons."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "1")
        archive.writestr("./a.txt", "2")
    buffer.seek(0)
    assert _refused(buffer).reason == "ZIP_DUPLICATE_ENTRY"
    assert _refused(io.BytesIO(b"not a zip at all")).reason == "ZIP_INVALID"


def test_entries_stream_and_small_reads_are_capped() -> None:
    """Entries are read as streams in chunks; read() refuses an entry over its max_bytes."""
    with SafeZip(make_zip({"dir/": b"", "dir/a.txt": b"line1\nline2\n", "b.txt": b"x" * 100})) as archive:
        assert archive.names() == ["dir/a.txt", "b.txt"]
        with archive.open("dir/a.txt") as stream:
            assert stream.readline() == b"line1\n"
            assert stream.read(3) == b"lin"
        with pytest.raises(InvalidArgument) as err:
            archive.read("b.txt", max_bytes=10)
        assert err.value.reason == "FILE_TOO_LARGE"
        with pytest.raises(InvalidArgument) as err:
            archive.open("missing.txt")
        assert err.value.reason == "ZIP_MISSING_ENTRY"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.jpg", "a.jpg"), ("./dir//b.png", "dir/b.png"), ("images/x y.jpg", "images/x y.jpg")],
)
def test_safe_file_names_are_normalised(name: str, expected: str) -> None:
    """Harmless relative names come back without ./ and doubled slashes."""
    assert safe_file_name(name) == expected


@pytest.mark.parametrize(
    "name", ["", "  ", "../a.jpg", "a/../../b", "/abs.jpg", "D:\\x.jpg", "a\x00.jpg", ".", "x" * 2000]
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    """Traversal, absolute, drive, NUL, empty and overlong names are UNSAFE_FILE_NAME."""
    with pytest.raises(InvalidArgument) as err:
        safe_file_name(name)
    assert err.value.reason == "UNSAFE_FILE_NAME"
