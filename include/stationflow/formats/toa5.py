"""Campbell TOA5 (ASCII table) reader.

The body is never decoded: line boundaries and per-row comma counts come from numpy in
bounded chunks, and only the quoted timestamp of each row is parsed. Rows stay byte ranges
of the original file, which is kept whole in the returned Table.
"""

from __future__ import annotations

import csv
import io
import mmap
from pathlib import Path

import numpy as np

from stationflow.formats.table import Header, Table, UnreadableFragment
from stationflow.formats.timestamps import format_toa5, parse_quoted

CHUNK = 1 << 24  # bytes scanned at once: bounds the temporaries, whatever the file size
COMMA_CHUNK = 1 << 22  # reduceat casts its input to int32: 4 MB of row bytes -> 16 MB
MAX_LISTED = 20  # bad lines named one by one per kind; the rest are counted


def _header(data: bytes, source: str) -> tuple[Header, int]:
    """Parse the 4 header lines; returns the header and the offset of the first data row."""
    offset, lines = 0, []
    for n in range(4):
        end = data.find(b"\n", offset)
        if end < 0:
            raise UnreadableFragment(source, f"header ends early: {n} of 4 lines", n + 1)
        lines.append(data[offset:end].rstrip(b"\r"))
        offset = end + 1
    try:
        rows = [next(csv.reader([ln.decode("utf-8")])) for ln in lines]
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise UnreadableFragment(source, f"header is not TOA5 text ({exc})", 1) from exc
    env, fields, units, processing = rows
    if not env or env[0] != "TOA5":
        raise UnreadableFragment(source, f"not a TOA5 file (first field {env[:1]})", 1)
    if not fields or fields[0] != "TIMESTAMP":
        raise UnreadableFragment(source, "first column must be TIMESTAMP", 2)
    for n, row in ((3, units), (4, processing)):
        if len(row) != len(fields):
            raise UnreadableFragment(
                source, f"{len(row)} header values, expected {len(fields)} (one per column)", n
            )
    header = Header(
        format="TOA5",
        environment=tuple(env[1:]),
        fields=tuple(fields),
        units=tuple(units),
        processing=tuple(processing),
        stamping="end",
        raw=data[:offset],
    )
    return header, offset


