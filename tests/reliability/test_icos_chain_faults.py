"""The ICOS file chain under faults: collect -> assemble -> upload through the package's
own functions (and a real Airflow task process for the SIGKILL), against real servers
(pyftpdlib, pymodbus, the ICOS ETC upload simulator). Each test injects one fault, lets
the chain recover by retry (calling again, as Airflow's retry does) and records in the
fault matrix what reached the peer and whether the ledger says so.

Uploads: expected = (etc_name, sha256) of each file; delivered = one entry per version of
the data object the portal holds. An upload the portal stored but never answered (a
timeout, a dropped connection, a killed task) cannot be told from one it never got: the
ETC protocol has no idempotency key and no way to ask whether a file arrived, so the retry
sends the identical bytes again; the portal keeps one object for identical content
(REFERENCE section 1) and the matrix shows the resend in its own column. The ledger writes
each attempt before its request goes out, so an attempt whose answer was lost stays in it
as "sent; no answer" - never an upload it does not know of. Collection: expected = the
source's row timestamps; delivered = every row of every fragment the ledger registered
for the stream, so a partial fragment or a row polled twice counts as a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from pyftpdlib.handlers import DTPHandler

from stationflow.collect.ftp_pull import FtpPullInterrupted, pull
from stationflow.collect.tasks import poll_modbus
from stationflow.formats.ghg import read_ghg
from stationflow.formats.toa5 import read_toa5
from stationflow.publish.icos_etc import UploadFailed, upload_output
from stationflow.publish.tasks import upload_outputs
from stationflow.refine.daily import assemble_stream, period_utc
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.modbus_logger import SimLogger
from stationflow.sim.smartflux import PERIOD, SimHandler, SmartFluxSim
from tests.dags.conftest import airflow_db  # noqa: F401
from tests.reliability.icos_setup import (
    DAY,
    INV,
    assemble_bm,
    fast_inventory,
    land_meteo_day,
    output,
    start_portal,
    upload_ledger_problems,
    write_upload_dag,
)

CHAIN = "icos"
FAST = {"retries": 2, "backoff": 0.05, "timeout": (2, 5)}  # the client's own retries, quick


@pytest.fixture
def home(tmp_path, monkeypatch, state_db) -> Path:
    """STATIONFLOW_HOME and the state database of this test (subprocesses inherit both)."""
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    monkeypatch.setenv("STATIONFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def db(home, state_db):
    with psycopg.connect(state_db) as c:
        yield c


@pytest.fixture
def portal(monkeypatch, home):
    p = start_portal(monkeypatch)
    yield p
    p.sim.stop()


def bm_day(db, home) -> int:
    """Collect and assemble FR-Lam's BM day: the output_file id to upload."""
    land_meteo_day(db, home)
    return assemble_bm()


def settle_upload(db, portal, oid: int, first_failure: type[Exception] | None, **client):
    """The upload task's try, then Airflow's retry and the next scheduled run: recovered?"""
    results = []
    try:
        results.append(upload_output(db, oid, conn_id=portal.conn_id, **{**FAST, **client}))
    except Exception as exc:  # the task's failure, checked below
        results.append(exc)
    first_ok = first_failure is None and getattr(results[0], "status", None) == "accepted"
    first_failed = first_failure is not None and isinstance(results[0], first_failure)
    if first_failed:  # Airflow's retry
        results.append(upload_output(db, oid, conn_id=portal.conn_id, **{**FAST, **client}))
    puts = len(portal.sim.puts())
    again = upload_output(db, oid, conn_id=portal.conn_id, **{**FAST, **client})  # a replay
    recovered = (
        (first_ok or first_failed)
        and getattr(results[-1], "status", None) == "accepted"
        and again.status == "skipped"
        and len(portal.sim.puts()) == puts
    )
    return recovered


def record_upload(fault_matrix, fault, db, portal, oid, recovered, *, failed, unreached=0):
    out = output(db, oid)
    problems = upload_ledger_problems(db, portal, oid, failed=failed, unreached=unreached)
    return fault_matrix.record(
        fault,
        chain=CHAIN,
        expected=[(out.etc_name, out.sha256)],
        delivered=portal.copies(out.etc_name),
        recovered=recovered,
        ledger_ok=not problems,
        resent=portal.resent(out.etc_name),
        note="; ".join(problems),
    )


# ------------------------------------------------------------------ 1. portal down


