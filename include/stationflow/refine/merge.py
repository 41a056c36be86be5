"""Merge the fragments of one (station, table, period) onto the period's time grid.

Every row gets a slot on the grid ``first + k * step``. Rows outside the period or off the
grid are reported, not moved. Several rows in one slot: identical bytes are duplicates
(dropped); different bytes are conflicts, and the row of the newest fragment wins (within a
fragment, the last written). Empty slots are gaps, filled by the writer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from stationflow.formats.table import Issue, Table
from stationflow.formats.timestamps import format_toa5

MAX_LISTED = 20


@dataclass(frozen=True)
class Grid:
    first: int  # ns of the first slot
    step: int
    count: int

    @property
    def last(self) -> int:
        return self.first + (self.count - 1) * self.step

    @classmethod
    def for_period(cls, start: int, end: int, step: int, stamping: str) -> Grid:
        """End-stamped rows fill (start, end]; start-stamped rows fill [start, end)."""
        first = start + step if stamping == "end" else start
        last = end if stamping == "end" else end - step
        return cls(first, step, (last - first) // step + 1)


@dataclass
class Plan:
    """Which row fills each present slot; the rest of the grid is gaps."""

    grid: Grid
    slots: np.ndarray  # sorted slot numbers that have a row
    tables: np.ndarray  # index of the table holding that row
    rows: np.ndarray  # index of the row in that table
    duplicates: int = 0
    conflicts: int = 0
    outside: int = 0
    off_grid: int = 0
    used: dict[int, int] = field(default_factory=dict)  # table index -> rows used
    issues: list[Issue] = field(default_factory=list)

    @property
    def present(self) -> int:
        return len(self.slots)

    @property
    def filled(self) -> int:
        return self.grid.count - self.present


def _when(ns: int) -> str:
    return format_toa5(np.array([ns]), quoted=False)[0].decode()


def _off_grid_runs(t: Table, off: np.ndarray, grid: Grid) -> list[Issue]:
    """One issue per run of consecutive off-grid rows (a clock jump shifts a whole run)."""
    if not len(off):
        return []
    runs = np.split(off, np.flatnonzero(np.diff(off) != 1) + 1)
    out = []
    for run in runs[:MAX_LISTED]:
        a, b = int(run[0]), int(run[-1])
        where = f"lines {int(t.lines[a])}..{int(t.lines[b])}" if b > a else "one row"
        out.append(
            Issue(
                "warning",
                t.source,
                int(t.lines[a]),
                f"{len(run)} row(s) off the {grid.step / 1e9:g} s grid from"
                f" {_when(int(t.ts[a]))} ({where}; clock jump?): not used",
            )
        )
    if len(runs) > MAX_LISTED:
        rest = sum(len(r) for r in runs[MAX_LISTED:])
        out.append(
            Issue(
                "warning",
                t.source,
                int(t.lines[runs[MAX_LISTED][0]]),
                f"and {rest} more off-grid rows in {len(runs) - MAX_LISTED} runs",
            )
        )
    return out


def plan(tables: list[Table], grid: Grid, *, report_outside: bool = True) -> Plan:
    """Place the rows of ``tables`` (oldest first: later tables win conflicts) on ``grid``.

    ``report_outside=False`` counts rows outside the grid without an issue for them (the
    caller reports them once for a larger period).
    """
    issues: list[Issue] = []
    parts_slot, parts_table, parts_row = [], [], []
    outside = off_grid = 0
    for k, t in enumerate(tables):
        rel = t.ts - grid.first
        inside = (rel >= 0) & (t.ts <= grid.last)
        out = np.flatnonzero(~inside)
        outside += len(out)
        if len(out) and report_outside:
            i = out[0]
            issues.append(
                Issue(
                    "warning",
                    t.source,
                    int(t.lines[i]),
                    f"{len(out)} rows outside the period {_when(grid.first)} .."
                    f" {_when(grid.last)} (first: {_when(int(t.ts[i]))}): not in"
                    " this file",
                )
            )
        on = inside & (rel % grid.step == 0)
        off = np.flatnonzero(inside & ~on)
        off_grid += len(off)
        issues += _off_grid_runs(t, off, grid)
        idx = np.flatnonzero(on)
        # int32: a grid has fewer than 2**31 slots, a fragment fewer than 2**31 rows
        parts_slot.append((rel[idx] // grid.step).astype(np.int32))
        parts_table.append(np.full(len(idx), k, dtype=np.int32))
        parts_row.append(idx.astype(np.int32))

    if not parts_slot:
        empty = np.empty(0, dtype=np.int32)
        return Plan(grid, empty, empty, empty, issues=issues)
    slot = np.concatenate(parts_slot)
    tab = np.concatenate(parts_table)
    row = np.concatenate(parts_row)
    if len(slot) > 1 and not np.all(slot[1:] > slot[:-1]):
        # Overlaps or disorder. Each table's rows are reversed (last written first: it wins a
        # repeated slot), then one stable sort on (slot, newest table first); timsort merges
        # the runs the fragments already are in near-linear time. Clean days skip all this.
        bounds = np.cumsum([0, *(len(p) for p in parts_slot)])
        rev = np.concatenate([np.arange(b - 1, a - 1, -1) for a, b in itertools.pairwise(bounds)])
        slot, tab, row = slot[rev], tab[rev], row[rev]
        key = slot.astype(np.int64) * len(tables) + (len(tables) - 1 - tab)
        order = np.argsort(key, kind="stable")
        slot, tab, row = slot[order], tab[order], row[order]
    dup = np.flatnonzero(slot[1:] == slot[:-1]) + 1  # every row after the winner of its slot
    duplicates = conflicts = 0
    if len(dup):
        listed, w, prev = 0, -1, -2
        for i in dup:  # ascending: i-1 is either the head of i's slot or the previous dup
            if i - 1 != prev:
                w = i - 1  # the winner: first of the run of equal slots
            prev = i
            loser, winner = tables[tab[i]], tables[tab[w]]
            if loser.row(row[i]) == winner.row(row[w]):
                duplicates += 1
                continue
            conflicts += 1
            if listed < MAX_LISTED:
                listed += 1
                issues.append(
                    Issue(
                        "warning",
                        loser.source,
                        int(loser.lines[row[i]]),
                        f"conflicts with {winner.source}:{int(winner.lines[row[w]])} at"
                        f" {_when(grid.first + int(slot[i]) * grid.step)}: kept the newer row",
                    )
                )
        if conflicts > MAX_LISTED:
            issues.append(
                Issue(
                    "warning",
                    tables[-1].source,
                    None,
                    f"and {conflicts - MAX_LISTED} more conflicting rows",
                )
            )
        winners = np.ones(len(slot), dtype=bool)
        winners[dup] = False
        slot, tab, row = slot[winners], tab[winners], row[winners]
    used = {k: int(c) for k, c in enumerate(np.bincount(tab, minlength=len(tables))) if c}
    return Plan(grid, slot, tab, row, duplicates, conflicts, outside, off_grid, used, issues)
