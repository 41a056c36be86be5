"""The receiving FTP server: jails, refused names and commands, landing of complete uploads."""

# ruff: noqa: S321 - an FTP server is tested by speaking FTP to it

from __future__ import annotations

import ftplib
import io
import json
import socket
import struct
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from stationflow.collect.ftp_push import (
    Account,
    ServerThread,
    accounts_from_inventory,
    build_server,
    land_received,
)
from stationflow.config import parse_inventory
from stationflow.connections import MissingConnection
from stationflow.errors import PermanentError
from stationflow.formats.ghg import read_ghg
from stationflow.sim.smartflux import SmartFluxSim, build_ghg

INVENTORY = """
version: 1
stations:
  - id: FR-Lam
    utc_offset_hours: 1
    upload: {connection_id: icos_etc_fr_lam}
    loggers:
      - id: smartflux
        kind: smartflux
        collect: {method: ftp_push, connection_id: ftp_push_fr_lam}
      - id: phenocam
        kind: camera
        collect: {method: ftp_push, connection_id: ftp_push_fr_lam}
    files:
      - {type: EC, logger: smartflux, logger_number: 3, file_number: 1, extension: zip}
      - {type: PHEN, logger: phenocam, logger_number: 4, file_number: 1, extension: jpg}
  - id: FR-Aur
    utc_offset_hours: 1
    upload: {connection_id: icos_etc_fr_aur}
    loggers:
      - id: smartflux
        kind: smartflux
        collect: {method: ftp_push, connection_id: ftp_push_fr_aur}
    files:
      - {type: EC, logger: smartflux, logger_number: 2, file_number: 1, extension: zip}
"""
LAM = ("frlam", "lam-secret-1")
AUR = ("fraur", "aur-secret-1")
PERIOD_START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def set_connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "ftp", **fields})
    )


@pytest.fixture
def inventory(monkeypatch):
    set_connection(monkeypatch, "ftp_push_fr_lam", login=LAM[0], password=LAM[1])
    set_connection(monkeypatch, "ftp_push_fr_aur", login=AUR[0], password=AUR[1])
    return parse_inventory(INVENTORY)


@pytest.fixture
def server(inventory, state_db, tmp_path):
    """A running server; yields (port, spool, landing, problems)."""
    spool, landing = tmp_path / "spool", tmp_path / "landing"
    problems: list[tuple[str | None, str, str]] = []
    srv = build_server(
        accounts_from_inventory(inventory),
        host="127.0.0.1",
        port=0,
        spool=spool,
        on_received=land_received(lambda: psycopg.connect(state_db), landing, inventory),
        on_problem=lambda a, level, msg: problems.append((a and a.login, level, msg)),
    )
    srv.handler.auth_failed_timeout = 0.01  # 3 s in production: slows password guessing
    thread = ServerThread(srv)
    thread.start()
    yield srv.address[1], spool, landing, problems
    thread.stop()


def client(port: int, account=LAM) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10)
    ftp.connect("127.0.0.1", port)
    ftp.login(*account)
    return ftp


def ghg_file(tmp_path: Path) -> Path:
    name, blob = build_ghg(PERIOD_START, logger_name="AIU-1359", hz=1, utc_offset_hours=1)
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def fragments(conn):
    return conn.execute(
        "SELECT source, path, source_path, first_ts FROM stationflow.fragment ORDER BY id"
    ).fetchall()


def test_accounts_come_from_the_connections(inventory):
    accounts = {a.login: a for a in accounts_from_inventory(inventory)}
    assert accounts == {
        "frlam": Account("FR-Lam", ("smartflux", "phenocam"), "frlam", LAM[1]),
        "fraur": Account("FR-Aur", ("smartflux",), "fraur", AUR[1]),
    }
    assert LAM[1] not in repr(accounts["frlam"])


def test_an_account_needs_a_password_and_its_own_station(monkeypatch, inventory):
    set_connection(monkeypatch, "ftp_push_fr_aur", login="fraur")
    with pytest.raises(MissingConnection, match="login and a password"):
        accounts_from_inventory(inventory)
    shared = parse_inventory(INVENTORY.replace("ftp_push_fr_aur", "ftp_push_fr_lam"))
    with pytest.raises(PermanentError, match="each station needs its own account"):
        accounts_from_inventory(shared)


