"""The record chain under faults: each test feeds realistic input through the real peers
(the Whale simulator, a real influxd, the real STA server, the SOS-T simulator, a PostgreSQL
of its own, a real Airflow task process), injects one fault, lets the package's own code
recover by a retry (the call again, as Airflow's retry makes it) and records in the fault
matrix what the peer ended up holding against what the input held.

Harvest rows count raw hours (device, day, hour, samples, sha256 of the body the API serves)
read back from smartem_raw.timeseries; publish rows count values (target, device, indicator,
end of hour, value) read back from the server. ``ledger_ok``: the harvester's sync state /
the publish ledger say exactly what the peer holds, and the failures left their audit rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pendulum
import psycopg
import pytest

from stationflow.collect.harvest import HarvestError, harvest
from stationflow.collect.influxdb import InfluxSource
from stationflow.collect.raw_store import day_hour, hour_start
from stationflow.collect.tasks import harvest_source
from stationflow.collect.whale import WhaleSource
from stationflow.config import parse_inventory
from stationflow.publish.records import ledger
from stationflow.publish.records.run import publish_network
from stationflow.publish.records.sos_target import SosTarget
from stationflow.publish.records.sta_target import StaTarget
from stationflow.publish.sos import SosClient, SosUnavailable
from stationflow.publish.sta import StaClient, StaUnavailable
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.airsenseur import CHANNELS, AirSensEURSim
from stationflow.sim.sos import SosSim
from stationflow.sim.whale import WhaleSim
from stationflow.state import embedded
from stationflow.state.db import ensure_database
from stationflow.state.migrate import migrate
from tests.clock import Clock
from tests.dags.conftest import airflow_db  # noqa: F401
from tests.influx_server import InfluxServer, influxd_binary
from tests.record_chain import harvest_and_refine
from tests.reliability.record_setup import (
    FaultyProxy,
    H,
    hour_starts,
    ledger_states,
    publish_ledger_problems,
    raw_delivered,
    raw_ledger_problems,
    refined_expected,
    sos_held,
    sta_held,
    unsettled,
    whale_expected,
)

TOKEN = "whale-bearer-rel-4d1c"
DEVICES = [23, 26]
T0 = datetime(2026, 2, 14, 10, 30, tzinfo=UTC)  # "now": hour 11 (10:00-10:59) is filling
LOOKBACK = 6  # hours harvested per run: 04:00..09:59
WHALE = "whale:whale_api"
NET = parse_inventory("""
sensor_networks:
  - id: se
    name: Smart Emission reliability
    harvest: [{kind: whale, connection_id: whale_api}]
    indicators: [temperature, pressure, humidity, noiseavg, co2]
    publish: [{kind: sta, connection_id: sta_rel}, {kind: sos, connection_id: sos_rel}]
""").network("se")
STA_TARGET, SOS_TARGET = "sta:sta_rel", "sos:sos_rel"


def window(lookback: int = LOOKBACK) -> tuple[datetime, datetime]:
    end = T0.replace(minute=0)
    return end - lookback * H, end


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def sim(clock: Clock) -> Iterator[WhaleSim]:
    with WhaleSim(DEVICES, token=TOKEN, clock=clock, history_hours=72) as s:
        yield s


@pytest.fixture
def db(state_db: str) -> Iterator[psycopg.Connection]:
    """Autocommit, as a task's connection: harvest and publish commit batch by batch."""
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


def whale_source(sim: WhaleSim, **kw) -> WhaleSource:
    kw.setdefault("retries", 1)
    kw.setdefault("backoff", 0.01)
    return WhaleSource(url=sim.url, connection_id="whale_api", token=TOKEN, **kw)


def run_harvest(conn: psycopg.Connection, src, *, batch_hours: int = 3, lookback=LOOKBACK):
    return harvest(
        conn,
        src,
        until=T0,
        now=T0,
        lookback=lookback * H,
        workers=2,
        batch_hours=batch_hours,
        network="se",
    )


