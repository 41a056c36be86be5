"""`stationflow assemble` end to end: files, JSON reports, exit codes, ledger and audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.toa5_builder import series, toa5

STATIONFLOW = str(Path(sys.executable).parent / "stationflow")
DAY = series("2026-11-20 00:30:00", 1800, 48)


def run(db: str, *args: str) -> tuple[int, list[dict], str]:
    env = dict(os.environ, STATIONFLOW_DB_URL=db)
    done = subprocess.run(
        [STATIONFLOW, "assemble", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return done.returncode, [json.loads(x) for x in done.stdout.splitlines()], done.stderr


def common(tmp: Path) -> list[str]:
    return [
        "--station",
        "FR-Lam",
        "--type",
        "BM",
        "--logger",
        "1",
        "--file",
        "1",
        "--date",
        "2026-11-20",
        "--output-dir",
        str(tmp / "out"),
    ]


def test_assemble_writes_reports_and_records(state_db, tmp_path):
    a, b = tmp_path / "a.dat", tmp_path / "b.dat"
    a.write_bytes(toa5(DAY[:30]))
    b.write_bytes(toa5(DAY[25:40]))
    code, reports, err = run(state_db, *common(tmp_path), str(a), str(b))
    assert code == 0, err
    (r,) = reports
    assert r["name"] == "FR-Lam_BM_20261120_L01_F01.dat" and r["version"] == 1
    assert (r["rows_expected"], r["rows_present"], r["rows_filled"]) == (48, 40, 8)
    assert r["duplicates_dropped"] == 5
    assert r["interval_declared_s"] == 60.0  # the inventory says 1 min: mismatch reported
    assert Path(r["path"]).stat().st_size == r["size"]

    with psycopg.connect(state_db) as c:
        row = c.execute(
            "SELECT etc_name, md5, rows_expected, rows_present, rows_filled,"
            " interval_ms, version, period_start, period_end"
            " FROM stationflow.output_file"
        ).fetchone()
        assert row[:7] == (r["name"], r["md5"], 48, 40, 8, 1_800_000, 1)
        # FR-Lam is UTC+1: the local day (00:00, 24:00] is 23:00 .. 23:00 UTC
        assert row[7].isoformat() == "2026-11-19T23:00:00+00:00"
        assert row[8].isoformat() == "2026-11-20T23:00:00+00:00"
        frags = c.execute(
            "SELECT source, rows, status FROM stationflow.fragment ORDER BY id"
        ).fetchall()
        assert frags == [("toa5:Meteo", 30, "collected"), ("toa5:Meteo", 15, "collected")]
        assert c.execute("SELECT count(*) FROM stationflow.output_fragment").fetchone() == (2,)
        (msg,) = c.execute(
            "SELECT message FROM stationflow.audit_log WHERE step = 'refine.assemble'"
        ).fetchone()
        assert msg.startswith("FR-Lam_BM_20261120_L01_F01.dat v1: 40 of 48 rows present, 8 filled")

    # the same input again: same bytes, same version, nothing new in the ledger
    code, (again,), _ = run(state_db, *common(tmp_path), str(a), str(b))
    assert code == 0 and again["version"] == 1 and not again["new_version"]
    assert again["sha256"] == r["sha256"]
    # late data: new bytes under the same name are version 2; both are kept
    late = tmp_path / "late.dat"
    late.write_bytes(toa5(DAY[40:]))
    code, (v2,), _ = run(state_db, *common(tmp_path), str(a), str(b), str(late))
    assert code == 0 and v2["version"] == 2 and v2["rows_filled"] == 0
    with psycopg.connect(state_db) as c:
        assert c.execute(
            "SELECT version FROM stationflow.output_file ORDER BY version"
        ).fetchall() == [(1,), (2,)]
        assert c.execute("SELECT count(*) FROM stationflow.fragment").fetchone() == (3,)


def test_bad_input_is_quarantined_audited_and_exits_1(state_db, tmp_path):
    good, bad = tmp_path / "good.dat", tmp_path / "bad.dat"
    good.write_bytes(toa5(DAY))
    bad.write_bytes(b"\x00" * 100)
    code, (r,), err = run(state_db, *common(tmp_path), str(good), str(bad))
    assert code == 1
    assert f"error: {bad}:1: unknown format" in err
    assert r["rows_filled"] == 0
    assert (tmp_path / "out" / "quarantine" / "bad.dat").read_bytes() == b"\x00" * 100
    with psycopg.connect(state_db) as c:
        assert c.execute(
            "SELECT status, path FROM stationflow.fragment WHERE status = 'quarantined'"
        ).fetchone() == ("quarantined", str(tmp_path / "out" / "quarantine" / "bad.dat"))
        levels = [lv for (lv,) in c.execute("SELECT level FROM stationflow.audit_log")]
        assert levels.count("ERROR") == 2  # the quarantine and the summary of input problems


def test_usage_errors(state_db, tmp_path):
    f = tmp_path / "a.dat"
    f.write_bytes(toa5(DAY))
    args = [a if a != "FR-Lam" else "XX-Unk" for a in common(tmp_path)]
    code, out, err = run(state_db, *args, str(f))
    assert code == 2 and out == [] and "not in the inventory" in err and "--utc-offset" in err
    code, (r,), _ = run(state_db, *args, "--utc-offset", "2", "--no-ledger", str(f))
    assert code == 0 and r["station"] == "XX-Unk" and "version" not in r
    empty = tmp_path / "b.dat"
    empty.write_bytes(toa5(series("2026-11-25 00:30:00", 1800, 3)))
    code, out, err = run(state_db, *common(tmp_path), "--no-ledger", str(empty))
    assert code == 1 and out == [] and "no usable row for that day" in err
