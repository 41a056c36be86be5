"""The Last Values ETL against the real PostgreSQL: the Whale simulator's ``/last`` and a
real influxd fed by AirSensEUR boxes, refreshed into smartem_rt.last_device_output under a
fixed clock: one row per device and indicator, never back in time, stale after 2 hours,
a failing device audited while the others refresh."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests

from stationflow.collect.harvest import HarvestError
from stationflow.collect.influxdb import InfluxSource, parse_time_ns
from stationflow.collect.whale import WhaleSource
from stationflow.config import parse_inventory
from stationflow.refine.records.definitions import defs_for
from stationflow.refine.records.last_values import newest_sample_time, refresh
from stationflow.refine.records.refiner import Calibration, wanted_for
from stationflow.refine.records.tasks import ase_calibration
from stationflow.sim.airsenseur import AirSensEURSim
from stationflow.sim.whale import WhaleSim, device_position
from tests.clock import Clock
from tests.influx_server import InfluxServer

TOKEN = "whale-bearer-7f3a9c"
DEVICES = [23, 26, 31]
BOXES = {"ASE_NL_01": 11820001, "ASE_NL_02": 11820002}
T0 = datetime(2026, 1, 20, 10, 30, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
INDICATORS = ["temperature", "pressure", "humidity", "noiseavg", "noiselevelavg", "co2",
              "o3", "co", "no2", "no", "o3raw", "coraw", "no2raw", "noraw"]  # fmt: skip
INVENTORY = f"""
sensor_networks:
  - id: se
    harvest:
      - {{kind: whale, connection_id: whale_api}}
      - {{kind: influxdb, connection_id: influx_ase, database: ase,
         measurements: {json.dumps(BOXES)}}}
    devices:
      - {{id: 23, type: josene, name: Nijmegen-Centrum}}
      - {{id: 11820001, type: ase, name: ASE_NL_01, calibration: {{
           co: {{a0: 3106.838, a1: 0.2112824, a2: 0.2448138}},
           'no': {{a0: 2384.5561239, a1: 0.4851297, a2: -1.573699, a3: 0.1028684}},
           no2: {{a0: 6141.5933846, a1: -0.1479105, a2: -0.1959212}},
           o3: {{a0: 6134.694, a1: -0.2636486, a2: -0.2597192, a3: 0.1249437}}}}}}
      - {{id: 11820002, type: ase, name: ASE_NL_02}}
    indicators: {json.dumps(INDICATORS)}
"""
NET = parse_inventory(INVENTORY).network("se")
CAL = Calibration(ase=ase_calibration(NET))
# Josene: no ANN model here, so its gases are skipped; 'no' is not a Josene indicator
JOSE = [n for n in wanted_for(defs_for("jose"), INDICATORS) if n not in ("co", "no2", "o3")]
# the simulated devices' newest sample at T0 carries no s_co2 (a Josene reports it less
# often than the rest), the one 20 minutes later does
AT_T0 = [n for n in JOSE if n != "co2"]
ROW = "device_id, name, value, value_raw, time, value_stale, lon, lat, device_name, unique_id"


@pytest.fixture
def conn(state_db: str) -> Iterator[psycopg.Connection]:
    """Autocommit, as the task's: refresh opens its one transaction itself."""
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


@pytest.fixture
def boxes(influxd: InfluxServer, clock: Clock) -> AirSensEURSim:
    """Two ASE boxes that reported every minute of the last hour up to T0 (exclusive)."""
    s = AirSensEURSim(influxd.url, f"ase_{uuid.uuid4().hex[:10]}", BOXES, clock=clock)
    s.ensure_database()
    s.write_hours(T0 - H, T0)
    return s


def whale(sim: WhaleSim, **kw) -> WhaleSource:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("retries", 0)
    return WhaleSource(url=sim.url, connection_id="whale_api", token=TOKEN, **kw)


def influx(boxes: AirSensEURSim) -> InfluxSource:
    return InfluxSource(
        url=boxes.url, database=boxes.database, measurements=BOXES, connection_id="influx_ase"
    )