def record_harvest(fault_matrix, fault, conn, sim, *, recovered, audited, note, lookback=LOOKBACK):
    start, end = window(lookback)
    expected = whale_expected(sim, DEVICES, start, end)
    problems = raw_ledger_problems(conn, WHALE, expected, audited=audited)
    return fault_matrix.record(
        fault,
        chain="record",
        expected=expected,
        delivered=raw_delivered(conn, WHALE),
        recovered=recovered,
        ledger_ok=not problems,
        note="; ".join([note, *problems]),
    )


# ------------------------------------------------------------------ Whale API


def test_whale_peer_down(db, sim, fault_matrix) -> None:
    sim.stop()  # nothing listens on the port: connection refused
    with pytest.raises(HarvestError, match="no answer"):
        run_harvest(db, whale_source(sim))
    assert raw_delivered(db, WHALE) == []
    sim.start()  # the same port, up again: Airflow's retry
    report = run_harvest(db, whale_source(sim))
    row = record_harvest(
        fault_matrix,
        "Whale API: peer down",
        db,
        sim,
        recovered=not report.failures and report.written.inserted == 2 * LOOKBACK,
        audited="cannot list devices",
        note="connection refused on /devices; retry stored every hour",
    )
    assert row.clean, row


def test_whale_5xx_burst(db, sim, fault_matrix) -> None:
    # two attempts per GET (retries=1): device 26's burst is absorbed by the client's own
    # retry, device 23's outlasts it and the device is skipped until the next attempt
    sim.fail_device(23, status=503, times=3)
    sim.fail_device(26, status=502, times=1)
    first = run_harvest(db, whale_source(sim))
    assert set(first.failures) == {23} and "HTTP 503" in first.failures[23]
    assert {k[0] for k in raw_delivered(db, WHALE)} == {26}
    report = run_harvest(db, whale_source(sim))
    row = record_harvest(
        fault_matrix,
        "Whale API: 5xx burst",
        db,
        sim,
        recovered=not report.failures,
        audited="device 23 not harvested",
        note="503 x3 on device 23 (skipped, audited), 502 x1 on 26 (retried in the client)",
    )
    assert row.clean, row


def test_whale_timeout(db, sim, fault_matrix) -> None:
    # device 23: its listings and first hour answer at once, then three answers are held
    # past the 0.4 s read timeout: the walk dies after one hour, the retry's first GET
    # times out too and its second gets through
    sim.delay(1.2, device=23, skip=3, times=3)
    first = run_harvest(db, whale_source(sim, timeout=0.4), batch_hours=2)
    assert set(first.failures) == {23} and "ReadTimeout" in first.failures[23]
    # what the dead walk had fetched is committed: a prefix (its first hour), no more
    assert [k[:3] for k in raw_delivered(db, WHALE) if k[0] == 23] == [(23, 20260214, 5)]
    report = run_harvest(db, whale_source(sim, timeout=0.4), batch_hours=2)
    row = record_harvest(
        fault_matrix,
        "Whale API: timeout",
        db,
        sim,
        recovered=not report.failures,
        audited="device 23 not harvested",
        note="3 answers held 1.2 s past a 0.4 s read timeout, mid-walk",
    )
    assert row.clean, row


def test_whale_connection_dropped_mid_transfer(db, sim, fault_matrix) -> None:
    sim.cut_next(3, device=26, keep=0.5)  # half the body, then the socket closes
    first = run_harvest(db, whale_source(sim))
    assert set(first.failures) == {26}, first.failures
    report = run_harvest(db, whale_source(sim))
    row = record_harvest(
        fault_matrix,
        "Whale API: connection dropped mid-transfer",
        db,
        sim,
        recovered=not report.failures,
        audited="device 26 not harvested",
        note="3 hour bodies cut at 50% with the full Content-Length; none stored cut",
    )
    assert row.clean, row


# ------------------------------------------------------------------ InfluxDB

