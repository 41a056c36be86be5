"""LoggerNet drop folder against the folder simulator and a real PostgreSQL ledger."""

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from stationflow.collect.loggernet import SourceUnavailable, header_table, scan
from stationflow.config import Station
from stationflow.formats.toa5 import read_toa5
from stationflow.sim.loggernet import Faults, LoggerNetSim, TableSpec

T0 = datetime(2026, 11, 20, 0, 0)  # local standard time of the simulated station (UTC+1)
FAULTS = Faults(
    skip_every=37,
    fragment_every=50,
    program_change_at=90,
    hole_every=40,
    hole_rows=3,
    hole_late_by=7,
    nan_every=11,
)


def station(folder: Path, settle: float = 60) -> Station:
    return Station.model_validate(
        {
            "id": "FR-Lam",
            "utc_offset_hours": 1,
            "upload": {"connection_id": "icos"},
            "loggers": [
                {
                    "id": "cr3000",
                    "kind": "campbell",
                    "collect": {
                        "method": "loggernet",
                        "folder": str(folder),
                        "tables": ["Meteo_1min"],
                        "settle_seconds": settle,
                    },
                }
            ],
            "files": [{"type": "BM", "logger": "cr3000", "logger_number": 1, "file_number": 1}],
        }
    )


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "loggernet"
    sim = LoggerNetSim(
        folder,
        station="FR-Lam",
        tables=[TableSpec("Meteo_1min", 60_000)],
        start=T0,
        faults=FAULTS,
    )
    return sim, station(folder), tmp_path / "landing"


def later(seconds: float = 120) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def fragments(conn):
    return conn.execute(
        "SELECT source, rows, first_ts, last_ts, path, status FROM stationflow.fragment ORDER BY id"
    ).fetchall()


def test_the_simulator_writes_every_fault_as_valid_toa5(site):
    sim, _, _ = site
    sim.write_until(T0 + timedelta(minutes=130))
    names = sorted(p.name for p in sim.folder.glob("*") if not p.name.startswith("."))
    assert "FR-Lam_Meteo_1min.dat" in names
    assert any(n.endswith(".backup") for n in names)  # the program change
    assert sum("_2026" in n for n in names) >= 1  # a unique-named fragment
    rows, back, columns = 0, 0, set()
    for name in names:
        t = read_toa5(sim.folder / name)
        assert not [i for i in t.issues if "clock" not in i.message], t.issues
        rows += len(t)
        back += sum("clock went back" in i.message for i in t.issues)
        columns.add(len(t.header.fields))
        assert header_table(sim.folder / name) == "Meteo_1min"
    assert back >= 1  # a recovered hole appended out of order
    assert columns == {7, 8}  # the column set changed with the program
    assert rows == 130 - 130 // FAULTS.skip_every  # holes came back; skipped scans never do


def test_scan_lands_settled_files_once_and_never_touches_the_source(conn, site):
    sim, st, landing = site
    logger = st.loggers[0]
    sim.write_until(T0 + timedelta(minutes=130))
    before = digests(sim.folder)
    fresh = scan(conn, st, logger, home=Path("/"), landing=landing, now=datetime.now(UTC))
    assert fresh.landed == [] and len(fresh.unsettled) == fresh.seen  # just written
    first = scan(conn, st, logger, home=Path("/"), landing=landing, now=later())
    assert len(first.landed) == first.seen == len([n for n in before if not n.startswith(".")])
    rows = fragments(conn)
    assert {r[0] for r in rows} == {"loggernet:cr3000/Meteo_1min"}
    assert all(r[5] == "collected" and r[1] > 0 and r[2] <= r[3] for r in rows)
    assert sum(r[1] for r in rows) == 130 - 130 // FAULTS.skip_every
    for r in rows:  # read-only, byte-identical copies
        landed = Path(r[4])
        assert landed.is_relative_to(landing / "FR-Lam" / "cr3000" / "Meteo_1min")
        assert not os.access(landed, os.W_OK) or os.geteuid() == 0
        assert oct(landed.stat().st_mode & 0o777) == "0o444"
        assert hashlib.sha256(landed.read_bytes()).hexdigest() in before.values()

    again = scan(conn, st, logger, home=Path("/"), landing=landing, now=later())
    assert again.landed == [] and again.unchanged == again.seen
    assert len(fragments(conn)) == len(rows)
    assert digests(sim.folder) == before  # nothing at the source changed, nothing deleted