def last_sample(sim: WhaleSim, device: int) -> dict:
    r = requests.get(
        f"{sim.url}/devices/{device}/last", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert r.status_code == 200
    return r.json()


def rows(conn: psycopg.Connection) -> dict[tuple[int, str], tuple]:
    found = conn.execute(f"SELECT {ROW} FROM smartem_rt.last_device_output")  # noqa: S608
    return {(r[0], r[1]): r[2:] for r in found}


def audits(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT level, message, details FROM stationflow.audit_log WHERE step = 'last' ORDER BY id"
    ).fetchall()


def at(text: str) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=parse_time_ns(text) // 1000)


def round_half_away(x: float, digits: int = 0) -> float:
    return math.copysign(math.floor(abs(x) * 10**digits + 0.5) / 10**digits, x)


def test_refresh_writes_one_row_per_device_and_indicator(conn, sim, clock) -> None:
    summary = refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    got = rows(conn)
    assert sorted(got) == sorted((d, n) for d in DEVICES for n in AT_T0)
    assert (summary.devices, summary.sampled, summary.inserted) == (3, 3, 3 * len(AT_T0))
    assert summary.failed == {} and summary.fresh == 3 * len(AT_T0) and summary.stale == 0
    assert summary.skipped["no2"] == "no valid calibration model for no2"
    # device 23 by hand from the sim's newest sample
    s = last_sample(sim, 23)
    taken = at(s["time"])
    assert T0 - 5 * M < taken <= T0
    value, raw, time, stale, lon, lat, name, uid = got[(23, "temperature")]
    assert value == round_half_away(s["s_temperatureambient"] / 1000 - 273.1)
    assert raw == s["s_temperatureambient"] and time == taken and stale == 0
    assert (lon, lat) == device_position(23)
    assert (name, uid) == ("Nijmegen-Centrum", "23-temperature")
    assert got[(23, "pressure")][:2] == (round_half_away(s["s_barometer"] / 100), s["s_barometer"])
    assert got[(26, "temperature")][6] is None  # not named in the inventory
    assert got[(23, "noiseavg")][1] is None  # read from 9 fields: no single raw value
    # a one-sample record: the view shows exactly the fresh rows
    view = conn.execute("SELECT count(*) FROM smartem_rt.v_last_measurements").fetchone()
    assert view == (3 * len(AT_T0),)
    level, message, details = audits(conn)[-1]
    assert level == "INFO" and "3 of 3 devices" in message and details["inserted"] == 24


def test_a_second_refresh_with_the_same_samples_changes_nothing(conn, sim, clock) -> None:
    refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    before = conn.execute("SELECT * FROM smartem_rt.last_device_output ORDER BY gid").fetchall()
    again = refresh(conn, NET, [whale(sim)], now=clock.t + M, calibration=CAL)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3 * len(AT_T0))
    after = conn.execute("SELECT * FROM smartem_rt.last_device_output ORDER BY gid").fetchall()
    assert after == before  # insert_time included: not even rewritten


def test_newer_samples_overwrite_and_older_ones_never_do(conn, sim, clock) -> None:
    refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    first = rows(conn)
    clock.t = T0 + 20 * M
    newer = refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    assert (newer.inserted, newer.updated) == (3, 3 * len(AT_T0))  # co2 is new
    second = rows(conn)
    assert sorted(second) == sorted((d, n) for d in DEVICES for n in JOSE)
    assert all(second[k][2] > first[k][2] for k in first)  # sample times moved on
    taken = at(last_sample(sim, 23)["time"])
    assert second[(23, "temperature")][2] == second[(23, "co2")][2] == taken
    clock.t = T0 - H  # the API answers an hour-old sample (a replica lagging behind)
    older = refresh(conn, NET, [whale(sim)], now=T0 + 20 * M, calibration=CAL)
    assert (older.inserted, older.updated, older.unchanged) == (0, 0, 3 * len(AT_T0))
    assert rows(conn) == second
    # three hours on the newest sample has no co2 again: the others move, co2 keeps its
    # older value, which is now stale on its own
    clock.t = T0 + 3 * H
    refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    third = rows(conn)
    assert third[23, "co2"] == (*second[23, "co2"][:3], 1, *second[23, "co2"][4:])
    assert third[(23, "temperature")][2:4] == (at(last_sample(sim, 23)["time"]), 0)


def test_rows_older_than_two_hours_go_stale_and_leave_the_views(conn, sim, clock) -> None:
    refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    view = "SELECT device_id, name FROM smartem_rt.v_last_measurements_temperature"
    assert sorted(conn.execute(view).fetchall()) == [(d, "temperature") for d in DEVICES]
    # three hours on, device 31 falls silent (its API answers 500) while 23 and 26 report
    clock.t = T0 + 3 * H
    sim.fail_device(31)
    summary = refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    assert sorted(summary.failed) == [31] and summary.stale == len(AT_T0)
    stale = {k: v[3] for k, v in rows(conn).items()}
    assert stale == {(d, n): int(d == 31) for d in DEVICES for n in AT_T0}
    assert sorted(conn.execute(view).fetchall()) == [(23, "temperature"), (26, "temperature")]
    all_view = conn.execute("SELECT DISTINCT device_id FROM smartem_rt.v_last_measurements")
    assert sorted(all_view.fetchall()) == [(23,), (26,)]
    # exactly two hours is not "older than two hours"; a fresh sample makes it fresh again
    sim.clear_faults()
    summary = refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    assert summary.stale == 0
    t31 = rows(conn)[(31, "temperature")][2]
    refresh(conn, NET, [whale(sim, devices=[23])], now=t31 + 2 * H, calibration=CAL)
    assert rows(conn)[(31, "temperature")][3] == 0
    refresh(conn, NET, [whale(sim, devices=[23])], now=t31 + 2 * H + M, calibration=CAL)
    assert rows(conn)[(31, "temperature")][3] == 1