BOXES = {"ASE_REL_01": 1183001, "ASE_REL_02": 1183002}
INFLUX_T0 = datetime(2026, 2, 14, 6, tzinfo=UTC)
INFLUX_HOURS = 3


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxServer]:
    """A real influxd of this test's own (it is stopped on purpose)."""
    influxd_binary()  # skipped without influxd (a failure under CI)
    with InfluxServer(tmp_path / "influxd") as server:
        yield server


def test_influxdb_peer_down(db, influx, fault_matrix) -> None:
    boxes = AirSensEURSim(influx.url, f"ase_{uuid.uuid4().hex[:8]}", BOXES)
    boxes.ensure_database()
    end = INFLUX_T0 + INFLUX_HOURS * H
    boxes.write_hours(INFLUX_T0, end)
    per_hour = 60 * len(CHANNELS)  # a point per minute and channel (the channel is a tag)
    expected = {
        (d, *day_hour(t), per_hour) for d in BOXES.values() for t in hour_starts(INFLUX_T0, end)
    }

    def source() -> InfluxSource:
        return InfluxSource(
            url=influx.url,
            database=boxes.database,
            measurements=BOXES,
            connection_id="influx_rel",
            timeout=2,
            retries=1,
        )

    def run(src: InfluxSource):
        return harvest(db, src, until=end, now=end + H / 2, lookback=INFLUX_HOURS * H,
                       workers=2, batch_hours=2, network="se")  # fmt: skip

    influx.stop()
    first = run(source())
    assert sorted(first.failures) == sorted(BOXES.values())  # every device: the task fails
    assert "no answer" in next(iter(first.failures.values()))
    influx.start()  # same port and data folder
    report = run(source())
    harvester = "influxdb:influx_rel"
    delivered = [(d, day, h, n) for d, day, h, n, _ in raw_delivered(db, harvester)]
    problems = raw_ledger_problems(db, harvester, expected, audited="not harvested")
    row = fault_matrix.record(
        "InfluxDB: peer down",
        chain="record",
        expected=expected,
        delivered=delivered,
        recovered=not report.failures,
        ledger_ok=not problems,
        note="; ".join(["influxd stopped (connection refused), started again", *problems]),
    )
    assert row.clean, row


# ------------------------------------------------------------------ STA


