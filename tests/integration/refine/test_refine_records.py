"""The record chain's refine step against the real PostgreSQL: raw hours harvested from the
Whale simulator (and a real influxd fed by AirSensEUR boxes) refined batch by batch, with
replay, late data, bad records and samples, and a crash between batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stationflow.collect import raw_store
from stationflow.collect.harvest import harvest
from stationflow.collect.influxdb import InfluxSource
from stationflow.collect.raw_store import RawHour
from stationflow.collect.whale import WhaleSource
from stationflow.config import parse_inventory
from stationflow.refine.records import refined_store
from stationflow.refine.records.refiner import Calibration
from stationflow.refine.records.run import refine_network
from stationflow.refine.records.tasks import ase_calibration
from stationflow.sim.airsenseur import CHANNELS, AirSensEURSim
from stationflow.sim.whale import WhaleSim
from tests.clock import Clock

TOKEN = "whale-bearer-7f3a9c"
DEVICES = [23, 26]
H = timedelta(hours=1)
T0 = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
JOSE = ["temperature", "pressure", "humidity", "noiseavg", "noiselevelavg", "co2", "coraw",
        "no2", "no"]  # fmt: skip
INVENTORY = f"""
sensor_networks:
  - id: se
    harvest:
      - {{kind: whale, connection_id: whale_api}}
      - {{kind: influxdb, connection_id: influx_ase, database: ase_refine,
         measurements: {{ASE_NL_01: 11820001, ASE_NL_02: 11820002}}}}
    devices:
      - {{id: 11820001, type: ase, calibration: {{
           co: {{a0: 3106.838, a1: 0.2112824, a2: 0.2448138}},
           'no': {{a0: 2384.5561239, a1: 0.4851297, a2: -1.573699, a3: 0.1028684}},
           no2: {{a0: 6141.5933846, a1: -0.1479105, a2: -0.1959212}},
           o3: {{a0: 6134.694, a1: -0.2636486, a2: -0.2597192, a3: 0.1249437}}}}}}
      - {{id: 11820002, type: ase}}
    indicators: {json.dumps([*JOSE, "o3", "co"])}