def test_a_station_uploads_into_its_jail_and_the_file_lands(conn, server, tmp_path):
    port, spool, landing, problems = server
    path = ghg_file(tmp_path)
    reply = SmartFluxSim.push_to("127.0.0.1", port, *LAM, path)
    assert reply.startswith("226")
    jail = spool / "ftp_push" / "FR-Lam" / "frlam"
    assert (jail / path.name).read_bytes() == path.read_bytes()
    assert not list(jail.glob(".*"))  # no partial left behind

    photo = tmp_path / "FR-Lam_phenocam_202611201000.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a camera image")
    SmartFluxSim.push_to("127.0.0.1", port, *LAM, photo)

    (ghg, jpg) = fragments(conn)
    assert ghg[0] == jpg[0] == "ftp_push:FR-Lam/frlam"
    assert Path(ghg[1]).parent == landing / "FR-Lam" / "smartflux" / "ghg"
    assert Path(jpg[1]).parent == landing / "FR-Lam" / "phenocam" / "images"
    statuses = conn.execute("SELECT status FROM stationflow.fragment ORDER BY id").fetchall()
    assert statuses == [("collected",), ("collected",)]  # an image is a payload, not bad input
    assert ghg[2] == str(jail / path.name) and ghg[3] == PERIOD_START
    assert read_ghg(Path(ghg[1]), utc_offset_hours=1).header.format == "GHG"
    assert not problems

    # the same file again (a station retrying) lands nothing new
    SmartFluxSim.push_to("127.0.0.1", port, *LAM, path)
    assert len(fragments(conn)) == 2 and sorted(p.name for p in jail.iterdir()) == sorted(
        [path.name, photo.name]
    )
    # other bytes under a name already there never overwrite it
    SmartFluxSim.push_to("127.0.0.1", port, *LAM, photo, remote_name=path.name)
    assert (jail / path.name).read_bytes() == path.read_bytes()
    assert (jail / f"{path.stem}.2.ghg").read_bytes() == photo.read_bytes()

    # another station sees none of it
    with client(port, AUR) as other:
        assert other.nlst() == []
        assert other.pwd() == "/"
        for cmd in ("CWD ../frlam", "CWD /../../FR-Lam/frlam", f"SIZE ../frlam/{path.name}"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                other.sendcmd(cmd)


@pytest.mark.parametrize(
    "name",
    ["../../evil", "/etc/x", "sub/../../evil", ".hidden.ghg", "bad name.ghg", "x;rm.ghg", "a\\b"],
)
def test_unsafe_upload_names_are_refused_with_553(server, name):
    port, spool, _, problems = server
    with client(port) as ftp, pytest.raises(ftplib.error_perm, match=r"^553"):
        ftp.storbinary(f"STOR {name}", io.BytesIO(b"payload"))
    assert [p for p in (spool / "ftp_push").rglob("*") if p.is_file()] == []
    assert problems and problems[-1][:2] == ("frlam", "WARNING") and "refused" in problems[-1][2]


def test_only_list_store_and_make_folders_are_allowed(server, tmp_path):
    port, spool, _, _ = server
    with client(port) as ftp:
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.cwd("..")  # out of the jail
        ftp.mkd("2026")
        ftp.cwd("2026")
        ftp.storbinary("STOR a.dat", io.BytesIO(b"1,2\n"))
        assert ftp.nlst() == ["a.dat"]
        for cmd in ("DELE a.dat", "RNFR a.dat", "RMD /2026", "MKD ../../up", "MKD .git"):
            with pytest.raises(ftplib.error_perm, match=r"^55"):
                ftp.sendcmd(cmd)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrbinary("RETR a.dat", lambda b: None)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.storbinary("APPE a.dat", io.BytesIO(b"more"))
        with pytest.raises(ftplib.error_perm, match=r"^502"):
            ftp.storbinary("STOU", io.BytesIO(b"x"))
    assert (spool / "ftp_push" / "FR-Lam" / "frlam" / "2026" / "a.dat").read_bytes() == b"1,2\n"


def test_anonymous_and_wrong_passwords_are_refused(server):
    port, _, _, problems = server
    for account in (("anonymous", "guest@"), (LAM[0], "wrong"), (AUR[0], LAM[1])):
        with ftplib.FTP(timeout=10) as ftp:
            ftp.connect("127.0.0.1", port)
            with pytest.raises(ftplib.error_perm, match=r"^530"):
                ftp.login(*account)
    assert [p[2].split(" (")[0] for p in problems] == [
        "login refused for user 'anonymous'",
        "login refused for user 'frlam'",
        "login refused for user 'fraur'",
    ]


def test_an_interrupted_upload_is_not_landed(conn, server, tmp_path):
    port, spool, _, problems = server
    blob = ghg_file(tmp_path).read_bytes()
    jail = spool / "ftp_push" / "FR-Lam" / "frlam"
    with client(port) as ftp:
        ftp.voidcmd("TYPE I")
        data = ftp.transfercmd("STOR cut.ghg")
        data.sendall(blob[:20_000])
        wait_for(lambda: size_of(jail / ".cut.ghg.part") == 20_000)  # the server has it all
        data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        data.close()  # a reset, not an end of file: the station lost its link
        with pytest.raises(ftplib.error_temp, match=r"^426"):
            ftp.voidresp()
    assert not (jail / "cut.ghg").exists() and (jail / ".cut.ghg.part").exists()
    assert fragments(conn) == []
    assert problems[-1][1] == "WARNING" and "cut.ghg interrupted" in problems[-1][2]

    with client(port) as ftp:  # sent again: complete, landed
        ftp.storbinary("STOR cut.ghg", io.BytesIO(blob))
    assert (jail / "cut.ghg").read_bytes() == blob and not (jail / ".cut.ghg.part").exists()
    assert len(fragments(conn)) == 1