def create_observations(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/CreateObservations")


def test_sta_outage_during_publish(db, sim, clock, sta, fault_matrix) -> None:
    harvest_and_refine(db, sim, clock, NET, TOKEN, hours=4)
    expected = refined_expected(db, STA_TARGET)
    assert len(expected) >= 30
    proxy = FaultyProxy(f"http://127.0.0.1:{sta.port}").start()
    try:

        def target() -> StaTarget:
            return StaTarget(
                StaClient(proxy.url("/sensorthings/v1.1"), timeout=10), NET, STA_TARGET
            )

        # 1. the server stores the second batch but goes down before it answers
        proxy.drop_next(1, match=create_observations, skip=1)
        with pytest.raises(StaUnavailable):
            publish_network(db, NET, target(), batch=10)
        states = ledger_states(db, STA_TARGET)
        assert states == {"published": 10, "sending": 10}, states
        resent = unsettled(db, STA_TARGET)
        since, until = min(t for *_, t, _ in expected), max(t for *_, t, _ in expected)
        assert len(sta_held(StaClient(sta.url), since, until)) == 20  # stored, unconfirmed
        # 2. down: connection refused
        proxy.stop()
        with pytest.raises(StaUnavailable):
            publish_network(db, NET, target(), batch=10)
        # 3. up behind a proxy answering 503 (a 5xx burst)
        proxy.start()
        proxy.fail_next(2, 503)
        for _ in range(2):  # the client does not retry: each attempt meets one 503
            with pytest.raises(StaUnavailable, match="503"):
                publish_network(db, NET, target(), batch=10)
        # 4. the retry: 'sending' values are looked up, found, and not sent again
        summary = publish_network(db, NET, target(), batch=10)
    finally:
        proxy.stop()
    held = sta_held(StaClient(sta.url), since, until)
    problems = publish_ledger_problems(db, STA_TARGET, held, expected, resent=resent)
    row = fault_matrix.record(
        "STA: 5xx burst / server down during publish",
        chain="record",
        expected=expected,
        delivered=[(STA_TARGET, d, n, t, v) for d, n, t, v, _ in held],
        recovered=summary.failed == 0 and summary.values == len(expected) - 10,
        ledger_ok=not problems,
        note="; ".join(["answer lost after store, refused, 503 x2, then retry", *problems]),
    )
    assert row.clean, row


# ------------------------------------------------------------------ SOS-T


@pytest.fixture
def sos() -> Iterator[SosSim]:
    with SosSim() as s:
        yield s


def sos_target(sos: SosSim) -> SosTarget:
    return SosTarget(SosClient(sos.url, timeout=10), NET, SOS_TARGET)


def fault_after_first_batch(monkeypatch, inject) -> None:
    """``inject()`` once the run's first batch is settled: the fault lands mid-run."""
    real = ledger.settle
    calls = {"n": 0}

    def settle(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            inject()

    monkeypatch.setattr(ledger, "settle", settle)


def record_sos(fault_matrix, fault, db, sos, expected, *, resent, recovered, note):
    held = sos_held(sos)
    problems = publish_ledger_problems(db, SOS_TARGET, held, expected, resent=resent)
    return fault_matrix.record(
        fault,
        chain="record",
        expected=expected,
        delivered=[(SOS_TARGET, d, n, t, v) for d, n, t, v, _ in held],
        recovered=recovered,
        ledger_ok=not problems,
        note="; ".join([note, *problems]),
    )


def test_sos_answer_dropped_after_store(db, sim, clock, sos, fault_matrix, monkeypatch) -> None:
    harvest_and_refine(db, sim, clock, NET, TOKEN, hours=4)
    expected = refined_expected(db, SOS_TARGET)
    fault_after_first_batch(monkeypatch, lambda: sos.drop_next(1))
    with pytest.raises(SosUnavailable):
        publish_network(db, NET, sos_target(sos), batch=10)
    states = ledger_states(db, SOS_TARGET)
    assert states == {"published": 10, "sending": 10}, states
    resent = unsettled(db, SOS_TARGET)
    assert len(sos.observations()) > 10  # the dropped request was stored
    summary = publish_network(db, NET, sos_target(sos), batch=10)
    row = record_sos(
        fault_matrix,
        "SOS-T: answer dropped after store",
        db,
        sos,
        expected,
        resent=resent,
        recovered=summary.failed == 0,
        note="InsertObservation stored, connection closed unanswered; retry deletes+inserts",
    )
    assert row.clean, row


def test_sos_5xx_burst(db, sim, clock, sos, fault_matrix, monkeypatch) -> None:
    harvest_and_refine(db, sim, clock, NET, TOKEN, hours=4)
    expected = refined_expected(db, SOS_TARGET)
    fault_after_first_batch(monkeypatch, lambda: sos.fail_next(3, 503))
    with pytest.raises(SosUnavailable, match="503"):
        publish_network(db, NET, sos_target(sos), batch=10)
    assert ledger_states(db, SOS_TARGET) == {"published": 10, "sending": 10}
    resent = unsettled(db, SOS_TARGET)
    for _ in range(2):  # the burst outlasts two of Airflow's retries
        with pytest.raises(SosUnavailable, match="503"):
            publish_network(db, NET, sos_target(sos), batch=10)
    summary = publish_network(db, NET, sos_target(sos), batch=10)
    row = record_sos(
        fault_matrix,
        "SOS-T: 5xx burst",
        db,
        sos,
        expected,
        resent=resent,
        recovered=summary.failed == 0,
        note="503 x3 from the second batch on (nothing stored), the third retry lands",
    )
    assert row.clean, row


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture
def own_pg() -> Iterator[Path]:
    """A PostgreSQL server of this test's own (restarted on purpose); never the session's.
    A short folder: the Unix socket lives inside it."""
    tmp = Path(tempfile.mkdtemp(prefix="sf-pgr-"))
    pgdata = tmp / "pg"
    try:
        info, _ = embedded.ensure_running(pgdata)
        ensure_database(info.url("postgres"), "stationflow")
        migrate(info.url("stationflow"), PROJECT_ROOT / "sql")
        yield pgdata
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(tmp, ignore_errors=True)


def test_postgresql_restarted_mid_run(own_pg, sim, fault_matrix) -> None:
    info = embedded.status(own_pg)
    assert info is not None
    lookback = 12
    sim.pause_after(10)  # the Whale API stalls after 10 hour documents
    outcome: dict = {}

    def first_run() -> None:
        try:
            with psycopg.connect(info.url("stationflow"), autocommit=True) as conn:
                outcome["report"] = run_harvest(conn, whale_source(sim), batch_hours=4,
                                                lookback=lookback)  # fmt: skip
        except Exception as exc:  # what the task would die of
            outcome["error"] = exc

    worker = threading.Thread(target=first_run)
    worker.start()
    try:
        assert sim.wait_paused(30)
        deadline = time.monotonic() + 20
        with psycopg.connect(info.url("stationflow"), autocommit=True) as probe:
            while True:  # two batches of four committed before the restart
                n = probe.execute("SELECT count(*) FROM smartem_raw.timeseries").fetchone()[0]
                if n == 8 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert n == 8
        assert embedded.stop(own_pg, expected_pid=info.pid)  # fast shutdown: sessions end
        restarted, started = embedded.ensure_running(own_pg)
        assert started and restarted.pid != info.pid
    finally:
        sim.resume()
        worker.join(60)
    assert isinstance(outcome.get("error"), psycopg.OperationalError), outcome
    with psycopg.connect(restarted.url("stationflow"), autocommit=True) as conn:
        assert len(raw_delivered(conn, WHALE)) == 8  # committed batches survived the restart
        report = run_harvest(conn, whale_source(sim), batch_hours=4, lookback=lookback)
        row = record_harvest(
            fault_matrix,
            "PostgreSQL restarted mid-run",
            conn,
            sim,
            recovered=not report.failures and report.written.inserted == 2 * lookback - 8,
            audited=None,  # the database was the thing down: the retry's INFO row only
            note="fast shutdown + start after 2 of 6 batches; retry on a new connection",
            lookback=lookback,
        )
    assert row.clean, row


# ------------------------------------------------------------------ Airflow

AIRFLOW = Path(sys.executable).parent / "airflow"
HARVEST_TASK = "smartemission.harvest_whale_whale_api"
KILL_LOOKBACK = 150  # hours per device: 300 in all, batches of 200 (the task's default)
RECORD_TABLES = (
    "smartem_raw.timeseries, smartem_raw.harvester_progress, smartem_raw.quarantine,"
    " smartem_refined.timeseries, smartem_publish.observation"
)


KILL_NOTE = (
    "airflow tasks test SIGKILLed (its process group) after 250 of 300 hours, 200 committed;"
    " the retry (the task's callable, same interval) stored the other 100"
)


def session_db() -> psycopg.Connection:
    return psycopg.connect(os.environ["STATIONFLOW_DB_URL"], autocommit=True)


@pytest.fixture
def empty_record_chain() -> Iterator[None]:
    """The session database's record tables empty before and after (the DAG tests count
    what their own runs wrote)."""
    with session_db() as c:
        c.execute(f"TRUNCATE {RECORD_TABLES} CASCADE")
    yield
    with session_db() as c:
        c.execute(f"TRUNCATE {RECORD_TABLES} CASCADE")


def harvest_task_env(tmp_path: Path, sim: WhaleSim) -> dict[str, str]:
    """The shipped inventory with a longer Whale look-back (so a run spans two batches), and
    the Whale Connection pointing at the simulator."""
    shipped = (PROJECT_ROOT / "config" / "stations.yaml").read_text()
    block = "      - kind: whale\n        connection_id: whale_api\n        devices: all\n"
    assert shipped.count(block + "        lookback_hours: 48\n") == 1
    config = tmp_path / "stations.yaml"
    config.write_text(
        shipped.replace(
            block + "        lookback_hours: 48\n",
            block + f"        lookback_hours: {KILL_LOOKBACK}\n",
        )
    )
    whale = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": sim.port,
        "schema": "http",
        "password": TOKEN,
        "extra": {"base_path": "/sensors/v1", "retries": 1},
    }
    return {
        **os.environ,
        "STATIONFLOW_CONFIG": str(config),
        "AIRFLOW_CONN_WHALE_API": json.dumps(whale),
    }


def airflow_task(env: dict[str, str], logical_date: datetime, log: Path) -> subprocess.Popen:
    """``airflow tasks test`` of the Whale harvest task: a real task process (and whatever
    it starts) in a process group of its own."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(AIRFLOW), "tasks", "test", "smartem_harvest", HARVEST_TASK,
             logical_date.isoformat()],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.airflow
@pytest.mark.usefixtures("airflow_db", "empty_record_chain")
def test_airflow_task_sigkilled_mid_harvest(tmp_path, fault_matrix, monkeypatch) -> None:
    from airflow.timetables.interval import CronDataIntervalTimetable  # as dags/smartem_harvest

    now = datetime.now(UTC)
    # a run of an hour that has ended: its window is the same whenever the run (or its
    # retry) happens
    logical = now.replace(minute=0, second=0, microsecond=0) - H
    log = tmp_path / "task.log"
    with WhaleSim(DEVICES, token=TOKEN, history_hours=KILL_LOOKBACK + 12, late_every=0) as sim:
        env = harvest_task_env(tmp_path, sim)
        sim.pause_after(250)  # batch 1 (200 hours) committed, batch 2 half fetched
        proc = airflow_task(env, logical, log)
        try:
            assert sim.wait_paused(150), tail(log)
            os.killpg(proc.pid, signal.SIGKILL)  # the task's own process group
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
            sim.resume()
        with session_db() as c:
            killed = raw_delivered(c, WHALE)
            progress = dict(
                c.execute(
                    "SELECT device_id, last_start FROM smartem_raw.harvester_progress"
                    " WHERE harvester = %s",
                    (WHALE,),
                ).fetchall()
            )
        # what the kill left: exactly the committed batch, a prefix of each device's walk
        assert len(killed) == 200, len(killed)
        for d in DEVICES:
            have = sorted(hour_start(day, h) for dd, day, h, *_ in killed if dd == d)
            assert have == [have[0] + i * H for i in range(len(have))]
            assert progress[d] == have[-1]
        # Airflow's retry: the task's callable again, with the run's interval and inventory
        for name in ("STATIONFLOW_CONFIG", "AIRFLOW_CONN_WHALE_API"):
            monkeypatch.setenv(name, env[name])
        interval = CronDataIntervalTimetable("0 * * * *", timezone="UTC")
        manual = interval.infer_manual_data_interval(run_after=pendulum.instance(logical))
        context = {
            "data_interval_start": manual.start,
            "data_interval_end": manual.end,
            "dag_run": SimpleNamespace(run_id="manual__retry", run_type="manual"),
            "ti": SimpleNamespace(dag_id="smartem_harvest", task_id=HARVEST_TASK, try_number=2),
        }
        summary = harvest_source("smartemission", WHALE, context)
        with session_db() as c:
            end = datetime.fromisoformat(summary["until"])
            start = end - KILL_LOOKBACK * H
            for d in DEVICES:  # the killed run walked the same window from its start
                assert min(hour_start(day, h) for dd, day, h, *_ in killed if dd == d) == start
            expected = whale_expected(sim, DEVICES, start, end)
            problems = raw_ledger_problems(c, WHALE, expected, audited=None)
            row = fault_matrix.record(
                "Airflow task SIGKILLed mid-harvest",
                chain="record",
                expected=expected,
                delivered=raw_delivered(c, WHALE),
                recovered=(summary["inserted"], summary["unchanged"], summary["failed_devices"])
                == (100, 200, []),
                ledger_ok=not problems,
                note="; ".join([KILL_NOTE, *problems]),
            )
    assert row.clean, row
