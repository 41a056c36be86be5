"""Assemble the ETC file(s) of one (station, type, logger, file number, day) from fragments.

Read every fragment (an unreadable one is quarantined, never deleted), keep fragments with
another column set apart (a program change is a new file), choose the interval, place rows on
each period's grid, fill the gaps, write, and report everything that happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import shutil
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stationflow.formats.detect import read_any
from stationflow.formats.etc_names import HALF_HOURLY, EtcName
from stationflow.formats.table import NS, Issue, Table, UnreadableFragment
from stationflow.formats.timestamps import DAY_NS, days_from_civil
from stationflow.refine import sampling
from stationflow.refine.etc_writer import Layout, missing_text, write_etc, write_toa5
from stationflow.refine.hashing import HashingWriter
from stationflow.refine.merge import Grid, Plan, plan

HALF_HOUR = 1800 * NS


@dataclass(frozen=True)
class Request:
    station: str
    file_type: str
    logger: int
    file: int
    day: date
    output_dir: Path
    utc_offset_hours: float = 0.0
    interval_s: float | None = None  # forces the grid; None: detect
    declared_interval_s: float | None = None  # the inventory's: cross-checked, not forced
    missing: float = -9999
    layout: Literal["toa5", "etc"] = "toa5"
    columns_map: dict[str, str] | None = None  # etc layout: logger column -> ICOS name
    extension: str | None = None
    quarantine_dir: Path | None = None
    new_columns: Literal["report", "next-file"] = "report"
    quarantine_copies: bool = False  # landed fragments are immutable: copy them aside
    half_hour: int | None = None  # EC/PHEN: only this half-hour of the day (0..47)


@dataclass
class Fragment:
    path: Path
    table: Table | None = None
    sha256: str = ""
    size: int = 0
    quarantined_to: Path | None = None
    reason: str | None = None  # why it could not be read
    reason_line: int | None = None


@dataclass
class Output:
    name: str
    path: Path
    file_number: int
    period_start: int  # ns, local standard time
    period_end: int
    report: dict[str, Any]
    fragments: list[Fragment]


@dataclass
class Result:
    outputs: list[Output] = field(default_factory=list)
    fragments: list[Fragment] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def quarantined(self) -> list[Fragment]:
        return [f for f in self.fragments if f.quarantined_to is not None]

    @property
    def has_errors(self) -> bool:
        return bool(self.quarantined) or any(i.level == "error" for i in self.issues)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def quarantine(path: Path, reason: str, qdir: Path, *, copy: bool = False) -> Path:
    """Move (or copy) ``path`` aside into ``qdir`` with a note of why; bytes are never lost."""
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / path.name
    if target.exists():
        target = qdir / f"{path.name}.{_sha256(path)[:12]}"
    if copy:
        shutil.copyfile(path, target)
    else:
        shutil.move(str(path), target)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    target.with_name(target.name + ".reason.txt").write_text(
        f"{stamp} quarantined from {path}\n{reason}\n", encoding="utf-8"
    )
    return target


def _load(p: Path) -> bytes | mmap.mmap:
    """A TOA5 file is mapped (no copy: only its timestamps are read), others read whole."""
    with p.open("rb") as f:
        if f.read(6) == b'"TOA5"':
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return p.read_bytes()


def _read_one(p: Path, req: Request) -> Fragment:
    data = _load(p)
    frag = Fragment(p, size=len(data))
    digest = hashlib.sha256()
    hashing = threading.Thread(target=digest.update, args=(memoryview(data),))
    hashing.start()  # beside the parse: hashlib releases the GIL
    try:
        frag.table = read_any(data, str(p), utc_offset_hours=req.utc_offset_hours)
    except UnreadableFragment as exc:
        frag.reason, frag.reason_line = exc.reason, exc.line
    hashing.join()
    del hashing  # drops its view of the mapping before the mapping is closed
    frag.sha256 = digest.hexdigest()
    if frag.table is not None and frag.table.header.format == "TOA5":
        frag.table.release(p)  # rows are read back from the file when written
    if isinstance(data, mmap.mmap):
        with contextlib.suppress(BufferError):  # a view still alive: unmapped when collected
            data.close()
    return frag


def read_fragments(paths: list[Path], req: Request) -> list[Fragment]:
    """Read fragments oldest first (by mtime: the newest wins conflicts); quarantine the bad.

    Two at a time: parsing is numpy work that releases the GIL.
    """
    ordered = [
        Path(p)
        for _, p in sorted(enumerate(paths), key=lambda ip: (Path(ip[1]).stat().st_mtime_ns, ip[0]))
    ]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="read") as pool:
        frags = list(pool.map(lambda p: _read_one(p, req), ordered))
    for frag in frags:
        if frag.table is None:
            where = f"line {frag.reason_line}: " if frag.reason_line else ""
            qdir = req.quarantine_dir or req.output_dir / "quarantine"
            frag.quarantined_to = quarantine(
                frag.path, where + frag.reason, qdir, copy=req.quarantine_copies
            )
    return frags


def _periods(req: Request) -> list[tuple[int, int, datetime]]:
    """(start ns, end ns, name time) of each output period of the day, local standard time."""
    d = req.day
    day0 = int(days_from_civil(np.array([d.year]), np.array([d.month]), np.array([d.day]))[0])
    start = day0 * DAY_NS
    if req.file_type in HALF_HOURLY:
        base = datetime(d.year, d.month, d.day)
        return [
            (
                start + k * HALF_HOUR,
                start + (k + 1) * HALF_HOUR,
                base + timedelta(minutes=30 * (k + 1)),
            )
            for k in range(48)
            if req.half_hour is None or k == req.half_hour
        ]
    return [(start, start + DAY_NS, datetime(d.year, d.month, d.day))]


def _groups(frags: list[Fragment]) -> list[list[Fragment]]:
    """Fragments by column set, the set seen first in time first."""
    by_key: dict[Any, list[Fragment]] = {}
    for f in frags:
        if f.table is not None:
            by_key.setdefault(f.table.header.column_key, []).append(f)
    return sorted(
        by_key.values(),
        key=lambda g: min(int(f.table.ts.min()) if len(f.table) else 2**62 for f in g),
    )


def _layout(req: Request, fields: tuple[str, ...]) -> Layout:
    if req.layout == "toa5":
        return Layout("toa5")
    mapping = req.columns_map or {f: f for f in fields[1:]}
    missing = [c for c in mapping if c not in fields]
    if missing:
        raise ValueError(f"columns map names columns the logger table does not have: {missing}")
    return Layout("etc", tuple((fields.index(c), name) for c, name in mapping.items()))


def _iso(ns: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)).isoformat()


def _write(req: Request, name: EtcName, layout: Layout, p: Plan, tables: list[Table]) -> dict:
    """Write atomically; an older file of that name with other bytes is kept aside."""
    req.output_dir.mkdir(parents=True, exist_ok=True)
    target = req.output_dir / str(name)
    tmp = target.with_name(f".{target.name}.tmp")
    missing = missing_text(req.missing)
    header = tables[-1].header

    def body(sink: HashingWriter | io.BytesIO) -> None:
        if layout.kind == "toa5":
            write_toa5(sink, header.toa5_lines(), p, tables, missing, len(header.fields))
        else:
            write_etc(sink, layout, p, tables, missing)

    with tmp.open("wb") as f:
        sink = HashingWriter(f, 0 if name.extension == "zip" else _expected_size(p, tables))
        if name.extension == "zip":  # EC / PHEN half-hours travel zipped, one file each
            inner = io.BytesIO()
            body(inner)
            member = f"{name.stem}.{'dat' if layout.kind == 'toa5' else 'csv'}"
            sink.write(_deterministic_zip(member, inner.getvalue(), name.time))
        else:
            body(sink)
        digests = sink.close()
    if target.exists():
        old = _sha256(target)
        if old != digests["sha256"]:  # a new version: the one before stays, under its hash
            kept = req.output_dir / "superseded" / f"{target.name}.{old[:12]}"
            kept.parent.mkdir(exist_ok=True)
            os.replace(target, kept)
    os.replace(tmp, target)
    return {**digests, "size": sink.size}


def _expected_size(p: Plan, tables: list[Table]) -> int:
    """About the size of the file: present rows as they are, fill rows as wide as a row."""
    size, widest = 0, 64
    for k, t in enumerate(tables):
        rows = p.rows[p.tables == k]
        if len(rows):
            size += int((t.ends[rows] - t.starts[rows]).sum()) + 2 * len(rows)
            widest = max(widest, int((t.ends[rows[:100]] - t.starts[rows[:100]]).max()) + 2)
    return size + p.filled * widest + 4096


def _deterministic_zip(member: str, content: bytes, when: datetime) -> bytes:
    """One-member zip whose bytes depend only on its content (fixed time and attributes)."""
    info = zipfile.ZipInfo(member, date_time=when.timetuple()[:6])
    info.compress_type, info.create_system = zipfile.ZIP_DEFLATED, 3
    info.external_attr = 0o644 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(info, content)
    return buf.getvalue()


def assemble(req: Request, paths: list[Path]) -> Result:
    result = Result()
    result.fragments = read_fragments([Path(p) for p in paths], req)
    for f in result.fragments:
        if f.table is not None:
            result.issues += f.table.issues
        else:
            result.issues.append(
                Issue(
                    "error",
                    str(f.path),
                    f.reason_line,
                    f"{f.reason}; quarantined to {f.quarantined_to}",
                )
            )
    groups = _groups(result.fragments)
    for g_index, group in enumerate(groups):
        file_number = req.file + g_index
        if g_index and req.new_columns == "report":
            result.issues.append(
                Issue(
                    "error",
                    str(group[0].path),
                    2,
                    f"column set differs from {groups[0][0].path} (program change): not merged;"
                    f" use --new-columns next-file to write it as file F{file_number:02d}",
                )
            )
            continue
        result.outputs += _assemble_group(req, group, file_number, result.issues)
    for f in result.fragments:
        if f.table is not None:
            f.table.close()
    return result


def _assemble_group(
    req: Request, group: list[Fragment], file_number: int, issues: list[Issue]
) -> list[Output]:
    tables = [f.table for f in group]
    header = tables[-1].header
    declared = next(
        (t.header.declared_interval_ns for t in tables if t.header.declared_interval_ns), None
    )
    if declared is None and req.declared_interval_s:
        declared = round(req.declared_interval_s * NS)
    forced = round(req.interval_s * NS) if req.interval_s else None
    try:
        interval = sampling.choose([t.ts for t in tables], declared, forced)
    except ValueError as exc:
        if forced is not None:
            raise  # the caller's interval is wrong: a usage error
        # the data cannot give an interval (one row, or steps beyond 100 Hz .. 30 min):
        # no file from these fragments, named as an input error; other groups go on
        names = ", ".join(str(f.path) for f in group)
        rows = sum(len(t) for t in tables)
        issues.append(
            Issue("error", str(group[0].path), None, f"{exc} ({rows} rows in {names}): no file")
        )
        return []
    for w in interval.warnings:
        issues.append(Issue("warning", str(group[0].path), None, w))
    layout = _layout(req, header.fields)
    ext = (
        "zip"
        if req.file_type in HALF_HOURLY
        else (req.extension or ("dat" if req.layout == "toa5" else "csv"))
    )
    outputs = []
    own = {str(f.path) for f in group}
    periods = _periods(req)
    if req.file_type in HALF_HOURLY:  # half-hours: rows outside the DAY are the news
        first = _periods(replace(req, half_hour=None))
        day = Grid.for_period(first[0][0], first[-1][1], interval.ns, header.stamping)
        issues += [i for i in plan(tables, day).issues if "outside the period" in i.message]
    empty = []
    for start, end, when in periods:
        grid = Grid.for_period(start, end, interval.ns, header.stamping)
        p = plan(tables, grid, report_outside=req.file_type not in HALF_HOURLY)
        if not p.present:
            if p.off_grid:  # rows of the period, none on its grid: named, never dropped silently
                issues += [i for i in p.issues if "outside the period" not in i.message]
                issues.append(
                    Issue(
                        "error",
                        str(group[0].path),
                        None,
                        f"{p.off_grid} rows of {_iso(start)} .. {_iso(end)} and none on its"
                        f" {interval.ns / NS:g} s grid: no file",
                    )
                )
            empty.append(when)  # nothing of this period in these fragments: no file to make
            continue
        issues += p.issues
        relevant = [i for i in issues if i.source in own or i in p.issues]
        name = EtcName(req.station, req.file_type, when, req.logger, file_number, ext)
        written = _write(req, name, layout, p, tables)
        report = {
            "name": str(name),
            "path": str(req.output_dir / str(name)),
            "station": req.station,
            "type": req.file_type,
            "logger": req.logger,
            "file": file_number,
            "layout": req.layout,
            "period_start": _iso(start),
            "period_end": _iso(end),
            "interval_s": interval.ns / NS,
            "interval_detected_s": interval.detected_ns / NS if interval.detected_ns else None,
            "interval_declared_s": declared / NS if declared else None,
            "rows_expected": grid.count,
            "rows_present": p.present,
            "rows_filled": p.filled,
            "duplicates_dropped": p.duplicates,
            "conflicts": p.conflicts,
            "rows_outside_period": p.outside,
            "rows_off_grid": p.off_grid,
            "fragments": [
                {
                    "path": str(f.path),
                    "format": f.table.header.format,
                    "sha256": f.sha256,
                    "rows": len(f.table),
                    "rows_used": p.used.get(k, 0),
                }
                for k, f in enumerate(group)
            ],
            **written,
            "warnings": [str(i) for i in relevant if i.level == "warning"],
            "errors": [str(i) for i in relevant if i.level == "error"],
        }
        outputs.append(
            Output(str(name), req.output_dir / str(name), file_number, start, end, report, group)
        )
    if req.file_type in HALF_HOURLY and req.half_hour is None and empty and outputs:
        issues.append(
            Issue(
                "warning",
                str(group[0].path),
                None,
                f"{len(empty)} of {len(periods)} half-hours have no row at all, so no file:"
                f" {', '.join(w.strftime('%H%M') for w in empty[:12])}"
                f"{' ...' if len(empty) > 12 else ''} (named by their end)",
            )
        )
    return outputs
