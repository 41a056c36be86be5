"""A ledger with one of everything the completeness view shows, written with the ledger's
own functions: uploaded, failed, missing, quarantined and pending files; harvested, refined
and published device-hours. ``NOW`` is the clock it is seen from."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg.types.json import Json

from stationflow.publish.icos_etc import IN_FLIGHT
from stationflow.state.audit import audit
from stationflow.state.ledger import record_output, upsert_fragment

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DAYS = [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)]
LAM = timedelta(hours=1)  # FR-Lam: UTC+1 standard time
FOLDERS = {"BM": "cr3000_meteo/Meteo_1min", "EC": "smartflux"}  # in the landing area


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _day_utc(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC) - LAM


def _output(conn, landing, name, ftype, logger, day_start, day_end, present, filled, frags):
    ids = [
        upsert_fragment(
            conn,
            station="FR-Lam",
            source=f"collect:{FOLDERS[ftype]}",
            path=f"{landing}/FR-Lam/{FOLDERS[ftype]}/{name}.{k}.dat",
            size=1000 + k,
            sha256=_sha(f"{name}-{k}"),
            first_ts=day_start,
            last_ts=day_end - timedelta(minutes=1),
            rows=present // frags,
        )
        for k in range(frags)
    ]
    o = {
        "station": "FR-Lam",
        "type": ftype,
        "logger": logger,
        "file": 1,
        "name": name,
        "path": f"/etc/{name}",
        "size": 5000,
        "md5": hashlib.md5(name.encode()).hexdigest(),  # noqa: S324 - the ETC's checksum
        "sha256": _sha(name),
        "rows_expected": present + filled,
        "rows_present": present,
        "rows_filled": filled,
        "interval_s": 60,
    }
    oid, _, _ = record_output(conn, o, fragment_ids=ids, period_start=day_start, period_end=day_end)
    audit(
        conn,
        "refine.assemble",
        f"{name} v1: {present} of {present + filled} rows present, {filled} filled",
        station="FR-Lam",
        details={"ledger_id": oid, "name": name},
    )
    return oid


def _upload(conn, oid, attempt, outcome, status, receipt=None, message=None):
    conn.execute(
        "INSERT INTO stationflow.upload (output_file_id, target, attempt, outcome, http_status,"
        " receipt, message) VALUES (%s, 'https://data.icos-cp.eu', %s, %s, %s, %s, %s)",
        (oid, attempt, outcome, status, receipt, message),
    )
    audit(
        conn,
        "publish.icos_etc",
        f"upload attempt {attempt}: {outcome}",
        level="INFO" if outcome == "accepted" else "ERROR",
        station="FR-Lam",
        details={"output_file_id": oid},
    )


def fill(conn: psycopg.Connection, landing: str) -> dict[str, int]:
    """Write the scenario; returns the output file ids by name."""
    ids = {}
    d18, d19, d20 = (_day_utc(d) for d in DAYS[:3])
    one = timedelta(days=1)
    with conn.transaction():
        # BM 11-18: uploaded, 72 of 1440 rows filled (5 %)
        ids["bm18"] = _output(
            conn, landing, "FR-Lam_BM_20261118_L01_F01", "BM", 1, d18, d18 + one, 1368, 72, 2
        )
        _upload(conn, ids["bm18"], 1, "accepted", 200, receipt="OK 1d2c")
        # BM 11-19: half filled; a 503, then refused for its header
        ids["bm19"] = _output(
            conn, landing, "FR-Lam_BM_20261119_L01_F01", "BM", 1, d19, d19 + one, 720, 720, 1
        )
        _upload(conn, ids["bm19"], 1, "error", 503, message="Service Unavailable")
        _upload(
            conn, ids["bm19"], 2, "rejected", 400, message="header line 2: unknown variable TA_X"
        )
        # BM 11-20: nothing collected
        audit(
            conn,
            "refine.assemble",
            "FR-Lam: no fragment collected for BM_L01_F01 of 2026-11-20",
            level="ERROR",
            station="FR-Lam",
        )
        # ST 11-20: the only fragment was unreadable
        upsert_fragment(
            conn,
            station="FR-Lam",
            source="modbus:cr1000x_soil",
            path=f"{landing}/FR-Lam/cr1000x_soil/Soil_1min/bad.dat",
            size=77,
            sha256=_sha("bad"),
            first_ts=d20 + timedelta(hours=2),
            last_ts=d20 + timedelta(hours=3),
            status="quarantined",
            message="bad.dat line 7: timestamp '2026-13-01' is not a date",
        )
        # EC 11-20: 3 of 48 half-hours uploaded
        for k in range(3):
            start = d20 + timedelta(minutes=30 * k)
            hhmm = (datetime(2026, 11, 20) + timedelta(minutes=30 * (k + 1))).strftime("%H%M")
            name = f"FR-Lam_EC_20261120{hhmm}_L03_F01"
            oid = _output(
                conn, landing, name, "EC", 3, start, start + timedelta(minutes=30), 36000, 0, 1
            )
            _upload(conn, oid, 1, "accepted", 200, receipt=f"OK ec{k}")
        # ... and a fourth on its way: its attempt written, the answer not yet in
        start = d20 + timedelta(minutes=90)
        name = "FR-Lam_EC_202611200200_L03_F01"
        oid = _output(
            conn, landing, name, "EC", 3, start, start + timedelta(minutes=30), 36000, 0, 1
        )
        _upload(conn, oid, 1, "error", None, message=IN_FLIGHT)
    _network(conn)
    return ids


def _network(conn: psycopg.Connection) -> None:
    """Devices 23 and 26 on 11-20: 24 + 20 hours harvested, 40 refined, 2 rejected;
    30 hours published to STA, one value refused by SOS."""
    with conn.transaction():
        for device, hours in ((23, 24), (26, 20)):
            for h in range(1, hours + 1):
                start = datetime(2026, 11, 20, tzinfo=UTC) + timedelta(hours=h - 1)
                gid = conn.execute(
                    "INSERT INTO smartem_raw.timeseries (unique_id, device_id, day, hour,"
                    " hour_start, data, content_hash, sample_count, complete, harvester)"
                    " VALUES (%s, %s, 20261120, %s, %s, %s, %s, 60, true, 'whale:whale_api')"
                    " RETURNING gid",
                    (f"{device}-20261120-{h}", device, h, start, Json({}), _sha(f"{device}{h}")),
                ).fetchone()[0]
                status = "rejected" if device == 26 and h > 18 else "refined"
                conn.execute(
                    "INSERT INTO smartem_refined.raw_state (raw_gid, raw_revision, status, rows)"
                    " VALUES (%s, 1, %s, %s)",
                    (gid, status, 1 if status == "refined" else 0),
                )
                published = device == 23 or h <= 6  # 24 + 6 = 30 hours
                if status == "refined" and published:
                    conn.execute(
                        "INSERT INTO smartem_publish.observation (target, device_id, name, day,"
                        " hour, revision, state, remote_id)"
                        " VALUES ('sta:sta_default', %s, 'temperature', 20261120, %s, 1,"
                        " 'published', '1')",
                        (device, h),
                    )
        conn.execute(
            "INSERT INTO smartem_publish.observation (target, device_id, name, day, hour,"
            " revision, state, error) VALUES ('sos:sos_default', 23, 'temperature', 20261120,"
            " 5, 1, 'failed', 'InvalidParameterValue: observedProperty')"
        )
