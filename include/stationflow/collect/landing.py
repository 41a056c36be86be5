"""The landing area: an immutable, content-addressed copy of every collected fragment.

Every collector (LoggerNet folder, Modbus spool, FTP pull, FTP push) ends here: the bytes are
copied once (hashed while copied, so what is registered is exactly what was copied), named
``<landing>/<station>/<logger>/<table>/<stem>.<sha256[:12]><suffix>``, made read-only and
registered in the ``fragment`` ledger with their time span. The same bytes land once.
A file that cannot be read as a table is still landed (nothing is ever lost) and registered
as quarantined with the reason naming file and line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from stationflow.formats.detect import read_any
from stationflow.formats.table import UnreadableFragment
from stationflow.state.audit import RunIds, audit
from stationflow.state.ledger import upsert_fragment, utc_from_local_ns

COPY_CHUNK = 1 << 20
TABLE_KINDS = (b'"TOA5"', b'"TOB1"', b"PK\x03\x04")  # what read_any understands
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Landed:
    fragment_id: int
    path: Path
    sha256: str
    size: int
    new: bool  # False: these bytes were registered before (nothing copied)
    rows: int | None = None
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    table: str | None = None  # the table the file's header names
    problem: str | None = None  # why it was quarantined


def safe_name(name: str) -> str:
    """A file name from elsewhere (a folder, the network) made safe as one path part."""
    base = _SAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    return base[:200] or "unnamed"


def _copy_hashing(src: Path, tmp_dir: Path) -> tuple[Path, str, int]:
    """Copy ``src`` into a temporary file of ``tmp_dir``; (tmp path, sha256, size)."""
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".landing-")
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(COPY_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
                size += len(chunk)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp), digest.hexdigest(), size


def _describe(path: Path, utc_offset_hours: float, expect_table: bool):
    """(rows, first, last, table name, problem) of a landed file; no table -> Nones."""
    with path.open("rb") as f:
        head = f.read(8)
    if not expect_table and not head.startswith(TABLE_KINDS):
        return None, None, None, None, None  # an image or other payload: carried as is
    try:
        table = read_any(path.read_bytes(), str(path), utc_offset_hours=utc_offset_hours)
    except UnreadableFragment as exc:
        return None, None, None, None, str(exc)
    try:
        if not len(table):
            return 0, None, None, table.header.table_name or None, None
        first = utc_from_local_ns(int(table.ts.min()), utc_offset_hours)
        last = utc_from_local_ns(int(table.ts.max()), utc_offset_hours)
        return len(table), first, last, table.header.table_name or None, None
    finally:
        table.close()


def land(
    conn: psycopg.Connection,
    src: Path,
    *,
    landing: Path,
    station: str,
    logger: str,
    table: str,
    source: str,
    utc_offset_hours: float,
    source_path: str | None = None,
    name: str | None = None,
    expect_table: bool = True,
    ids: RunIds | None = None,
) -> Landed:
    """Copy ``src`` into the landing area and register it (in the caller's transaction).

    ``source`` names the stream (``loggernet:cr3000_meteo/Meteo_1min``); ``name`` is the
    original file name when ``src`` is a temporary file (a download). With
    ``expect_table`` (logger files) anything but a readable TOA5/TOB1/.ghg is quarantined;
    without it (FTP payloads) other kinds (images) are landed as they are.
    """
    folder = landing / safe_name(station) / safe_name(logger) / safe_name(table)
    folder.mkdir(parents=True, exist_ok=True)
    tmp, sha, size = _copy_hashing(src, folder)
    original = Path(safe_name(name or src.name))
    target = folder / f"{original.stem}.{sha[:12]}{original.suffix}"
    new = not target.exists()
    if new:
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
        with contextlib.suppress(OSError):  # the rename itself survives a crash
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    else:
        tmp.unlink()
    rows, first, last, table_name, problem = _describe(target, utc_offset_hours, expect_table)
    known = conn.execute(
        "SELECT id FROM stationflow.fragment WHERE station = %s AND sha256 = %s",
        (station, sha),
    ).fetchone()
    fid = upsert_fragment(
        conn,
        station=station,
        source=source,
        path=str(target),
        size=size,
        sha256=sha,
        first_ts=first,
        last_ts=last,
        rows=rows,
        status="quarantined" if problem else "collected",
        message=problem,
        source_path=source_path or str(src),
    )
    if known is None:
        where = source_path or str(src)
        if problem:
            audit(
                conn,
                "collect.land",
                f"{where}: unreadable, landed as quarantined: {problem}",
                level="ERROR",
                station=station,
                details={"fragment_id": fid, "path": str(target), "sha256": sha, "size": size},
                ids=ids,
            )
        else:
            span = (
                f", {rows} rows {first:%Y-%m-%d %H:%M:%S} .. {last:%Y-%m-%d %H:%M:%S} UTC"
                if first and last
                else ""
            )
            audit(
                conn,
                "collect.land",
                f"{where}: landed {size} bytes{span}",
                station=station,
                details={
                    "fragment_id": fid,
                    "source": source,
                    "path": str(target),
                    "sha256": sha,
                    "size": size,
                    "rows": rows,
                },
                ids=ids,
            )
    return Landed(
        fragment_id=fid,
        path=target,
        sha256=sha,
        size=size,
        new=known is None,
        rows=rows,
        first_ts=first,
        last_ts=last,
        table=table_name,
        problem=problem,
    )