def test_portal_down(fault_matrix, db, home, portal):
    oid = bm_day(db, home)
    port = portal.sim.port
    portal.sim.stop()  # connection refused on the portal's port
    with pytest.raises(UploadFailed, match="no answer"):
        upload_output(db, oid, conn_id=portal.conn_id, **FAST)
    portal.sim.start()  # back, on the same port
    assert portal.sim.port == port
    recovered = settle_upload(db, portal, oid, None)
    row = record_upload(
        fault_matrix, "ICOS upload: portal down", db, portal, oid, recovered, failed=3, unreached=3
    )
    assert row.clean, row


# ------------------------------------------------------------------ 2. 5xx burst


def test_5xx_burst(fault_matrix, db, home, portal):
    oid = bm_day(db, home)
    portal.sim.fail_next(500, times=2, message="Internal Server Error")
    portal.sim.fail_next(503, times=3, message="Service Unavailable")
    recovered = settle_upload(db, portal, oid, UploadFailed)  # 3 tries, then 3 more
    statuses = [r["status"] for r in portal.sim.puts()]
    row = record_upload(
        fault_matrix, "ICOS upload: 5xx burst", db, portal, oid, recovered, failed=5
    )
    assert statuses == [500, 500, 503, 503, 503, 200], statuses
    assert row.clean, row


# ------------------------------------------------------------------ 3. timeout


def test_timeout(fault_matrix, db, home, portal):
    oid = bm_day(db, home)
    portal.sim.delay_next(1.5)  # stored, the answer held past the client's read timeout
    recovered = settle_upload(db, portal, oid, None, timeout=(2, 0.5))
    row = record_upload(fault_matrix, "ICOS upload: timeout", db, portal, oid, recovered, failed=1)
    assert (
        "ReadTimeout"
        in (
            db.execute(
                "SELECT message FROM stationflow.upload WHERE output_file_id = %s AND attempt = 1",
                (oid,),
            ).fetchone()[0]
        )
    )
    assert row.clean, row


# ------------------------------------------------------------------ 4. dropped after store


def test_connection_dropped_after_store(fault_matrix, db, home, portal):
    oid = bm_day(db, home)
    portal.sim.drop_next(after_store=True)
    recovered = settle_upload(db, portal, oid, None)
    row = record_upload(
        fault_matrix,
        "ICOS upload: connection dropped after the portal stored the file",
        db,
        portal,
        oid,
        recovered,
        failed=1,
    )
    assert row.clean and row.resent == 1, row


# ------------------------------------------------------------------ 5. FTP pull cut


class CuttingDTP(DTPHandler):
    """A data connection that is closed after ``limit`` bytes of a file, once per file:
    ``cuts`` maps a file name to (limit, the control reply then sent). "226" is a server
    (or a middlebox's FIN) saying the transfer completed; "426" says it was aborted."""

    cuts: ClassVar[dict[str, tuple[int, str]]] = {}

    def send(self, data):
        name = os.path.basename(getattr(self.file_obj, "name", "") or "")
        cut = self.cuts.get(name)
        if cut is None or self.cmd != "RETR":
            return super().send(data)
        limit, reply = cut
        left = limit - self.tot_bytes_sent
        sent = super().send(data[: max(left, 0)]) if left > 0 else 0
        if self.tot_bytes_sent >= limit:
            self.cuts.pop(name, None)  # once
            self._resp = (
                "226 Transfer complete." if reply == "226" else "426 Connection closed; aborted.",
                lambda *a, **k: None,
            )
            self.close()
        return sent


class CuttingHandler(SimHandler):
    dtp_handler = CuttingDTP
    use_sendfile = False


def fragment_rows(db, station: str, source: str) -> list[tuple[str, int]]:
    """(landing path, row timestamp ns) of every row of every fragment of a source."""
    db.commit()
    rows = []
    for path, status in db.execute(
        "SELECT path, status FROM stationflow.fragment WHERE station = %s AND source = %s"
        " ORDER BY id",
        (station, source),
    ).fetchall():
        assert status != "quarantined", path
        table = (
            read_ghg(Path(path), utc_offset_hours=1) if path.endswith(".ghg") else read_toa5(path)
        )
        rows += [(path, int(ts)) for ts in table.ts]
    return rows


