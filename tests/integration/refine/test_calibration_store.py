"""Gas calibration against the real PostgreSQL: the Whale simulator's hours of device 23 over
the shipped reference window are harvested, a model per gas is trained, stored and loaded
back (hash checked), and the refiner's gas values with it are close to the reference."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import numpy as np
import psycopg
import pytest
from psycopg import sql

from stationflow.collect.harvest import harvest
from stationflow.collect.whale import WhaleSource
from stationflow.config import load_inventory
from stationflow.refine.records.calibration import (
    ModelIntegrityError,
    load_model,
    load_reference,
    newest_models,
    train_network,
)
from stationflow.refine.records.refiner import Calibration, refine
from stationflow.refine.records.samples import RawRecord
from stationflow.settings import PROJECT_ROOT
from stationflow.sim import reference as simref
from stationflow.sim.whale import WhaleSim
from stationflow.state.audit import RunIds
from stationflow.state.db import ensure_database
from stationflow.state.migrate import migrate

H = timedelta(hours=1)
START = simref.START
END = START + simref.HOURS * H  # end of the reference window (its last hour end)
NOW = END + 5 * H + timedelta(minutes=20)  # the weekly run: window = 28 days before 05:00
GASES = ("co", "no2", "o3")
NET = load_inventory(PROJECT_ROOT / "config" / "stations.yaml").network("smartemission")
IDS = RunIds("smartem_calibrate", "manual__test", "calibrate_smartemission", None, 1)
IDS_PAIR = ("smartem_calibrate", "manual__test")
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def db(pg_server) -> Iterator[str]:
    """A migrated database for the module: the harvest and the training happen once."""
    name = f"t_cal_{uuid.uuid4().hex[:10]}"
    ensure_database(pg_server.url("postgres"), name)
    url = pg_server.url(name)
    migrate(url, PROJECT_ROOT / "sql")
    yield url
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def trained(db: str) -> dict:
    """Device 23's hours of the reference window harvested from the simulator, then the
    network's weekly training run."""
    clock = END + 2 * H  # every hour complete, the late samples arrived
    with (
        WhaleSim([23], clock=lambda: clock, history_hours=simref.HOURS + 48) as sim,
        psycopg.connect(db, autocommit=True) as conn,
    ):
        began = time.perf_counter()
        src = WhaleSource(url=sim.url, connection_id="whale_api", backoff=0.01)
        report = harvest(conn, src, until=END, since=START, now=clock, workers=2)
        TIMINGS["harvest"] = time.perf_counter() - began
        assert report.written.inserted == simref.HOURS and not report.failures
        began = time.perf_counter()
        result = train_network(conn, NET, now=NOW, ids=IDS)
        TIMINGS["train_network"] = time.perf_counter() - began
    return result.summary()


def models(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT id, gas, valid, score, inputs, window_start, window_end, data_start, data_end,"
        " reference, reference_station, n_train_hours, n_test_hours, test_start, run_id"
        " FROM smartem_calibration.model ORDER BY id"
    ).fetchall()


def raw_records(conn: psycopg.Connection) -> list[RawRecord]:
    rows = conn.execute(
        "SELECT device_id, day, hour, data::text, device_type, gid, revision"
        " FROM smartem_raw.timeseries ORDER BY hour_start"
    ).fetchall()
    return [RawRecord(*r) for r in rows]