"""
NET = parse_inventory(INVENTORY).network("se")


@pytest.fixture
def conn(state_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


def harvest_whale(conn: psycopg.Connection, sim: WhaleSim, clock: Clock, hours: int = 6):
    src = WhaleSource(url=sim.url, connection_id="whale_api", token=TOKEN, backoff=0.01)
    return harvest(conn, src, until=clock.t, now=clock.t, lookback=hours * H, workers=2)


def refined(conn: psycopg.Connection) -> dict[tuple, tuple]:
    rows = conn.execute(
        "SELECT device_id, name, day, hour, value, value_min, value_max, sample_count, lon,"
        " lat, revision, change_seq FROM smartem_refined.timeseries"
    )
    return {r[:4]: r[4:] for r in rows}


def states(conn: psycopg.Connection) -> dict[int, tuple]:
    rows = conn.execute(
        "SELECT raw_gid, raw_revision, status, rows, samples, bad_values, error"
        " FROM smartem_refined.raw_state"
    )
    return {r[0]: r[1:] for r in rows}


def audit_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT level, message, details FROM stationflow.audit_log WHERE step = 'refine'"
        " ORDER BY id"
    ).fetchall()


def test_every_harvested_hour_is_refined_once(conn, sim, clock) -> None:
    harvest_whale(conn, sim, clock)
    summary = refine_network(conn, NET, Calibration(), batch=5)
    raw = conn.execute(
        "SELECT gid, revision, device_id, sample_count FROM smartem_raw.timeseries"
    ).fetchall()
    assert len(raw) == 12 and summary.hours == 12 and summary.rejected == 0
    rows = refined(conn)
    # each hour gives each computable Josene indicator; no2 and no have no model / no
    # definition for Josene, so 7 per hour
    assert summary.inserted == len(rows) == 12 * 7
    assert {k[1] for k in rows} == set(JOSE) - {"no2", "no"}
    assert summary.skipped["no2"] == "no valid calibration model for no2"
    by_gid = {gid: (rev, dev, n) for gid, rev, dev, n in raw}
    for gid, (rev, status, nrows, samples, bad, error) in states(conn).items():
        assert (rev, status, nrows, error) == (by_gid[gid][0], "refined", 7, None)
        assert samples == by_gid[gid][2] and bad >= 0
    for (_dev, name, _day, _hour), (value, lo, hi, count, lon, lat, revision, _) in rows.items():
        assert lo <= value <= hi and count > 0 and revision == 1
        assert 5.5 < lon < 6.2 and 51.5 < lat < 52.1
        if name == "temperature":
            assert -25 <= value <= 60
        if name == "noiselevelavg":
            assert value in (1, 2, 3, 4, 5)
    warnings = [m for lvl, m, _ in audit_rows(conn) if lvl == "WARNING"]
    assert sum(m.startswith("indicators not computed") for m in warnings) == 1  # once a run


def test_rerun_and_replay_change_nothing(conn, sim, clock) -> None:
    harvest_whale(conn, sim, clock)
    refine_network(conn, NET, Calibration())
    before = refined(conn)
    again = refine_network(conn, NET, Calibration())
    assert again.hours == 0  # nothing pending
    replay = refine_network(conn, NET, Calibration(), since=T0 - 24 * H, until=T0 + H)
    assert replay.hours == 12
    assert (replay.inserted, replay.updated, replay.deleted, replay.unchanged) == (0, 0, 0, 84)
    assert refined(conn) == before  # same values, revisions and change numbers


def test_harvested_hours_refine_from_their_sample_columns_like_from_json(conn, sim, clock) -> None:
    harvest_whale(conn, sim, clock)
    pending = refined_store.pending(conn, ["whale:whale_api"], limit=100)
    assert len(pending) == 12
    assert all(r.columns is not None and r.data is None for r in pending)  # no JSON read
    refine_network(conn, NET, Calibration())
    from_columns = refined(conn)
    conn.execute("DELETE FROM smartem_raw.sample_columns")  # as hours harvested before sets
    assert all(r.data and r.columns is None for r in refined_store.pending(
        conn, ["whale:whale_api"], limit=100, since=T0 - 24 * H, until=T0 + H
    ))  # fmt: skip
    replay = refine_network(conn, NET, Calibration(), since=T0 - 24 * H, until=T0 + H)
    assert (replay.hours, replay.inserted, replay.updated, replay.unchanged) == (12, 0, 0, 84)
    assert refined(conn) == from_columns


def test_late_data_refines_the_changed_hours_again(conn, sim, clock) -> None:
    harvest_whale(conn, sim, clock)
    refine_network(conn, NET, Calibration())
    before = refined(conn)
    clock.t = T0 + 2 * H  # the late samples of earlier hours have arrived
    harvest_whale(conn, sim, clock, hours=8)
    changed = conn.execute(
        "SELECT device_id, day, hour FROM smartem_raw.timeseries WHERE revision > 1"
    ).fetchall()
    assert changed, "the simulator delivers late samples for some hours"
    summary = refine_network(conn, NET, Calibration())
    assert summary.hours == len(changed) + 2 * len(DEVICES)  # the changed + the new hours
    after = refined(conn)
    for key, old in before.items():
        new = after[key]
        if key[0:1] + key[2:] in {tuple(c) for c in changed} and new[:4] != old[:4]:
            assert new[6] == old[6] + 1 and new[7] > old[7]  # a new revision and number
        elif new[:4] == old[:4]:
            assert new[6:] == old[6:]  # identical values are left alone
    assert any(after[k][6] == 2 for k in before), "some late samples changed a value"


def bad_hour(device: int, day: int, hour: int, doc: object) -> RawHour:
    body = json.dumps(doc).encode()
    return RawHour(device, day, hour, body, sample_count=1, harvester="whale:whale_api")


def test_bad_records_are_rejected_and_bad_samples_counted(conn, sim, clock) -> None:
    harvest_whale(conn, sim, clock, hours=2)
    good = json.loads(sim.hour_body(23, 20260310, 9))["timeseries"]
    samples = [dict(s) for s in good[:6]]
    samples[0]["s_temperatureambient"] = "291000"  # a string, however numeric
    samples[1]["s_temperatureambient"] = None
    del samples[2]["s_barometer"]
    samples[3]["s_humidity"] = 999999  # beyond the field's range
    samples[4]["s_co2"] = True
    raw_store.write_batch(conn, [
        bad_hour(23, 20260301, 5, {"id": "23", "timeseries": "oops"}),
        bad_hour(23, 20260301, 6, {"id": "23", "timeseries": samples}),
    ])  # fmt: skip
    summary = refine_network(conn, NET, Calibration())
    assert summary.hours == 5 and summary.rejected == 1
    st = {row[0]: row[1:] for row in conn.execute(
        "SELECT r.hour, s.status, s.bad_values, s.error FROM smartem_refined.raw_state s"
        " JOIN smartem_raw.timeseries r ON r.gid = s.raw_gid WHERE r.day = 20260301"
    )}  # fmt: skip
    assert st[5][0] == "rejected" and "23-20260301-5" in st[5][2] and "'timeseries'" in st[5][2]
    # the 5 spoilt values, and s_coresistance, which this older key set never had (6)
    assert st[6][:2] == ("refined", 11) and st[6][2] is None
    rows = refined(conn)
    assert rows[(23, "temperature", 20260301, 6)][3] == 4  # 6 samples, 2 without a value
    assert rows[(23, "pressure", 20260301, 6)][3] == 5
    audits = audit_rows(conn)
    errors = [(m, d) for lvl, m, d in audits if lvl == "ERROR"]
    assert len(errors) == 1 and "23-20260301-5 rejected" in errors[0][0]
    (details,) = [d for lvl, m, d in audits if m.endswith("hours") and lvl == "WARNING"]
    assert details["hours"]["23-20260301-6"] == {
        "s_temperatureambient: not a number": 1, "s_temperatureambient: null": 1,
        "s_barometer: missing": 1, "s_humidity: out of range": 1, "s_co2: not a number": 1,
        "s_coresistance: missing": 6,
    }  # fmt: skip
    # fixed at the source: a new revision of the rejected hour is refined
    raw_store.write_batch(conn, [bad_hour(23, 20260301, 5, {"id": "23", "timeseries": good})])
    assert refine_network(conn, NET, Calibration()).hours == 1
    assert (23, "temperature", 20260301, 5) in refined(conn)


def test_a_crash_between_batches_loses_and_duplicates_nothing(
    conn, sim, clock, monkeypatch
) -> None:
    harvest_whale(conn, sim, clock)
    real_write = refined_store.write
    calls = []

    def crashing(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        return real_write(*args, **kw)

    monkeypatch.setattr(refined_store, "write", crashing)
    with pytest.raises(RuntimeError, match="worker killed"):
        refine_network(conn, NET, Calibration(), batch=4)
    assert len(states(conn)) == 8  # two batches committed, the third rolled back
    assert len(refined(conn)) == 8 * 7
    monkeypatch.setattr(refined_store, "write", real_write)
    rest = refine_network(conn, NET, Calibration(), batch=4)
    assert rest.hours == 4 and len(refined(conn)) == 12 * 7
    assert all(v[6] == 1 for v in refined(conn).values())  # each value written once


def test_airsenseur_gases_come_back_through_the_linear_models(conn, influxd) -> None:
    start = datetime(2026, 3, 10, 6, tzinfo=UTC)
    ase = AirSensEURSim(influxd.url, "ase_refine", {"ASE_NL_01": 11820001, "ASE_NL_02": 11820002})
    ase.ensure_database()
    ase.write_hours(start, start + 2 * H)
    src = InfluxSource(
        url=influxd.url, connection_id="influx_ase", database="ase_refine",
        measurements={"ASE_NL_01": 11820001, "ASE_NL_02": 11820002},
    )  # fmt: skip
    harvest(conn, src, until=start + 2 * H, now=start + 2 * H, lookback=2 * H, workers=2)
    summary = refine_network(conn, NET, Calibration(ase=ase_calibration(NET)))
    assert summary.hours == 4 and summary.rejected == 0
    rows = refined(conn)
    # box 2 has no models in this inventory: its gases are skipped, named in the summary
    assert not any(k[0] == 11820002 and k[1] in ("co", "no2", "o3") for k in rows)
    assert "no linear co model for device 11820002" in summary.skipped.values()
    for name, channel in (("co", "COA4"), ("no2", "NO2B43F"), ("o3", "OX_A431")):
        for h in (7, 8):  # hours 7 and 8 of the day: 06:00-06:59, 07:00-07:59
            t0 = start + (h - 7) * H
            truths = [ase.truth("ASE_NL_01", channel, t0 + timedelta(minutes=m))
                      for m in range(60)]  # fmt: skip
            mean = sum(truths) / 60
            value, lo, hi, count = rows[(11820001, name, 20260310, h)][:4]
            assert count == 60
            assert abs(value - mean) <= 1.5, (name, h, value, mean)  # int-rounded, 1 count
            assert lo <= min(truths) + 6 and hi >= max(truths) - 6
    temp = rows[(11820001, "temperature", 20260310, 7)]
    assert temp[3] == 60 and -25 <= temp[0] <= 60
    assert rows[(11820001, "coraw", 20260310, 7)][0] > 0
    assert len(CHANNELS) == 7
