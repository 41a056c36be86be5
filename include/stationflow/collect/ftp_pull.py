"""FTP pull: fetch new files from a station's FTP server (SmartFlux .ghg, camera .jpg).

The remote folder is listed with MLSD (name, size, modify), or NLST + SIZE + MDTM when the
server has no MLSD. A listed (size, modify) version of a file that the ``remote_file``
ledger holds is never downloaded again; a file modified less than ``settle_seconds`` ago
may still be written and is left for the next run. A download goes to
``<spool>/ftp_pull/<station>/<logger>/<name>.part`` and an interrupted one is continued
with REST from the partial's size (a ``.part.version`` file next to it remembers which
listed version the partial belongs to, so a file changed in between starts over). Only
bytes of exactly the listed size are landed; each file is landed, recorded in
``remote_file`` and audited in one transaction, committed before the next file. Nothing is
ever deleted, renamed or written on the station's server.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ftplib
import os
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from stationflow.collect.landing import land, safe_name
from stationflow.config import FtpPullCollect, Logger, Station
from stationflow.connections import get_connection
from stationflow.errors import PermanentError
from stationflow.state.audit import RunIds, audit

STEP = "collect.ftp_pull"
TIMEOUT_S = 60.0  # control and data connections: a stalled transfer fails, not hangs
# what a broken connection or a refusing server raises mid-run (retried by Airflow)
TRANSIENT = (ftplib.error_temp, ftplib.error_reply, ftplib.error_proto, OSError, EOFError)


class FtpPullInterrupted(Exception):
    """The connection broke during a run: what was done is recorded, the rest is retried."""


class FtpPullRefused(PermanentError):
    """The server refuses our login or the remote folder: a person has to fix it."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    path: str  # remote_dir/name
    size: int
    modify: str  # YYYYMMDDHHMMSS[.fff] UTC as the server gives it; "" when unknown

    @property
    def modified(self) -> datetime | None:
        try:
            return datetime.strptime(self.modify[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return None


@dataclass
class PullSummary:
    listed: int = 0
    skipped_known: int = 0
    skipped_recent: int = 0
    fetched: int = 0
    failed: int = 0
    resumed: int = 0  # downloads continued from a partial
    landed: list[str] = field(default_factory=list)  # landing paths of new fragments
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "listed": self.listed,
            "skipped_known": self.skipped_known,
            "skipped_recent": self.skipped_recent,
            "fetched": self.fetched,
            "failed": self.failed,
            "resumed": self.resumed,
            "landed": self.landed,
            "errors": self.errors,
        }


def is_table(name: str) -> bool:
    """A logger table (read and checked when landed) rather than a payload such as an image."""
    return Path(name).suffix.lower() in (".ghg", ".dat", ".tob", ".bin", ".csv")


def default_table(name: str) -> str:
    """The landing table of a file by its kind: .ghg -> ghg, .jpg -> images, else files."""
    suffix = Path(name).suffix.lower()
    if suffix == ".ghg":
        return "ghg"
    if suffix in (".jpg", ".jpeg"):
        return "images"
    return "files"


# ------------------------------------------------------------------ listing


def _not_supported(exc: ftplib.error_perm, *codes: str) -> bool:
    """A 5xx reply meaning "unknown command" rather than "no such folder"."""
    return str(exc)[:3] in ("500", "502", "504", *codes)


def list_remote(ftp: ftplib.FTP, remote_dir: str) -> list[RemoteFile]:
    """Plain files of ``remote_dir`` with size and modify time (MLSD, else NLST+SIZE+MDTM)."""
    try:
        try:
            entries = list(ftp.mlsd(remote_dir, facts=["type", "size", "modify"]))
        except ftplib.error_perm as exc:  # OPTS MLST refused: the server's default facts
            if not _not_supported(exc, "501"):
                raise
            entries = list(ftp.mlsd(remote_dir))
    except ftplib.error_perm as exc:
        if not _not_supported(exc):
            raise
        return _list_without_mlsd(ftp, remote_dir)
    found = []
    for name, facts in entries:
        name = posixpath.basename(name)
        if facts.get("type", "file").lower() != "file" or not name:
            continue
        path = posixpath.join(remote_dir, name)
        size = facts.get("size")
        if size is None or not size.isdigit():
            size = _size(ftp, path)
            if size is None:
                continue
        modify = facts.get("modify") or _mdtm(ftp, path)
        found.append(RemoteFile(name, path, int(size), modify))
    return found


def _size(ftp: ftplib.FTP, path: str) -> int | None:
    try:
        ftp.voidcmd("TYPE I")  # SIZE is refused in ASCII mode by some servers
        size = ftp.size(path)
    except ftplib.error_perm:  # a folder, or gone
        return None
    return int(size) if size is not None else None


def _mdtm(ftp: ftplib.FTP, path: str) -> str:
    try:
        reply = ftp.sendcmd(f"MDTM {path}")
    except ftplib.error_perm:
        return ""
    value = reply[4:].strip()
    return value if value[:14].isdigit() else ""


def _list_without_mlsd(ftp: ftplib.FTP, remote_dir: str) -> list[RemoteFile]:
    home = ftp.pwd()
    ftp.cwd(remote_dir)  # a missing folder is refused here (error_perm), not taken as empty
    try:
        names = ftp.nlst()
    except (ftplib.error_perm, ftplib.error_temp) as exc:
        if str(exc)[:3] not in ("450", "550"):  # some servers: an empty folder is "no files"
            raise
        names = []
    finally:
        ftp.cwd(home)
    found = []
    for raw in names:
        name = posixpath.basename(raw.rstrip("/"))
        if not name or name in (".", ".."):
            continue
        path = posixpath.join(remote_dir, name)
        size = _size(ftp, path)
        if size is not None:
            found.append(RemoteFile(name, path, size, _mdtm(ftp, path)))
    return found


# ------------------------------------------------------------------ pull


def _known(conn: psycopg.Connection, station: str, logger: str, files: list[RemoteFile]):
    rows = conn.execute(
        "SELECT remote_path, size, modify FROM stationflow.remote_file"
        " WHERE station = %s AND logger = %s AND remote_path = ANY(%s)",
        (station, logger, [f.path for f in files]),
    ).fetchall()
    return {(p, int(s), m) for p, s, m in rows}


def _audit_now(conn: psycopg.Connection, message: str, *, level: str, station: str, **kw):
    with conn.transaction():
        audit(conn, STEP, message, level=level, station=station, **kw)
    conn.commit()


def _download(ftp: ftplib.FTP, f: RemoteFile, part: Path) -> tuple[int, int]:
    """Fetch ``f`` into ``part``, continuing a partial of the same version; (offset, size)."""
    version = part.with_name(part.name + ".version")
    tag = f"{f.path}\n{f.size}\n{f.modify}"
    offset = part.stat().st_size if part.exists() else 0
    try:
        same = version.read_text() == tag
    except OSError:
        same = False
    if offset and (not same or offset > f.size):
        offset = 0  # another version of the file, or more bytes than listed: start over
    if not offset:
        version.write_text(tag)
    if offset < f.size:
        ftp.voidcmd("TYPE I")
        with part.open("ab" if offset else "wb") as out:
            try:
                ftp.retrbinary(f"RETR {f.path}", out.write, rest=offset or None)
            finally:
                out.flush()
                os.fsync(out.fileno())
    return offset, part.stat().st_size


def pull(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    *,
    landing: Path,
    spool: Path,
    now: datetime,
    ids: RunIds | None = None,
    timeout: float = TIMEOUT_S,
) -> dict:
    """Fetch the logger's new files from its FTP server and land them; a summary dict.

    Raises ``FtpPullInterrupted`` (transient, after committing every file done) when the
    connection breaks, and ``FtpPullRefused`` (permanent) when the login or the remote
    folder is refused.
    """
    from airflow.providers.ftp.hooks.ftp import FTPHook

    cfg = logger.collect
    if not isinstance(cfg, FtpPullCollect):
        raise TypeError(f"{station.id}/{logger.id} is not collected by FTP pull")
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    spool_dir = spool / "ftp_pull" / safe_name(station.id) / safe_name(logger.id)
    spool_dir.mkdir(parents=True, exist_ok=True)
    where = f"{cfg.connection_id}:{cfg.remote_dir}"
    summary = PullSummary()
    get_connection(cfg.connection_id)  # an undefined Connection: MissingConnection (permanent)
    hook = FTPHook(ftp_conn_id=cfg.connection_id)
    try:
        try:
            ftp = hook.get_conn()
            ftp.timeout = timeout  # used for the data connections
            if ftp.sock is not None:
                ftp.sock.settimeout(timeout)
            listing = list_remote(ftp, cfg.remote_dir)
        except ftplib.error_perm as exc:
            _audit_now(conn, f"{where}: refused: {exc}", level="ERROR", station=station.id, ids=ids)
            raise FtpPullRefused(f"{station.id}/{logger.id}: {where}: {exc}") from exc
        except TRANSIENT as exc:
            _audit_now(
                conn,
                f"{where}: cannot list: {exc!r}",
                level="ERROR",
                station=station.id,
                ids=ids,
            )
            raise FtpPullInterrupted(f"{station.id}/{logger.id}: {where}: {exc!r}") from exc

        wanted = sorted(
            (f for f in listing if not f.name.startswith(".")),
            key=lambda f: f.name,
        )
        wanted = [f for f in wanted if fnmatch.fnmatchcase(f.name, cfg.pattern)]
        summary.listed = len(wanted)
        known = _known(conn, station.id, logger.id, wanted) if wanted else set()
        conn.commit()
        for f in wanted:
            part = spool_dir / f"{safe_name(f.name)}.part"
            if (f.path, f.size, f.modify) in known:
                summary.skipped_known += 1
                if part.exists():  # landed, then stopped before removing it
                    part.unlink()
                    part.with_name(part.name + ".version").unlink(missing_ok=True)
                continue
            modified = f.modified
            age = (now - modified).total_seconds() if modified else None
            if f.size == 0 or (age is not None and age < cfg.settle_seconds):
                summary.skipped_recent += 1
                continue
            try:
                offset, got = _download(ftp, f, part)
            except ftplib.error_perm as exc:  # gone since the listing, or not readable
                summary.failed += 1
                summary.errors.append(f"{f.path}: {exc}")
                _audit_now(
                    conn,
                    f"{where}: {f.name}: not fetched: {exc}",
                    level="ERROR",
                    station=station.id,
                    details={"remote_path": f.path, "size": f.size, "modify": f.modify},
                    ids=ids,
                )
                continue
            except TRANSIENT as exc:
                have = part.stat().st_size if part.exists() else 0
                summary.failed += 1
                summary.errors.append(f"{f.path}: {exc!r}")
                _audit_now(
                    conn,
                    f"{where}: {f.name}: transfer interrupted at {have} of {f.size} bytes"
                    f" ({exc!r}); the partial is continued on the next run",
                    level="ERROR",
                    station=station.id,
                    details={**summary.as_dict(), "remote_path": f.path, "partial": str(part)},
                    ids=ids,
                )
                raise FtpPullInterrupted(
                    f"{station.id}/{logger.id}: {f.path}: interrupted at {have} bytes: {exc!r}"
                ) from exc
            if offset:
                summary.resumed += 1
            if got != f.size:
                summary.failed += 1
                summary.errors.append(f"{f.path}: {got} bytes, listed {f.size}")
                _audit_now(
                    conn,
                    f"{where}: {f.name}: downloaded {got} bytes but the listing said {f.size};"
                    f" not landed, partial kept ({part.name})",
                    level="ERROR",
                    station=station.id,
                    details={
                        "remote_path": f.path,
                        "size": f.size,
                        "modify": f.modify,
                        "downloaded": got,
                        "partial": str(part),
                    },
                    ids=ids,
                )
                continue
            with conn.transaction():
                landed = land(
                    conn,
                    part,
                    landing=landing,
                    station=station.id,
                    logger=logger.id,
                    table=cfg.table or default_table(f.name),
                    source=f"ftp_pull:{logger.id}",
                    utc_offset_hours=station.utc_offset_hours,
                    source_path=f"{cfg.connection_id}:{f.path}",
                    name=f.name,
                    expect_table=is_table(f.name),
                    ids=ids,
                )
                conn.execute(
                    "INSERT INTO stationflow.remote_file"
                    " (station, logger, remote_path, size, modify, fragment_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (station.id, logger.id, f.path, f.size, f.modify, landed.fragment_id),
                )
                resumed = f", resumed at byte {offset}" if offset else ""
                audit(
                    conn,
                    STEP,
                    f"{where}: {f.name}: fetched {f.size} bytes{resumed}"
                    f"{'' if landed.new else ' (these bytes were landed before)'}",
                    station=station.id,
                    details={
                        "remote_path": f.path,
                        "size": f.size,
                        "modify": f.modify,
                        "resumed_at": offset,
                        "fragment_id": landed.fragment_id,
                        "path": str(landed.path),
                        "new": landed.new,
                    },
                    ids=ids,
                )
            conn.commit()
            part.unlink()
            part.with_name(part.name + ".version").unlink(missing_ok=True)
            summary.fetched += 1
            if landed.new:
                summary.landed.append(str(landed.path))
    finally:
        if hook.conn is not None:
            with contextlib.suppress(*TRANSIENT, ftplib.Error):
                hook.close_conn()
            hook.conn = None
    return summary.as_dict()