def test_a_file_that_grew_lands_its_new_bytes_and_a_touched_file_does_not(conn, site):
    sim, st, landing = site
    logger = st.loggers[0]
    sim.write_until(T0 + timedelta(minutes=30))
    scan(conn, st, logger, home=Path("/"), landing=landing, now=later())
    n = len(fragments(conn))
    sim.write_until(T0 + timedelta(minutes=45))  # the current file grows
    grown = scan(conn, st, logger, home=Path("/"), landing=landing, now=later())
    assert len(grown.landed) == 1
    old, new = fragments(conn)[n - 1], fragments(conn)[n]
    assert new[1] == len(read_toa5(sim.current_file("Meteo_1min"))) > old[1]
    assert new[2] == old[2] and new[3] > old[3]

    current = sim.current_file("Meteo_1min")
    os.utime(current, ns=(current.stat().st_atime_ns, current.stat().st_mtime_ns + 10**9))
    touched = scan(conn, st, logger, home=Path("/"), landing=landing, now=later())
    assert touched.landed == [] and touched.known == 1
    assert len(fragments(conn)) == n + 1


def test_other_tables_are_ignored_and_an_unreadable_file_of_ours_is_quarantined(conn, site):
    sim, st, landing = site
    sim.write_until(T0 + timedelta(minutes=10))
    (sim.folder / "FR-Lam_Flux_20Hz.dat").write_bytes(
        b'"TOA5","FR-Lam","CR3000","1","os","prog","1","Flux_20Hz"\r\n'
    )
    (sim.folder / "Meteo_1min_broken.dat").write_bytes(b"\x00\x01garbage\r\n")
    (sim.folder / "notes.txt").write_text("not a logger file")
    got = scan(conn, st, st.loggers[0], home=Path("/"), landing=landing, now=later())
    assert len(got.ignored) == 2
    bad = [r for r in fragments(conn) if r[5] == "quarantined"]
    assert len(bad) == 1 and Path(bad[0][4]).read_bytes() == b"\x00\x01garbage\r\n"
    (msg,) = conn.execute(
        "SELECT message FROM stationflow.audit_log WHERE level = 'ERROR'"
    ).fetchone()
    assert "Meteo_1min_broken.dat" in msg and "unknown format" in msg


def test_a_missing_folder_is_an_error_in_the_audit_log(conn, tmp_path):
    st = station(tmp_path / "nowhere")
    with pytest.raises(SourceUnavailable):
        scan(conn, st, st.loggers[0], home=Path("/"), landing=tmp_path / "l", now=later())
    (level,) = conn.execute("SELECT level FROM stationflow.audit_log").fetchone()
    assert level == "ERROR"


def test_the_simulator_writes_20_hz_eddy_covariance_tables(tmp_path):
    sim = LoggerNetSim(
        tmp_path,
        station="FR-Lam",
        tables=[TableSpec("Flux_20Hz", 50, (("Ux", "m/s"), ("Uy", "m/s"), ("CO2", "mg/m^3")))],
        start=T0,
        faults=Faults(skip_every=0, fragment_every=0, program_change_at=0, hole_every=0),
    )
    sim.write_until(T0 + timedelta(minutes=1))
    t = read_toa5(sim.current_file("Flux_20Hz"))
    assert len(t) == 1200 and not t.issues
    assert set(np.diff(t.ts)) == {50_000_000}  # 20 Hz, fractions written and read exactly
    assert t.data[t.starts[1] : t.starts[1] + 26] == b'"2026-11-20 00:00:00.1",1,'