def test_ftp_pull_disconnect_mid_file(fault_matrix, db, home, monkeypatch):
    aur = INV.station("FR-Aur")
    logger = aur.logger("smartflux")
    cfg = logger.collect
    sim = SmartFluxSim(
        home / "station",
        "sf",
        "sf-secret-1",
        logger_name="AIU-1359",
        hz=10,
        remote_dir=cfg.remote_dir,
    )
    sim.handler_class = CuttingHandler
    sim.start()
    try:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{cfg.connection_id.upper()}",
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
        local0, _ = period_utc(aur, DAY, None)
        k = 21  # the half-hour 10:30-11:00 local
        t0 = local0 + PERIOD * k
        first, second = sim.publish(t0), sim.publish(t0 + PERIOD)
        # (above the first 64 KiB chunk, which goes out before the data channel names its file)
        CuttingDTP.cuts = {first.name: (400_000, "226"), second.name: (300_001, "426")}
        expected = []
        for src in (first, second):
            expected += [int(ts) for ts in read_ghg(src.read_bytes(), utc_offset_hours=1).ts]
        landing, spool = home / "landing", home / "spool"
        now = t0 + timedelta(hours=2)
        with pytest.raises(FtpPullInterrupted):  # the task's try: one short file, one cut
            pull(db, aur, logger, landing=landing, spool=spool, now=now)
        after_fault = fragment_rows(db, "FR-Aur", "ftp_pull:smartflux")
        retry = pull(db, aur, logger, landing=landing, spool=spool, now=now)  # Airflow's retry
        replay = pull(db, aur, logger, landing=landing, spool=spool, now=now + PERIOD)
        [oid] = assemble_stream(INV, "FR-Aur", "EC_L02_F01", DAY, half_hour=k + 1)
    finally:
        sim.stop()
        CuttingDTP.cuts = {}

    delivered = fragment_rows(db, "FR-Aur", "ftp_pull:smartflux")
    db.commit()
    frags = db.execute(
        "SELECT f.id, f.sha256, f.size, r.remote_path FROM stationflow.fragment f"
        " JOIN stationflow.remote_file r ON r.fragment_id = f.id ORDER BY f.id"
    ).fetchall()
    out = db.execute(
        "SELECT rows_expected, rows_present, rows_filled FROM stationflow.output_file"
        " WHERE id = %s",
        (oid,),
    ).fetchone()
    lineage = {
        r[0]
        for r in db.execute(
            "SELECT fragment_id FROM stationflow.output_fragment WHERE output_file_id = %s", (oid,)
        ).fetchall()
    }
    errors = [
        m
        for (m,) in db.execute(
            "SELECT message FROM stationflow.audit_log WHERE step = 'collect.ftp_pull'"
            " AND level = 'ERROR' ORDER BY id"
        ).fetchall()
    ]
    whole = {
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
        for p in (first, second)
    }
    resumed = sim.commands_of("REST")
    partials = list((spool / "ftp_pull").rglob("*.part"))
    ledger_ok = (
        not after_fault  # nothing landed from the cut transfers
        and {(Path(r).name, s, n) for _, s, n, r in frags} == whole
        and len(frags) == 2
        and lineage == {f[0] for f in frags}
        and len(errors) == 2
        and "the listing said" in errors[0]
        and "transfer interrupted" in errors[1]
    )
    recovered = (
        retry["fetched"] == 2
        and retry["resumed"] == 2
        and replay["fetched"] == 0
        and resumed == ["400000", "300001"]
        and not partials
        and out is not None
        and out[2] == 0
        and out[1] == out[0]
    )
    row = fault_matrix.record(
        "FTP pull: disconnect mid-file",
        chain=CHAIN,
        expected=expected,
        delivered=[ts for _, ts in delivered],
        recovered=recovered,
        ledger_ok=ledger_ok,
        note=f"REST {resumed}; output rows {out}; errors {errors}",
    )
    assert row.clean, row


# ------------------------------------------------------------------ 6. Modbus timeouts


class SilentLogger(SimLogger):
    """A logger (behind its serial server) that stops answering: the next ``silent``
    answers are never sent, so each of those requests times out at the client."""

    silent = 0

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and data and self.silent > 0:
            self.silent -= 1
            return b""
        return super()._trace_packet(sending, data)


