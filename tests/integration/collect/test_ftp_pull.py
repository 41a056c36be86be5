"""FTP pull against the SmartFlux simulator (a real pyftpdlib server) and a real ledger."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler

from stationflow.collect.ftp_pull import FtpPullInterrupted, FtpPullRefused, pull
from stationflow.config import Station
from stationflow.formats.ghg import read_ghg
from stationflow.sim.smartflux import PERIOD, SimHandler, SmartFluxSim, build_ghg

CONN_ID = "ftp_fr_aur_smartflux"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW.replace(minute=0) - timedelta(hours=3)  # three closed half-hours from here on


def station(settle: float = 60, pattern: str = "*.ghg", remote_dir: str = "/") -> Station:
    return Station.model_validate(
        {
            "id": "FR-Aur",
            "utc_offset_hours": 1,
            "upload": {"connection_id": "icos"},
            "loggers": [
                {
                    "id": "smartflux",
                    "kind": "smartflux",
                    "collect": {
                        "method": "ftp_pull",
                        "connection_id": CONN_ID,
                        "remote_dir": remote_dir,
                        "pattern": pattern,
                        "settle_seconds": settle,
                    },
                }
            ],
            "files": [
                {
                    "type": "EC",
                    "logger": "smartflux",
                    "logger_number": 2,
                    "file_number": 1,
                    "extension": "zip",
                }
            ],
        }
    )


# --- a station FTP server whose reads can be cut or whose files grow while read


class FaultyFS(AbstractedFS):
    faults: ClassVar[dict] = {}  # set per test

    def open(self, filename, mode):
        if "r" in mode and self.faults.get("grow"):
            with open(filename, "ab") as f:  # the logger appends while we fetch
                f.write(b"appended")
        fobj = super().open(filename, mode)
        cut = self.faults.get("cut_after")
        return _CutFile(fobj, cut) if "r" in mode and cut is not None else fobj


class _CutFile:
    """A file whose reads fail after ``limit`` bytes (the cable is cut mid-transfer)."""

    def __init__(self, f, limit: int):
        self._f, self._left, self.name = f, limit, f.name

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            raise OSError(errno.EIO, "link down")
        data = self._f.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return data

    def seek(self, *args):
        return self._f.seek(*args)

    def fileno(self):
        raise io.UnsupportedOperation("no sendfile")

    def close(self):
        self._f.close()

    @property
    def closed(self):
        return self._f.closed


class FaultyHandler(SimHandler):
    abstracted_fs = FaultyFS
    use_sendfile = False


class NoMlsdHandler(SimHandler):
    proto_cmds: ClassVar[dict] = {
        k: v for k, v in FTPHandler.proto_cmds.items() if k not in ("MLSD", "MLST")
    }


# --- fixtures


def start_sim(root: Path, monkeypatch, handler=SimHandler, **kw) -> SmartFluxSim:
    sim = type("Sim", (SmartFluxSim,), {"handler_class": handler})(
        root, "sf", "sf-secret-1", logger_name="AIU-1359", hz=1, **kw
    ).start()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "ftp",
                "host": "127.0.0.1",
                "port": sim.port,
                "login": "sf",
                "password": "sf-secret-1",
            }
        ),
    )
    return sim


@pytest.fixture
def sim(tmp_path, monkeypatch):
    FaultyFS.faults = {}
    s = start_sim(tmp_path / "station", monkeypatch, FaultyHandler)
    yield s
    s.stop()


@pytest.fixture
def dirs(tmp_path):
    return {"landing": tmp_path / "landing", "spool": tmp_path / "spool"}


def run(conn, dirs, st: Station | None = None, now: datetime = NOW) -> dict:
    st = st or station()
    return pull(conn, st, st.loggers[0], now=now, **dirs)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partials(dirs) -> list[Path]:
    return sorted((dirs["spool"] / "ftp_pull" / "FR-Aur" / "smartflux").glob("*.part"))


def audits(conn, level: str = "ERROR") -> list[str]:
    rows = conn.execute(
        "SELECT message FROM stationflow.audit_log WHERE step = 'collect.ftp_pull'"
        " AND level = %s ORDER BY id",
        (level,),
    ).fetchall()
    return [r[0] for r in rows]


# --- tests


def test_fetches_new_files_once_and_never_again(conn, sim, dirs):
    remote = [sim.publish(T0 + i * PERIOD) for i in range(3)]
    (sim.folder / "notes.txt").write_text("not a .ghg")  # another pattern: not fetched

    summary = run(conn, dirs)
    assert summary["listed"] == 3 and summary["fetched"] == 3 and summary["failed"] == 0
    assert len(summary["landed"]) == 3 and not partials(dirs)
    rows = conn.execute(
        "SELECT f.source, f.source_path, f.path, f.sha256, f.first_ts, f.rows, r.size"
        " FROM stationflow.remote_file r JOIN stationflow.fragment f ON f.id = r.fragment_id"
        " ORDER BY r.remote_path"
    ).fetchall()
    assert [r[1] for r in rows] == [f"{CONN_ID}:/{p.name}" for p in remote]
    for (source, _, path, digest, _, nrows, size), src in zip(rows, remote, strict=True):
        assert source == "ftp_pull:smartflux"
        assert Path(path).parent == dirs["landing"] / "FR-Aur" / "smartflux" / "ghg"
        assert Path(path).read_bytes() == src.read_bytes() and digest == sha(src.read_bytes())
        assert size == src.stat().st_size and nrows == 1800
    assert [r[4] for r in rows] == [T0 + i * PERIOD for i in range(3)]  # period starts (UTC)
    assert len(audits(conn, "INFO")) == 3

    retr, sent = len(sim.commands_of("RETR")), sim.bytes_sent
    again = run(conn, dirs, now=NOW + timedelta(hours=1))
    assert again["skipped_known"] == 3 and again["fetched"] == 0
    assert len(sim.commands_of("RETR")) == retr and sim.bytes_sent == sent  # nothing re-read
    # nothing was ever changed on the station's server
    assert all(p.exists() for p in remote)
    used = {c for c, _ in sim.commands}
    assert not used & {"DELE", "RNFR", "RNTO", "STOR", "APPE", "RMD", "MKD"}


def test_a_changed_remote_file_is_fetched_again_as_a_new_fragment(conn, sim, dirs):
    first = sim.publish(T0)
    sim.publish(T0 + PERIOD)
    run(conn, dirs)
    _, bigger = build_ghg(T0, logger_name="AIU-1359", hz=2)  # rewritten by the station
    first.write_bytes(bigger)
    os.utime(first, (T0.timestamp() + 3600,) * 2)

    summary = run(conn, dirs)
    assert summary["fetched"] == 1 and summary["skipped_known"] == 1
    versions = conn.execute(
        "SELECT r.size, f.sha256 FROM stationflow.remote_file r"
        " JOIN stationflow.fragment f ON f.id = r.fragment_id"
        " WHERE r.remote_path = %s ORDER BY r.fetched_at",
        (f"/{first.name}",),
    ).fetchall()
    assert len(versions) == 2 and versions[1] == (len(bigger), sha(bigger))
    assert sim.commands_of("RETR").count(f"/{first.name}") == 2


def test_a_recent_file_is_left_for_a_later_run(conn, sim, dirs):
    path = sim.publish(T0)  # its modify time is the end of its period
    end = T0 + PERIOD
    summary = run(conn, dirs, now=end + timedelta(seconds=20))
    assert summary["skipped_recent"] == 1 and summary["fetched"] == 0
    assert not sim.commands_of("RETR")
    summary = run(conn, dirs, now=end + timedelta(seconds=61))
    assert summary["fetched"] == 1
    assert sim.commands_of("RETR") == [f"/{path.name}"]


def test_an_interrupted_download_is_resumed_with_rest(conn, sim, dirs):
    path = sim.publish(T0)
    whole = path.read_bytes()
    FaultyFS.faults = {"cut_after": 50_000}
    with pytest.raises(FtpPullInterrupted):
        run(conn, dirs)
    (part,) = partials(dirs)
    offset = part.stat().st_size
    assert 0 < offset < len(whole) and part.read_bytes() == whole[:offset]
    assert "transfer interrupted" in audits(conn)[-1]
    assert not conn.execute("SELECT 1 FROM stationflow.remote_file").fetchall()

    FaultyFS.faults = {}
    sent = sim.bytes_sent
    summary = run(conn, dirs)
    assert summary["fetched"] == 1 and summary["resumed"] == 1
    assert sim.commands_of("REST") == [str(offset)]
    assert sim.bytes_sent - sent == len(whole) - offset  # only the rest travelled
    (landed,) = conn.execute("SELECT path, sha256 FROM stationflow.fragment").fetchall()
    assert Path(landed[0]).read_bytes() == whole and landed[1] == sha(whole)
    assert not partials(dirs)


def test_a_size_mismatch_keeps_the_partial_and_audits_an_error(conn, sim, dirs):
    path = sim.publish(T0)
    listed = path.stat().st_size
    FaultyFS.faults = {"grow": True}
    summary = run(conn, dirs)
    assert summary["failed"] == 1 and summary["fetched"] == 0
    (part,) = partials(dirs)
    assert part.stat().st_size == listed + len(b"appended")
    assert "the listing said" in audits(conn)[-1]
    assert not conn.execute("SELECT 1 FROM stationflow.fragment").fetchall()

    FaultyFS.faults = {}  # the file is stable now: its new version is fetched whole
    summary = run(conn, dirs, now=datetime.now(UTC) + timedelta(minutes=5))
    assert summary["fetched"] == 1 and summary["resumed"] == 0
    (landed,) = conn.execute("SELECT path FROM stationflow.fragment").fetchall()
    assert Path(landed[0]).read_bytes() == path.read_bytes()


def test_a_server_without_mlsd_is_listed_with_nlst_size_mdtm(conn, tmp_path, monkeypatch, dirs):
    sim = start_sim(tmp_path / "old", monkeypatch, NoMlsdHandler, remote_dir="/smartflux/data")
    try:
        sim.publish(T0)
        sim.publish(T0 + PERIOD)
        summary = run(conn, dirs, station(remote_dir="/smartflux/data"))
        assert summary["fetched"] == 2
        assert sim.commands_of("NLST") and len(sim.commands_of("MDTM")) == 2
        modify = conn.execute(
            "SELECT modify FROM stationflow.remote_file ORDER BY remote_path"
        ).fetchall()
        assert [m for (m,) in modify] == [f"{T0 + i * PERIOD:%Y%m%d%H%M%S}" for i in (1, 2)]
        (t,) = conn.execute("SELECT path FROM stationflow.fragment ORDER BY id LIMIT 1").fetchone()
        assert read_ghg(Path(t), utc_offset_hours=1).header.format == "GHG"
    finally:
        sim.stop()


def test_a_missing_remote_folder_is_refused(conn, sim, dirs):
    with pytest.raises(FtpPullRefused):
        run(conn, dirs, station(remote_dir="/no/such/folder"))
    assert "refused" in audits(conn)[-1]
