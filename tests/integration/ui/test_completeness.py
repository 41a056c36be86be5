"""The completeness view's data, read from a ledger holding one of every case."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stationflow import completeness as cp
from stationflow.config import load_inventory
from stationflow.settings import PROJECT_ROOT
from tests.completeness_ledger import DAYS, NOW, fill

LANDING = "/landing"


@pytest.fixture
def ledger(conn):
    ids = fill(conn, LANDING)
    return conn, ids


@pytest.fixture
def inv():
    return load_inventory(PROJECT_ROOT / "config" / "stations.yaml")


def cell(rows, station, stream, day):
    row = next(r for r in rows if (r.station, r.stream) == (station, stream))
    return next(c for c in row.days if c.day == day)


def test_station_files_states(ledger, inv):
    conn, ids = ledger
    rows = cp.station_files(conn, inv, DAYS, landing=Path(LANDING), now=NOW)
    assert {(r.station, r.stream) for r in rows} == {
        ("FR-Lam", "BM_L01_F01"),
        ("FR-Lam", "ST_L02_F01"),
        ("FR-Lam", "EC_L03_F01"),
        ("FR-Lam", "PHEN_L04_F01"),
        ("FR-Aur", "BM_L01_F01"),
        ("FR-Aur", "EC_L02_F01"),
        ("FR-Aur", "ST_L03_F01"),
    }
    up = cell(rows, "FR-Lam", "BM_L01_F01", date(2026, 11, 18))
    assert (up.state, up.fragments, up.rows_present, up.rows_filled) == ("uploaded", 2, 1368, 72)
    assert up.pct_filled == pytest.approx(5.0)
    assert up.files[0].receipt == "OK 1d2c"
    assert up.files[0].output_file_id == ids["bm18"]

    failed = cell(rows, "FR-Lam", "BM_L01_F01", date(2026, 11, 19))
    assert failed.state == "failed"
    assert failed.pct_filled == pytest.approx(50.0)
    assert failed.reason == "HTTP 400: header line 2: unknown variable TA_X"

    missing = cell(rows, "FR-Lam", "BM_L01_F01", date(2026, 11, 20))
    assert (missing.state, missing.fragments, missing.reason) == ("missing", 0, "never assembled")

    bad = cell(rows, "FR-Lam", "ST_L02_F01", date(2026, 11, 20))
    assert (bad.state, bad.quarantined) == ("quarantined", 1)
    assert "line 7" in bad.reason

    ec = cell(rows, "FR-Lam", "EC_L03_F01", date(2026, 11, 20))
    assert (len(ec.files), ec.count("uploaded"), ec.count("missing")) == (48, 3, 44)
    (sending,) = [f for f in ec.files if f.state == "assembled"]
    assert sending.reason == "upload sent, no answer yet"
    assert ec.state == "missing"

    # today (local 11-21, 13:00): the daily files are not due, the first half-hours are
    today = cell(rows, "FR-Lam", "BM_L01_F01", date(2026, 11, 21))
    assert today.state == "pending"
    assert cell(rows, "FR-Aur", "BM_L01_F01", date(2026, 11, 18)).state == "missing"


def test_network_hours(ledger, inv):
    conn, _ = ledger
    (net,) = cp.network_hours(conn, inv, DAYS, now=NOW)
    assert net.network == "smartemission"
    assert net.targets == ["sta:sta_default", "sos:sos_default"]
    assert net.devices == 4  # the inventory's four devices; two of them harvested
    d20 = next(d for d in net.days if d.day == date(2026, 11, 20))
    assert (d20.expected, d20.harvested, d20.refined, d20.rejected) == (96, 44, 42, 2)
    assert d20.published == {"sta:sta_default": 30, "sos:sos_default": 0}
    assert d20.failed == {"sta:sta_default": 0, "sos:sos_default": 1}
    today = next(d for d in net.days if d.day == date(2026, 11, 21))
    assert (today.expected, today.harvested) == (4 * 12, 0)


def test_file_detail_is_the_files_history(ledger):
    conn, ids = ledger
    d = cp.file_detail(conn, ids["bm19"])
    assert d["file"]["etc_name"] == "FR-Lam_BM_20261119_L01_F01"
    assert [v["version"] for v in d["versions"]] == [1]
    assert len(d["fragments"]) == 1
    assert [(u["attempt"], u["outcome"], u["http_status"]) for u in d["uploads"]] == [
        (1, "error", 503),
        (2, "rejected", 400),
    ]
    # the assembly row and both upload attempts, nothing about other files
    assert [a["step"] for a in d["audit"]] == [
        "refine.assemble",
        "publish.icos_etc",
        "publish.icos_etc",
    ]
    assert cp.file_detail(conn, 10**9) is None


def test_day_audit_explains_a_missing_file(ledger):
    conn, _ = ledger
    rows = cp.day_audit(conn, "FR-Lam", "BM_L01_F01", date(2026, 11, 20))
    assert [r["message"] for r in rows] == [
        "FR-Lam: no fragment collected for BM_L01_F01 of 2026-11-20"
    ]
    assert cp.day_audit(conn, "FR-Lam", "BM_L01_F01", date(2026, 11, 19)) == []


def test_app_routes_without_airflow(ledger, state_db, monkeypatch, tmp_path):
    """The FastAPI app on its own (the plugin adds Airflow's auth): pages and JSON."""
    from stationflow.ui.app import create_app

    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    _, ids = ledger
    denied = TestClient(create_app(dependencies=[_deny]))
    assert denied.get("/completeness").status_code == 401
    client = TestClient(create_app())
    page = client.get("/completeness", params={"days": 4, "end": "2026-11-21"})
    assert page.status_code == 200
    assert page.text.count("<tr data-station=") == 7  # the inventory's 7 file streams
    assert page.text.count('data-state="failed"') == 1
    body = client.get("/api/completeness", params={"days": 4, "end": "2026-11-21"}).json()
    lam_bm = next(
        r for r in body["files"] if r["station"] == "FR-Lam" and r["stream"] == "BM_L01_F01"
    )
    assert [c["state"] for c in lam_bm["days"]][:3] == ["uploaded", "failed", "missing"]
    f = client.get(f"/completeness/files/{ids['bm19']}")
    assert f.status_code == 200 and "header line 2: unknown variable TA_X" in f.text
    assert client.get("/completeness/files/999999999").status_code == 404
    day = client.get("/completeness/days/FR-Lam/BM_L01_F01/2026-11-20")
    assert "no fragment collected" in day.text
    assert client.get("/completeness/days/XX-Nope/BM_L01_F01/2026-11-20").status_code == 404


def _deny():
    from fastapi import HTTPException

    raise HTTPException(401, "Not authenticated")