def test_each_indicator_view_shows_only_its_indicator(conn, sim, clock) -> None:
    refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    for name in AT_T0:
        view = f"smartem_rt.v_last_measurements_{name}"
        found = conn.execute(f"SELECT DISTINCT name, value_stale FROM {view}").fetchall()  # noqa: S608
        assert found == [(name, 0)], name
    empty = conn.execute("SELECT count(*) FROM smartem_rt.v_last_measurements_pm10").fetchone()
    assert empty == (0,)


def test_a_failing_device_is_audited_and_the_others_refresh(conn, sim, clock, monkeypatch) -> None:
    sim.fail_device(26, status=503)
    # device 31's /last answers 200 with half a body (the sim's bad_json covers hours only)
    answer = sim._last

    def cut(device: int, now_us: int):
        a = answer(device, now_us)
        return type(a)(a.status, a.body[: len(a.body) // 2]) if device == 31 else a

    monkeypatch.setattr(sim, "_last", cut)
    summary = refresh(conn, NET, [whale(sim)], now=clock.t, calibration=CAL)
    assert {d for d, _ in rows(conn)} == {23}
    assert sorted(summary.failed) == [26, 31] and summary.dead_sources == {}
    assert "HTTP 503" in summary.failed[26] and "not JSON" in summary.failed[31]
    errors = [(m, d) for lvl, m, d in audits(conn) if lvl == "ERROR"]
    assert [d["device_id"] for _, d in errors] == [26, 31]
    assert all(m.startswith(f"device {d['device_id']}: no last value") for m, d in errors)
    assert "/devices/31/last" in errors[1][0]
    assert audits(conn)[-1][0] == "WARNING"
    # the API down for every device: the source is reported dead, nothing is written
    sim.fail_device(23)
    sim.fail_device(26)
    sim.fail_device(31)
    dead = refresh(conn, NET, [whale(sim)], now=clock.t + M, calibration=CAL)
    assert dead.dead_sources == {"whale:whale_api": "no device answered"}


def test_whale_last_record_shapes(sim, monkeypatch) -> None:
    src = whale(sim, devices=[23, 99])
    record = src.last_record(23)
    assert record is not None and record.device_type == "jose"
    sample = record.data["timeseries"][0]
    assert (record.day, record.hour) == (20260120, 11) and len(record.data["timeseries"]) == 1
    assert newest_sample_time(record) == at(sample["time"])
    assert src.last_record(99) is None  # the API has no sample of it (404)
    answer = sim._last
    for body in (b"[1, 2]", b'{"id": "23"}', b'{"id": "24", "time": "2026-01-20T10:00:00Z"}'):
        monkeypatch.setattr(sim, "_last", lambda d, now, body=body: type(answer(d, now))(200, body))
        with pytest.raises(HarvestError, match=r"device 23: .*/devices/23/last"):
            src.last_record(23)


def test_a_sample_from_the_future_is_refused(conn, sim, clock) -> None:
    summary = refresh(conn, NET, [whale(sim)], now=T0 - H, calibration=CAL)
    assert sorted(summary.failed) == DEVICES and rows(conn) == {}
    assert all("in the future" in why for why in summary.failed.values())


def test_airsenseur_boxes_refresh_from_their_last_ten_minutes(conn, boxes, sim, clock) -> None:
    summary = refresh(conn, NET, [influx(boxes), whale(sim)], now=clock.t, calibration=CAL)
    assert summary.failed == {} and summary.devices == 5
    got = rows(conn)
    ase = wanted_for(defs_for("ase"), INDICATORS)
    assert {n for d, n in got if d == 11820001} == set(ase)
    # ASE_NL_02 has no linear models: its gases are skipped, the raw channels are not
    assert {n for d, n in got if d == 11820002} == set(ase) - {"co", "no", "no2", "o3"}
    # by hand: no2raw is the mean over the points of (newest - 10 min, newest] in mV
    newest = T0 - M
    whens = [newest - i * M for i in range(10)]
    counts = [boxes.sample("ASE_NL_01", "NO2B43F", w)["sampleRawVal"] for w in whens]
    mv = [1000 * ((1.7 - 0.5) + (c + 1) / 65536 * 2 * 0.5) for c in counts]
    value, raw, time, stale, lon, lat, name, uid = got[(11820001, "no2raw")]
    assert value == pytest.approx(round_half_away(sum(mv) / 10, 1))
    assert raw == pytest.approx(sum(counts) / 10)
    assert (time, stale, name, uid) == (newest, 0, "ASE_NL_01", "11820001-no2raw")
    box_lon, box_lat, _ = boxes.position("ASE_NL_01")
    assert lon == pytest.approx(box_lon, abs=1e-4) and lat == pytest.approx(box_lat, abs=1e-4)
    temps = [boxes.sample("ASE_NL_01", "Tempe", w)["sampleEvaluatedVal"] for w in whens]
    assert got[(11820001, "temperature")][0] == round_half_away(sum(temps) / 10)
    # later points overwrite; a box that stops goes stale with the rest
    clock.t = T0 + 5 * M
    boxes.write_hours(T0, T0 + 5 * M)
    later = refresh(conn, NET, [influx(boxes)], now=clock.t, calibration=CAL)
    assert later.updated == len(ase) + len(ase) - 4
    assert rows(conn)[(11820001, "no2raw")][2] == T0 + 4 * M
    gone = refresh(conn, NET, [influx(boxes)], now=T0 + 3 * H, calibration=CAL)
    assert gone.updated == 0 and gone.fresh == 0
    assert {v[3] for k, v in rows(conn).items() if k[0] in BOXES.values()} == {1}


def test_influx_last_record_is_the_harvesters_document(boxes, clock) -> None:
    src = influx(boxes)
    record = src.last_record(11820001, now=T0)
    assert record is not None and record.device_type == "ase"
    doc = json.loads(record.data)
    assert doc["measurement"] == "ASE_NL_01" and (doc["date"], doc["hour"]) == ("20260120", 11)
    assert doc["columns"][0] == "time" and len(doc["values"]) == 10 * 7  # 10 minutes, 7 channels
    assert newest_sample_time(record) == T0 - M
    assert src.last_record(11820001, now=T0 - 2 * H) is None  # nothing written before
    # a point written just after the newest one only counts once "now" has reached it
    boxes.write_point("ASE_NL_01", T0 + 30 * M)
    assert newest_sample_time(src.last_record(11820001, now=T0)) == T0 - M
    assert newest_sample_time(src.last_record(11820001, now=T0 + H)) == T0 + 30 * M
    with pytest.raises(HarvestError, match="database not found"):
        InfluxSource(
            url=boxes.url, database="nope", measurements=BOXES, connection_id="x"
        ).last_record(11820001, now=T0)


def test_the_task_refreshes_from_the_connections_and_fails_on_a_dead_source(
    conn, state_db, boxes, sim, clock, monkeypatch
) -> None:
    from stationflow.refine.records.last_tasks import refresh_last

    inv = parse_inventory(INVENTORY.replace("database: ase", f"database: {boxes.database}"))
    host, port = boxes.url.removeprefix("http://").split(":")
    whale_conn = {"conn_type": "http", "host": "127.0.0.1", "port": sim.port, "schema": "http",
                  "password": TOKEN}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_WHALE_API", json.dumps(whale_conn))
    monkeypatch.setenv("AIRFLOW_CONN_INFLUX_ASE", json.dumps({"host": host, "port": int(port)}))
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    summary = refresh_last("se", inv=inv, now=clock.t)
    assert summary["devices"] == 5 and summary["failed_devices"] == []
    assert summary["fresh"] == len(rows(conn)) and summary["now"] == T0.isoformat()
    # the ASE boxes' linear models come from the inventory; Josene gases need a model
    assert (11820001, "no2") in rows(conn) and (23, "no2") not in rows(conn)
    json.dumps(summary)  # an XCom
    # the InfluxDB Connection is gone: the Whale devices still refresh, then the task fails
    monkeypatch.delenv("AIRFLOW_CONN_INFLUX_ASE")
    clock.t = T0 + 20 * M
    with pytest.raises(HarvestError, match="influxdb:influx_ase"):
        refresh_last("se", inv=inv, now=clock.t)
    assert rows(conn)[(23, "temperature")][2] == at(last_sample(sim, 23)["time"])
    assert any(
        "influxdb:influx_ase: no source" in m for lvl, m, _ in audits(conn) if lvl == "ERROR"
    )
