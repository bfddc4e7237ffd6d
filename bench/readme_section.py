"""The one way benches write their figures into bench/README.md: a section between its markers."""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).with_name("README.md")


def write_section(section: str, *, begin: str, end: str, readme: Path = README) -> None:
    """Replaces the text from ``begin`` to ``end`` (markers included in ``section``), or appends it."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    readme.write_text(text)
    print(f"wrote {readme}", file=sys.stderr)


class Tee:
    """Copies what is printed to stdout from ``start()`` until ``stop()`` (which returns it), so a
    bench can print its tables and save the same text as its README section."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._stdout = sys.stdout

    def write(self, text: str) -> int:
        self._parts.append(text)
        return self._stdout.write(text)

    def flush(self) -> None:
        self._stdout.flush()

    def start(self) -> Tee:
        self._stdout = sys.stdout
        sys.stdout = self  # type: ignore[assignment]
        return self

    def stop(self) -> str:
        sys.stdout = self._stdout
        return "".join(self._parts)