def test_a_model_per_gas_is_stored_with_its_inputs_score_and_window(db, trained) -> None:
    print(f"\ntimings: {TIMINGS}")  # shown with -s
    assert trained["errors"] == {}
    assert {g: trained["gases"][g]["status"] for g in GASES} == dict.fromkeys(GASES, "valid")
    with psycopg.connect(db) as conn:
        rows = models(conn)
        audits = conn.execute(
            "SELECT level, message, details, dag_id, run_id FROM stationflow.audit_log"
            " WHERE step = 'calibrate' ORDER BY id"
        ).fetchall()
    inputs = list(NET_INPUTS)
    reference = load_reference(NET.calibration.reference)
    window = (NOW.replace(minute=0) - timedelta(days=28), NOW.replace(minute=0))
    assert sorted(r[1] for r in rows) == list(GASES)
    for _id, gas, valid, score, ins, w0, w1, d0, d1, ref, station, n_tr, n_te, t0, run in rows:
        assert valid and score > 0.75, (gas, score)
        assert ins == inputs
        assert (w0, w1) == window
        assert (d0, d1) == (START + H, END)  # the hour ends joined: the whole reference
        assert (ref, station, run) == ("reference-nijmegen.csv", "NL10741", "manual__test")
        assert n_tr + n_te == len(reference.values[gas])  # raw data for every reference hour
        assert n_te == pytest.approx(0.2 * (n_tr + n_te), abs=1)
        # the held-out hours are the last n_te hours that have a reference value
        assert d0 < t0 <= d1 and sum(t >= t0 for t in reference.values[gas]) == n_te
    assert [a[0] for a in audits] == ["INFO"] * 3
    for _, message, details, dag_id, run_id in audits:
        assert "held-out R^2" in message and (dag_id, run_id) == IDS_PAIR
        assert details["window"] == [t.isoformat() for t in window]
        assert details["score"] > 0.75 and details["model_id"] in {r[0] for r in rows}


NET_INPUTS = (
    "s_barometer",
    "s_coresistance",
    "s_humidity",
    "s_lightsensortop",
    "s_no2resistance",
    "s_o3resistance",
    "s_temperatureambient",
    "s_temperatureunit",
)


def test_the_refiner_with_the_newest_models_is_close_to_the_reference(db, trained) -> None:
    reference = load_reference(NET.calibration.reference)
    with psycopg.connect(db) as conn:
        found = newest_models(conn, NET.id)
        records = raw_records(conn)
        ids = {r[1]: r[0] for r in models(conn)}
        test_start = {r[1]: r[13] for r in models(conn)}
    assert set(found) == set(GASES)
    assert {g: m.model_id for g, m in found.items()} == ids
    assert all(m.inputs == NET_INPUTS for m in found.values())
    result = refine(records, ["no2", "o3", "co", "temperature"], Calibration(models=found))
    assert result.skipped == {} and result.rejected == []
    for gas in GASES:
        rows = [r for r in result.rows if r.name == gas]
        assert len(rows) == simref.HOURS and all(r.model_id == ids[gas] for r in rows)
        series = reference.values[gas]
        for part, keep in (
            ("all hours", lambda t: True),
            ("held-out hours", lambda t, g=gas: t >= test_start[g]),
        ):
            got, want = np.array(
                [(r.value, series[r.time]) for r in rows if r.time in series and keep(r.time)]
            ).T
            r2 = 1 - np.sum((got - want) ** 2) / np.sum((want - want.mean()) ** 2)
            rel = np.median(np.abs(got - want) / want)
            print(f"{gas} {part}: n {len(got)}, R^2 {r2:.3f}, median relative error {rel:.3f}")
            assert r2 > 0.75 and rel < 0.1, (gas, part)


