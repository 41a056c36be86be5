"""Write a merged, gap-filled table as an ICOS ETC file, hashing while writing.

Two layouts: ``toa5`` keeps the logger's header and rows (present rows are copied as runs
of original bytes); ``etc`` writes one header row of ICOS variable names and compact
timestamps. Both: CRLF, numbers unquoted, ``"NAN"`` written as the missing code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stationflow.formats.table import Table
from stationflow.formats.timestamps import format_compact, format_toa5, fraction_digits
from stationflow.refine.hashing import HashingWriter
from stationflow.refine.merge import Plan

CRLF = b"\r\n"
PIECE = 1 << 23  # bytes copied per write: bounds the temporaries of NAN/CRLF rewriting
FILL_CHUNK = 100_000  # fill rows rendered at once
_NOT_A_NUMBER = (b'"NAN"', b'"INF"', b'"-INF"')


def missing_text(value: float) -> bytes:
    return (str(int(value)) if float(value).is_integer() else repr(float(value))).encode()


@dataclass(frozen=True)
class Layout:
    kind: str  # "toa5" | "etc"
    columns: tuple[tuple[int, str], ...] = ()  # etc: (source column index, ICOS name)


def _runs(plan: Plan, tables: list[Table]) -> Iterator[tuple[int, int]]:
    """(first, end) indexes into the plan of maximal byte-contiguous runs, in slot order."""
    slots, tabs, rows = plan.slots, plan.tables, plan.rows
    if not len(slots):
        return
    lines = np.empty(len(rows), dtype=np.int64)
    for k, t in enumerate(tables):
        sel = tabs == k
        lines[sel] = t.lines[rows[sel]]
    brk = (np.diff(slots) != 1) | (np.diff(tabs) != 0) | (np.diff(rows) != 1)
    brk |= np.diff(lines) != 1  # a row dropped in between (bad line) breaks the run
    edges = np.concatenate(([0], np.flatnonzero(brk) + 1, [len(slots)]))
    for a, b in itertools.pairwise(edges):
        yield int(a), int(b)


def _toa5_piece(t: Table, r0: int, r1: int, missing: bytes) -> bytes:
    """Rows r0..r1 of t with their line ends (CRLF), NAN spelled as the missing code."""
    if t.crlf:  # a kept row has its terminator in the source: read it along
        block = t.block(int(t.starts[r0]), int(t.ends[r1]) + 2)
        if not block.endswith(CRLF):  # a rendered table's last row may have none
            block += CRLF
    else:
        block = t.block(int(t.starts[r0]), int(t.ends[r1]) + 1)
        block = block.replace(CRLF, b"\n").replace(b"\n", CRLF)
    if block.find(b"N") >= 0:  # memchr: a byte no number or timestamp holds
        block = block.replace(b'"NAN"', missing)
    if block.find(b"F") >= 0 and b'INF"' in block:  # INF is rare: usually one memchr only
        block = block.replace(b'"-INF"', missing).replace(b'"INF"', missing)
    return block


def _fill_toa5(out: HashingWriter, plan: Plan, a: int, b: int, tail: bytes) -> None:
    g = plan.grid
    for lo in range(a, b, FILL_CHUNK):
        hi = min(b, lo + FILL_CHUNK)
        stamps = format_toa5(g.first + np.arange(lo, hi, dtype=np.int64) * g.step)
        out.write(tail.join(stamps) + tail)


def write_toa5(
    out: HashingWriter,
    header: list[bytes],
    plan: Plan,
    tables: list[Table],
    missing: bytes,
    ncols: int,
) -> None:
    out.write(CRLF.join(header) + CRLF)
    tail = (b"," + missing) * (ncols - 1) + CRLF
    expected = 0
    for a, b in _runs(plan, tables):
        slot0 = int(plan.slots[a])
        if slot0 > expected:
            _fill_toa5(out, plan, expected, slot0, tail)
        t = tables[int(plan.tables[a])]
        r, last = int(plan.rows[a]), int(plan.rows[b - 1])
        while r <= last:  # pieces of about PIECE bytes, cut at row boundaries
            stop = int(np.searchsorted(t.starts, t.starts[r] + PIECE, side="left"))
            stop = min(max(stop, r + 1), last + 1)
            out.write(_toa5_piece(t, r, stop - 1, missing))
            r = stop
        expected = int(plan.slots[b - 1]) + 1
    if expected < plan.grid.count:
        _fill_toa5(out, plan, expected, plan.grid.count, tail)


def etc_timestamps(plan: Plan, slots: np.ndarray) -> list[bytes]:
    g = plan.grid
    ns = g.first + slots.astype(np.int64) * g.step
    if g.step % 60_000_000_000 == 0:
        return format_compact(ns, seconds=False)
    return format_compact(ns, seconds=True, fraction=fraction_digits(g.step))


def _etc_value(raw: bytes, missing: bytes) -> bytes:
    if raw in _NOT_A_NUMBER:
        return missing
    if raw.startswith(b'"') and raw.endswith(b'"'):
        return raw[1:-1]  # numbers are never quoted in ETC files
    return raw


def write_etc(
    out: HashingWriter, layout: Layout, plan: Plan, tables: list[Table], missing: bytes
) -> None:
    idx = [i for i, _ in layout.columns]
    out.write(b",".join([b"TIMESTAMP", *(n.encode() for _, n in layout.columns)]) + CRLF)
    fill = (b"," + missing) * len(idx)
    present = {
        int(s): (int(k), int(r)) for s, k, r in zip(plan.slots, plan.tables, plan.rows, strict=True)
    }
    for lo in range(0, plan.grid.count, FILL_CHUNK):
        hi = min(plan.grid.count, lo + FILL_CHUNK)
        stamps = etc_timestamps(plan, np.arange(lo, hi))
        lines = []
        for slot, stamp in zip(range(lo, hi), stamps, strict=True):
            hit = present.get(slot)
            if hit is None:
                lines.append(stamp + fill)
                continue
            values = tables[hit[0]].row(hit[1]).split(b",")
            lines.append(b",".join([stamp, *(_etc_value(values[i], missing) for i in idx)]))
        out.write(CRLF.join(lines) + CRLF)
