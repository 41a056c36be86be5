"""The one in-memory form every logger file is read into.

Rows stay bytes: ``data[starts[i]:ends[i]]`` is row i as a TOA5 data line without its line
terminator (``"2026-11-20 00:30:00",42,1.5,"NAN"``). For TOA5 files ``data`` is the file
itself, so merging and gap filling copy long runs of original bytes and parse only the
timestamps; TOB1 and .ghg readers render their rows into the same form.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from stationflow.errors import PermanentError

NS = 1_000_000_000


@dataclass(frozen=True)
class Issue:
    """A problem found in an input, located by file and line."""

    level: Literal["warning", "error"]
    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line if self.line is not None else '-'}: {self.message}"


class UnreadableFragment(PermanentError):
    """The whole file cannot be used (empty, no valid header, not the format it claims)."""

    def __init__(self, source: str, reason: str, line: int | None = None):
        self.source, self.reason, self.line = source, reason, line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Header:
    """What a logger file says about itself."""

    format: Literal["TOA5", "TOB1", "GHG"]
    environment: tuple[str, ...]  # TOA5 line 1 after the format: station, model, serial, ...
    fields: tuple[str, ...]  # column names; TIMESTAMP first
    units: tuple[str, ...]
    processing: tuple[str, ...]
    stamping: Literal["end", "start"] = "end"  # logger tables stamp the END of an interval
    declared_interval_ns: int | None = None  # from the file itself (TOB1 table, .ghg metadata)
    raw: bytes = b""  # the header exactly as in the source

    @property
    def table_name(self) -> str:
        return self.environment[6] if len(self.environment) > 6 else ""

    @property
    def column_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Two fragments merge only when this is equal (a new column set is a new file)."""
        return self.fields, self.units

    def toa5_lines(self) -> list[bytes]:
        """The four TOA5 header lines (without terminators), as the logger writes them."""

        def q(values: tuple[str, ...]) -> bytes:
            return ",".join('"' + v.replace('"', '""') + '"' for v in values).encode()

        return [q(("TOA5", *self.environment)), q(self.fields), q(self.units), q(self.processing)]


class SourceChanged(PermanentError):
    """A released table's file changed before its rows were copied: refuse, never mix."""


@dataclass
class Table:
    """One fragment, read: header, rows as byte ranges, timestamps, source lines, issues.

    A table whose ``data`` is its file's bytes can ``release`` them after parsing; rows are
    then read back from the file (landing copies are immutable; a change is refused), so a
    day of fragments is never held in memory all at once.
    """

    source: str
    header: Header
    data: bytes
    starts: np.ndarray  # int64 offset of each row in data
    ends: np.ndarray  # int64 end of each row (exclusive, terminator not included)
    ts: np.ndarray  # int64 ns since 1970-01-01 of the logger's clock (local standard time)
    lines: np.ndarray  # int64 1-based line (or record) number of each row in the source
    issues: list[Issue] = field(default_factory=list)
    crlf: bool = True  # rows in data end with CRLF (runs can then be copied verbatim)

    def __len__(self) -> int:
        return len(self.ts)

    path: Path | None = None
    _stat: tuple[int, int] | None = None
    _fh: object = None

    def row(self, i: int) -> bytes:
        return self.block(int(self.starts[i]), int(self.ends[i]))

    def release(self, path: Path) -> None:
        """Drop the bytes in memory; they are ``path``'s and will be read back from it."""
        st = os.stat(path)
        if st.st_size != len(self.data):
            raise SourceChanged(f"{path}: changed while it was read")
        self.path, self._stat, self.data = Path(path), (st.st_size, st.st_mtime_ns), b""

    def block(self, a: int, b: int) -> bytes:
        """Bytes a..b of the source, from memory or from the file."""
        if self.path is None:
            return self.data[a:b]
        if self._fh is None:
            st = os.stat(self.path)
            if (st.st_size, st.st_mtime_ns) != self._stat:
                raise SourceChanged(f"{self.path}: changed since it was read; assemble again")
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open while rows are copied
        return os.pread(self._fh.fileno(), b - a, a)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def issue(self, level: Literal["warning", "error"], line: int | None, message: str) -> None:
        self.issues.append(Issue(level, self.source, line, message))