def test_modbus_timeouts(fault_matrix, db, home, monkeypatch):
    from stationflow.collect.modbus import PollFailed

    inv = fast_inventory(INV, "FR-Lam", "cr1000x_soil", timeout_s=0.3, retries=1)
    cfg = inv.station("FR-Lam").logger("cr1000x_soil").collect
    # the last local minutes of DAY (UTC+1): slots 23:54 .. 23:59, polled at second 7
    start = datetime(DAY.year, DAY.month, DAY.day, 22, 54, 7, tzinfo=UTC)
    slots = [start + timedelta(minutes=i) for i in range(6)]
    expected = [f"{DAY:%Y-%m-%d} 23:{54 + i:02d}:00" for i in range(6)]
    tries: list[str] = []
    with SilentLogger.from_config(cfg, period=None) as sim:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{cfg.connection_id.upper()}",
            json.dumps({"conn_type": "generic", "host": "127.0.0.1", "port": sim.port}),
        )
        for i, now in enumerate(slots):
            sim.update(now.timestamp())  # the logger's values of that minute
            if i == 2:
                sim.silent = 3  # silent for more than one poll's own retries (2 requests)
            for attempt in range(3):  # the task and Airflow's retries (5 s apart, same slot)
                try:
                    poll_modbus(
                        "FR-Lam", "cr1000x_soil", inv=inv, now=now + timedelta(seconds=5 * attempt)
                    )
                except PollFailed:
                    tries.append(f"{expected[i]} try {attempt + 1}: failed")
                    continue
                tries.append(f"{expected[i]} try {attempt + 1}: ok")
                break
        # the first poll of the next local day lands the closed day file
        poll_modbus("FR-Lam", "cr1000x_soil", inv=inv, now=start + timedelta(minutes=6))
    [oid] = assemble_stream(inv, "FR-Lam", "ST_L02_F01", DAY)

    source = "modbus:cr1000x_soil/Soil_1min"
    delivered = [
        datetime(1970, 1, 1) + timedelta(microseconds=ts // 1000)
        for _, ts in fragment_rows(db, "FR-Lam", source)
    ]
    db.commit()
    out = db.execute(
        "SELECT rows_expected, rows_present, rows_filled FROM stationflow.output_file"
        " WHERE id = %s",
        (oid,),
    ).fetchone()
    warnings = [
        m
        for (m,) in db.execute(
            "SELECT message FROM stationflow.audit_log WHERE step = 'collect.modbus'"
            " AND level = 'WARNING' ORDER BY id"
        ).fetchall()
    ]
    fragments = db.execute(
        "SELECT count(*) FROM stationflow.fragment WHERE source = %s", (source,)
    ).fetchone()[0]
    recovered = (
        tries.count(f"{expected[2]} try 1: failed") == 1
        and f"{expected[2]} try 2: ok" in tries
        and out == (1440, 6, 1434)
    )
    ledger_ok = fragments == 1 and len(warnings) == 1 and f"no row for {expected[2]}" in warnings[0]
    row = fault_matrix.record(
        "Modbus: timeouts",
        chain=CHAIN,
        expected=expected,
        delivered=[f"{t:%Y-%m-%d %H:%M:%S}" for t in delivered],
        recovered=recovered,
        ledger_ok=ledger_ok,
        note=f"tries {tries}; output rows {out}; warnings {warnings}",
    )
    assert row.clean, row


# ------------------------------------------------------------------ 7. SIGKILL mid-upload


def run_upload_dag(oid: int, logical: datetime, log: Path, dags: Path) -> subprocess.Popen:
    """The upload task in a real Airflow task process (dag.test() in a process of its own,
    with this session's environment: AIRFLOW_HOME, the databases, the Connections)."""
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "RELIABILITY_ICOS_OID": str(oid),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.icos_setup",
                "upload-dag",
                logical.isoformat(),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole, and only it
        )


@pytest.mark.airflow
def test_airflow_task_sigkilled_mid_upload(fault_matrix, airflow_db, db, home, portal, tmp_path):  # noqa: F811
    oid = bm_day(db, home)
    out = output(db, oid)
    log = tmp_path / "task.log"
    hold = portal.sim.hold_next()  # the portal stores the file, then holds its answer
    logical = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    dags = write_upload_dag(tmp_path / "dags")
    proc = run_upload_dag(oid, logical, log, dags)
    try:
        deadline = time.monotonic() + 90
        while not hold.wait_reached(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the task never reached the portal:\n{log.read_text()[-3000:]}")
        db.commit()
        at_kill = (
            len(portal.copies(out.etc_name)),
            db.execute(
                "SELECT count(*) FROM stationflow.upload WHERE output_file_id = %s", (oid,)
            ).fetchone()[0],
        )
        os.killpg(proc.pid, signal.SIGKILL)  # mid-upload: stored by the portal, answer unseen
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        hold.release()
    # the portal holds the file; the ledger holds the attempt, sent and unanswered
    if at_kill != (1, 1) or proc.returncode != -signal.SIGKILL:
        pytest.fail(f"not killed where intended: {at_kill}, rc {proc.returncode}")

    # The retry: Airflow finds the task instance dead and runs it again. It runs the task's
    # callable here (a second task process would cost half the module's time budget); the
    # first process above was the real one, killed.
    done = upload_outputs("FR-Lam", [oid])
    puts = len(portal.sim.puts())
    replay = upload_output(db, oid, conn_id=portal.conn_id, **FAST)  # the next scheduled run
    recovered = done == [oid] and replay.status == "skipped" and len(portal.sim.puts()) == puts
    row = record_upload(
        fault_matrix, "Airflow task SIGKILLed mid-upload", db, portal, oid, recovered, failed=1
    )
    assert row.clean and row.resent == 1, row
