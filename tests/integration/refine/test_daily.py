"""The scheduled refine path: a station-day assembled from what collection landed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from stationflow.collect.loggernet import scan
from stationflow.config import parse_inventory
from stationflow.refine.daily import NoFragments, assemble_stream, etc_day, half_hour_before
from stationflow.sim.loggernet import Faults, LoggerNetSim, TableSpec

DAY = date(2026, 11, 20)
FAULTS = Faults(
    skip_every=97,
    fragment_every=500,
    program_change_at=0,
    hole_every=300,
    hole_rows=3,
    hole_late_by=10,
    nan_every=41,
)


def inventory(folder: Path):
    return parse_inventory(
        f"""
stations:
  - id: FR-Lam
    utc_offset_hours: 1
    upload: {{connection_id: icos}}
    loggers:
      - id: cr3000
        kind: campbell
        collect: {{method: loggernet, folder: {folder}, tables: [Meteo_1min], settle_seconds: 0}}
    files:
      - {{type: BM, logger: cr3000, table: Meteo_1min, logger_number: 1, file_number: 1,
          interval: 1min}}
"""
    )


@pytest.fixture
def site(tmp_path, monkeypatch, state_db):
    monkeypatch.setenv("STATIONFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    folder = tmp_path / "loggernet"
    inv = inventory(folder)
    sim = LoggerNetSim(
        folder,
        station="FR-Lam",
        tables=[TableSpec("Meteo_1min", 60_000)],
        start=datetime(2026, 11, 19, 23, 50),
        faults=FAULTS,
    )
    sim.write_until(datetime(2026, 11, 21, 0, 10))
    return inv, sim, tmp_path, state_db


def collect(inv, tmp_path, state_db):
    st = inv.station("FR-Lam")
    with psycopg.connect(state_db) as conn:
        return scan(
            conn,
            st,
            st.loggers[0],
            home=tmp_path,
            landing=tmp_path / "landing",
            now=datetime.now(UTC) + timedelta(minutes=5),
        )


def outputs(state_db):
    with psycopg.connect(state_db) as c:
        return c.execute(
            "SELECT id, etc_name, version, rows_expected, rows_filled, sha256"
            " FROM stationflow.output_file ORDER BY id"
        ).fetchall()


def test_a_day_from_the_landing_area_and_again_unchanged_and_then_with_late_data(site):
    inv, sim, tmp_path, state_db = site
    collect(inv, tmp_path, state_db)
    (first,) = assemble_stream(inv, "FR-Lam", "BM_L01_F01", DAY)
    ((oid, name, version, expected, filled, _sha),) = outputs(state_db)
    assert (oid, name, version, expected) == (first, "FR-Lam_BM_20261120_L01_F01.dat", 1, 1440)
    rows_in_day = range(11, 11 + 1440)  # the sim's rows of 00:01 .. 24:00 (row 1 = 23:51)
    skipped = [r for r in rows_in_day if r % FAULTS.skip_every == 0]
    assert filled == len(skipped) > 0
    out = tmp_path / "etc" / "FR-Lam" / name
    assert out.read_bytes().count(b"\r\n") == 4 + 1440

    assert assemble_stream(inv, "FR-Lam", "BM_L01_F01", DAY) == [first]  # replay: same
    assert len(outputs(state_db)) == 1

    # late data: a skipped row turns up in a file recovered later
    minute = skipped[0] - 10  # row r is stamped 23:50 + r minutes
    stamp = (datetime(2026, 11, 19, 23, 50) + timedelta(minutes=skipped[0])).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    header = sim.current_file("Meteo_1min").read_bytes().split(b"\r\n")[:4]
    late = tmp_path / "loggernet" / "FR-Lam_Meteo_1min_recovered.dat"
    late.write_bytes(b"\r\n".join([*header, f'"{stamp}",{minute},1,2,3,4,5'.encode(), b""]))
    collect(inv, tmp_path, state_db)
    (second,) = assemble_stream(inv, "FR-Lam", "BM_L01_F01", DAY)
    rows = outputs(state_db)
    assert second != first and [r[2] for r in rows] == [1, 2] and rows[1][4] == filled - 1
    assert (tmp_path / "etc" / "FR-Lam" / "superseded").is_dir()  # version 1 kept aside


def test_a_day_without_any_fragment_is_an_error(site):
    inv, _, _, _ = site
    with pytest.raises(NoFragments):
        assemble_stream(inv, "FR-Lam", "BM_L01_F01", date(2026, 10, 1))


def test_run_periods_follow_the_station_clock():
    inv = inventory(Path("/x"))
    st = inv.station("FR-Lam")
    # the daily run at 00:30 local on the 21st has its interval starting on the 20th 00:30
    assert etc_day(datetime(2026, 11, 19, 23, 30, tzinfo=UTC), st) == DAY
    # the run of [10:05, 10:35) UTC works on the half-hour 10:30-11:00 local = index 21
    assert half_hour_before(datetime(2026, 11, 20, 10, 5, tzinfo=UTC), st) == (DAY, 21)
    # 00:05 local: the half-hour (23:30, 24:00] of the day before, named ..._202611200000
    assert half_hour_before(datetime(2026, 11, 19, 23, 5, tzinfo=UTC), st) == (
        date(2026, 11, 19),
        47,
    )