def _line_ends(buf: np.ndarray, begin: int) -> np.ndarray:
    """Offsets of every LF from ``begin`` on, found chunk by chunk."""
    found = []
    for a in range(begin, len(buf), CHUNK):
        found.append(np.flatnonzero(buf[a : a + CHUNK] == 10) + a)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def _comma_counts(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Commas in each row: one pass of reduceat over row-aligned chunks of rows.

    Segment i runs from row i's start to row i+1's start: its terminator holds no comma.
    """
    counts = np.zeros(len(starts), dtype=np.int64)
    i, n = 0, len(starts)
    while i < n:
        j = max(int(np.searchsorted(starts, starts[i] + COMMA_CHUNK, side="left")), i + 1)
        lo, hi = int(starts[i]), int(ends[j - 1]) + 1
        counts[i:j] = np.add.reduceat(buf[lo:hi] == 44, starts[i:j] - lo, dtype=np.int32)
        i = j
    return counts


def _precise_count(row: bytes) -> int:
    """Values in a row the way csv reads them (a quoted string may hold a comma)."""
    try:
        return len(next(csv.reader(io.StringIO(row.decode("utf-8", "replace")))))
    except (csv.Error, StopIteration):
        return -1


def read_toa5(path: str | Path | bytes | mmap.mmap, source: str | None = None) -> Table:
    """Read a TOA5 file (CRLF or LF). Bad rows are reported with their line, never kept."""
    if isinstance(path, bytes | mmap.mmap):
        data, source = path, source or "<bytes>"
    else:
        data, source = Path(path).read_bytes(), source or str(path)
    if not data:
        raise UnreadableFragment(source, "empty file")
    header, body = _header(data, source)
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = _line_ends(buf, body)
    starts = np.concatenate(([body], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [len(data)])).astype(np.int64)
    lines = np.arange(5, 5 + len(starts), dtype=np.int32)
    truncated = starts[-1] < len(data)  # bytes after the last LF: a row still being written
    if not truncated:  # the file ends with a line end: no row after it
        starts, ends, lines = starts[:-1], ends[:-1], lines[:-1]
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - has_cr
    crlf = bool(has_cr[: len(has_cr) - int(truncated)].all()) if len(has_cr) else True

    table = Table(source, header, data, starts, ends, np.empty(0, np.int64), lines, crlf=crlf)
    blank = ends == starts
    ts, ok, _ = parse_quoted(buf, starts, ends)
    commas = _comma_counts(buf, starts, ends)
    want = len(header.fields)
    suspect = np.flatnonzero(ok & (commas != want - 1))
    width_ok = np.ones(len(starts), dtype=bool)
    for i in suspect:  # rare: recount properly, a quoted string may contain a comma
        width_ok[i] = _precise_count(data[starts[i] : ends[i]]) == want

    if truncated and len(starts):
        table.issue(
            "warning",
            int(lines[-1]),
            "truncated last line (no line end): not used;"
            " it will be read complete from the next collection",
        )
        ok[-1] = False
    _report(table, np.flatnonzero(blank), "warning", "empty line")
    _report(
        table,
        np.flatnonzero(~ok & ~blank & (np.arange(len(ok)) != len(ok) - truncated)),
        "error",
        "unparsable timestamp",
        show=True,
    )
    bad_width = np.flatnonzero(ok & ~width_ok)
    for i in bad_width[:MAX_LISTED]:
        n = _precise_count(data[starts[i] : ends[i]])
        table.issue("error", int(lines[i]), f"{n} values, expected {want}: row not used")
    if len(bad_width) > MAX_LISTED:
        table.issue(
            "error",
            int(lines[bad_width[MAX_LISTED]]),
            f"and {len(bad_width) - MAX_LISTED} more rows with a wrong column count",
        )

    keep = ok & width_ok
    if len(starts) and not keep.any():
        raise UnreadableFragment(source, "no readable data row", int(lines[0]))
    if not keep.all():  # the usual file has no bad row: no copies then
        starts, ends, ts, lines = starts[keep], ends[keep], ts[keep], lines[keep]
    table.starts, table.ends, table.ts, table.lines = starts, ends, ts, lines
    _check_clock(table)
    return table


def _report(table: Table, idx: np.ndarray, level, what: str, show: bool = False) -> None:
    for i in idx[:MAX_LISTED]:
        text = ""
        if show:
            raw = table.data[table.starts[i] : min(table.ends[i], table.starts[i] + 40)]
            text = f": {raw.decode('utf-8', 'replace')!r}"
        table.issue(level, int(table.lines[i]), f"{what}{text}: row not used")
    if len(idx) > MAX_LISTED:
        table.issue(
            level, int(table.lines[idx[MAX_LISTED]]), f"and {len(idx) - MAX_LISTED} more: {what}"
        )


def _check_clock(table: Table) -> None:
    """Warn where the logger clock went backwards or stood still inside one file."""
    if len(table.ts) < 2:
        return
    back = np.flatnonzero(np.diff(table.ts) <= 0) + 1
    for i in back[:MAX_LISTED]:
        prev, cur = format_toa5(table.ts[[i - 1, i]], quoted=False)
        table.issue(
            "warning",
            int(table.lines[i]),
            f"clock went back or repeated: {cur.decode()} after {prev.decode()}",
        )
    if len(back) > MAX_LISTED:
        table.issue(
            "warning",
            int(table.lines[back[MAX_LISTED]]),
            f"and {len(back) - MAX_LISTED} more rows out of time order",
        )