def test_a_corrupted_model_is_refused(db, trained) -> None:
    with psycopg.connect(db) as conn:
        no2 = next(r[0] for r in models(conn) if r[1] == "no2")
        # a newer valid copy whose bytes were damaged after hashing: refused, the model
        # before it is used
        cols = [
            c
            for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " 'smartem_calibration' AND table_name = 'model' AND column_name <> 'id'"
                " ORDER BY ordinal_position"
            )
        ]
        damaged = {
            "created_at": "created_at + interval '1 second'",
            "model": "overlay(model placing '\\x00'::bytea from 200 for 1)",
        }
        (bad,) = conn.execute(
            f"INSERT INTO smartem_calibration.model ({', '.join(cols)})"  # noqa: S608
            f" SELECT {', '.join(damaged.get(c, c) for c in cols)}"
            " FROM smartem_calibration.model WHERE id = %s RETURNING id",
            (no2,),
        ).fetchone()
        refused: dict[int, str] = {}
        found = newest_models(conn, NET.id, refused=refused)
        assert found["no2"].model_id == no2
        assert list(refused) == [bad] and "do not match its sha256" in refused[bad]
        with pytest.raises(ModelIntegrityError, match="do not match its sha256"):
            load_model(conn, bad)
        # the only model of a gas damaged: that gas has none, the refiner skips it
        conn.execute(
            "UPDATE smartem_calibration.model SET sha256 = repeat('0', 64) WHERE gas = 'o3'"
        )
        found = newest_models(conn, NET.id)
        assert set(found) == {"co", "no2"}
        result = refine(raw_records(conn)[:3], ["o3", "no2"], Calibration(models=found))
        assert result.skipped == {"o3": "no valid calibration model for o3"}
        assert {r.name for r in result.rows} == {"no2"}
        conn.rollback()


def test_without_models_the_gas_indicators_are_skipped_with_a_reason(db, trained) -> None:
    with psycopg.connect(db) as conn:
        found = newest_models(conn, "another-network")
        records = raw_records(conn)[:24]
    assert found == {}
    result = refine(records, ["co", "no2", "o3", "temperature"], Calibration(models=found))
    assert result.skipped == {g: f"no valid calibration model for {g}" for g in GASES}
    assert {r.name for r in result.rows} == {"temperature"} and len(result.rows) == 24


def test_a_window_without_reference_values_is_a_warning_not_a_crash(db, trained) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        before = len(models(conn))
        early = train_network(conn, NET, now=START + 3 * H, ids=IDS)  # 3 joined hours
        later = train_network(conn, NET, now=NOW + timedelta(days=60), ids=IDS)  # no raw data
        warned = conn.execute(
            "SELECT details->>'gas', (details->>'hours')::int, message FROM stationflow.audit_log"
            " WHERE step = 'calibrate' AND level = 'WARNING' ORDER BY id"
        ).fetchall()
        assert len(models(conn)) == before
    for report in (early, later):
        assert {g: s["status"] for g, s in report.gases.items()} == dict.fromkeys(GASES, "skipped")
    # 3 hours of data, then none: each gas warned about, twice
    assert [(g, n) for g, n, _ in warned] == [(g, 3) for g in GASES] + [(g, 0) for g in GASES]
    assert all("too few samples joined with the reference" in m for _, _, m in warned)


def test_a_model_on_shuffled_reference_values_is_stored_invalid_and_not_used(db, trained) -> None:
    ref = load_reference(NET.calibration.reference)
    rng = np.random.default_rng(5)
    times = list(ref.values["no2"])
    shuffled = dict(zip(times, rng.permutation(list(ref.values["no2"].values())), strict=True))
    bad_ref = replace(ref, values={"no2": shuffled})
    net = NET.model_copy(
        update={"calibration": NET.calibration.model_copy(update={"gases": ["no2"]})}
    )
    with psycopg.connect(db, autocommit=True) as conn:
        good = newest_models(conn, NET.id)["no2"].model_id
        report = train_network(conn, net, now=NOW + H, ids=IDS, reference=bad_ref)
        entry = report.gases["no2"]
        assert entry["status"] == "invalid" and entry["score"] < 0.2
        row = conn.execute(
            "SELECT valid, score, min_score FROM smartem_calibration.model WHERE id = %s",
            (entry["model_id"],),
        ).fetchone()
        assert row[0] is False and row[1] < row[2] == 0.5
        assert newest_models(conn, NET.id)["no2"].model_id == good  # the old one stays
        level = conn.execute(
            "SELECT level FROM stationflow.audit_log WHERE details->>'model_id' = %s",
            (str(entry["model_id"]),),
        ).fetchone()[0]
        assert level == "WARNING"


def test_training_takes_seconds(trained) -> None:
    assert TIMINGS["train_network"] < 45, TIMINGS
