"""LoggerNet drop folder: take each logger table's files once they are complete, land them.

LoggerNet appends to ``<station>_<table>.dat``, keeps a ``.backup`` when the program
changes, and stations rename or split files by hand: so files are matched to tables by
their TOA5/TOB1 header (its 8th field names the table), not by their name. A file is taken
once it has not changed for the settle time and did not change while it was copied; an
unchanged file is never read again; a file that grew lands again as new bytes. Nothing at
the source is ever modified or deleted.
"""

from __future__ import annotations

import csv
import fnmatch
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from stationflow.collect.landing import TABLE_KINDS, Landed, land
from stationflow.config import Logger, LoggerNetCollect, Station
from stationflow.state.audit import RunIds, audit

IGNORED_SUFFIXES = (".part", ".tmp", ".swp", "~")


class SourceUnavailable(Exception):
    """The drop folder is not there (a network share down): retried, never skipped."""


@dataclass
class ScanSummary:
    seen: int = 0
    unchanged: int = 0
    unsettled: list[str] = field(default_factory=list)  # still being written
    landed: list[str] = field(default_factory=list)  # landing paths of new fragments
    known: int = 0  # stable files whose bytes were landed before (e.g. touched only)
    ignored: list[str] = field(default_factory=list)  # other tables, other files

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "unchanged": self.unchanged,
            "unsettled": self.unsettled,
            "landed": self.landed,
            "known": self.known,
            "ignored": len(self.ignored),
        }


def header_table(path: Path) -> str | None:
    """The table a TOA5/TOB1 file's first line names; None for any other file."""
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(TABLE_KINDS[:2]):
        return None
    try:
        fields = next(csv.reader([first.decode("utf-8", "replace").strip()]))
    except (csv.Error, StopIteration):
        return None
    return fields[7] if len(fields) > 7 else None


def _candidates(folder: Path, patterns: list[str]) -> list[Path]:
    found = []
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(".") or name.endswith(IGNORED_SUFFIXES) or not entry.is_file():
            continue
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            found.append(Path(entry.path))
    return sorted(found)


def folder_of(cfg: LoggerNetCollect, home: Path) -> Path:
    return cfg.folder if cfg.folder.is_absolute() else home / cfg.folder


def scan(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    *,
    home: Path,
    landing: Path,
    now: datetime | None = None,
    ids: RunIds | None = None,
) -> ScanSummary:
    """One pass over the logger's drop folder; each landed file is its own transaction."""
    cfg = logger.collect
    if not isinstance(cfg, LoggerNetCollect):
        raise TypeError(f"{station.id}/{logger.id} is not collected from a LoggerNet folder")
    now = now or datetime.now(UTC)
    folder = folder_of(cfg, home)
    if not folder.is_dir():
        with conn.transaction():
            audit(
                conn,
                "collect.loggernet",
                f"{folder}: drop folder missing or unreadable",
                level="ERROR",
                station=station.id,
                ids=ids,
            )
        conn.commit()
        raise SourceUnavailable(f"{station.id}/{logger.id}: no folder {folder}")
    summary = ScanSummary()
    for path in _candidates(folder, cfg.patterns):
        summary.seen += 1
        st = path.stat()
        row = conn.execute(
            "SELECT landed_size, landed_mtime_ns FROM stationflow.source_file"
            " WHERE station = %s AND logger = %s AND source_path = %s",
            (station.id, logger.id, str(path)),
        ).fetchone()
        if row is not None and (row[0], row[1]) == (st.st_size, st.st_mtime_ns):
            summary.unchanged += 1
            continue
        table = header_table(path)
        if table not in cfg.tables and not (
            table is None and any(t in path.name for t in cfg.tables)  # unreadable, ours
        ):
            summary.ignored.append(str(path))
            continue
        age = now.timestamp() - st.st_mtime_ns / 1e9
        if st.st_size == 0 or age < cfg.settle_seconds:
            summary.unsettled.append(str(path))
            _observe(conn, station, logger, path, st)
            conn.commit()
            continue
        table = table or next(t for t in cfg.tables if t in path.name)
        with conn.transaction():
            landed = land(
                conn,
                path,
                landing=landing,
                station=station.id,
                logger=logger.id,
                table=table,
                source=f"loggernet:{logger.id}/{table}",
                utc_offset_hours=station.utc_offset_hours,
                source_path=str(path),
                ids=ids,
            )
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                # written to while copied: what landed is a complete earlier state (kept),
                # but the file is not done; it is taken again once it settles
                summary.unsettled.append(str(path))
                _observe(conn, station, logger, path, after, landed=None)
            else:
                _observe(conn, station, logger, path, st, landed=landed)
        conn.commit()
        if landed.new:
            summary.landed.append(str(landed.path))
        else:
            summary.known += 1
    return summary


def _observe(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    path: Path,
    st: os.stat_result,
    landed: Landed | None = None,
) -> None:
    conn.execute(
        "INSERT INTO stationflow.source_file AS s (station, logger, source_path, size,"
        " mtime_ns, landed_size, landed_mtime_ns, fragment_id)"
        " VALUES (%(st)s, %(lg)s, %(p)s, %(size)s, %(mt)s, %(ls)s, %(lm)s, %(fid)s)"
        " ON CONFLICT (station, logger, source_path) DO UPDATE SET size = EXCLUDED.size,"
        " mtime_ns = EXCLUDED.mtime_ns, last_seen = now(),"
        " landed_size = COALESCE(EXCLUDED.landed_size, s.landed_size),"
        " landed_mtime_ns = COALESCE(EXCLUDED.landed_mtime_ns, s.landed_mtime_ns),"
        " fragment_id = COALESCE(EXCLUDED.fragment_id, s.fragment_id)",
        {
            "st": station.id,
            "lg": logger.id,
            "p": str(path),
            "size": st.st_size,
            "mt": st.st_mtime_ns,
            "ls": st.st_size if landed else None,
            "lm": st.st_mtime_ns if landed else None,
            "fid": landed.fragment_id if landed else None,
        },
    )
