"""The daily reconciliation against a real ledger (plain SQL rows), SMTP sink and webhook.

Decision tested here: when nothing is missing, no alert is sent (the INFO audit rows say
the check ran); when something is, ONE alert per run lists every missing file with its
state, whatever the number of stations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from stationflow.config import Inventory, parse_inventory
from stationflow.publish.reconcile import Expected, expected_files, reconcile
from stationflow.state.audit import RunIds
from tests.alert_sinks import (
    HOOK_CONN,
    SMTP_CONN,
    HookServer,
    MailSink,
    smtp_sink,
    webhook_server,
)

DAY = date(2026, 11, 20)  # the ETC day under test; the day before is checked too (days=2)
AFTER = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)  # past every deadline of DAY (05:00Z)

INVENTORY = """
version: 1
defaults:
  alerts:
    email: [station-team@example.org]
    smtp_connection_id: {smtp}
    webhook_connection_id: {hook}
stations:
  - id: FR-Lam
    utc_offset_hours: 1
    upload: {{connection_id: icos_etc_fr_lam, deadline_hours: 6}}
    loggers:
      - id: cr3000_meteo
        kind: campbell
        collect: {{method: loggernet, folder: sim/FR-Lam, tables: [Meteo_1min]}}
      - id: smartflux
        kind: smartflux
        collect: {{method: ftp_push, connection_id: ftp_push_fr_lam}}
    files:
      - {{type: BM, logger: cr3000_meteo, logger_number: 1, file_number: 1, extension: dat}}
      - {{type: ST, logger: cr3000_meteo, logger_number: 2, file_number: 1, extension: dat}}
      - {{type: EC, logger: smartflux, logger_number: 3, file_number: 1, extension: zip}}
  - id: FR-Aur
    utc_offset_hours: 1
    upload: {{connection_id: icos_etc_fr_aur, deadline_hours: 6}}
    loggers:
      - id: cr1000_meteo
        kind: campbell
        collect: {{method: loggernet, folder: sim/FR-Aur, tables: [Meteo_30s]}}
    files:
      - {{type: BM, logger: cr1000_meteo, logger_number: 1, file_number: 1, extension: dat}}
"""


def inventory() -> Inventory:
    return parse_inventory(INVENTORY.format(smtp=SMTP_CONN, hook=HOOK_CONN))


INV = inventory()


@pytest.fixture
def sink(monkeypatch) -> Iterator[MailSink]:
    with smtp_sink(monkeypatch) as s:
        yield s


@pytest.fixture
def hook(monkeypatch) -> Iterator[HookServer]:
    with webhook_server(monkeypatch) as s:
        yield s


# ----------------------------------------------------------------------- ledger rows


def add_file(conn: psycopg.Connection, e: Expected, *, version: int = 1, ext: str = "") -> int:
    name = e.etc_name if not ext else f"{e.stem}.{ext}"
    digest = hashlib.sha256(f"{name}/{version}".encode()).hexdigest()
    return conn.execute(
        "INSERT INTO stationflow.output_file (station, file_type, logger_number, file_number,"
        " period_start, period_end, etc_name, path, size, md5, sha256, rows_expected,"
        " rows_present, rows_filled, version)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 100, %s, %s, 10, 10, 0, %s) RETURNING id",
        (
            e.station,
            e.file_type,
            e.logger_number,
            e.file_number,
            e.period_start,
            e.period_end,
            name,
            f"/out/{name}",
            digest[:32],
            digest,
            version,
        ),
    ).fetchone()[0]


def add_upload(
    conn: psycopg.Connection,
    file_id: int,
    outcome: str,
    *,
    attempt: int = 1,
    status: int | None = None,
    message: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO stationflow.upload"
        " (output_file_id, target, attempt, outcome, http_status, receipt, message)"
        " VALUES (%s, 'https://etc.example.org/upload', %s, %s, %s, %s, %s)",
        (
            file_id,
            attempt,
            outcome,
            status if status is not None else (200 if outcome == "accepted" else None),
            "receipt-1" if outcome == "accepted" else None,
            message,
        ),
    )


def all_accepted(conn: psycopg.Connection, *days: date, but: tuple[str, ...] = ()) -> None:
    """Every expected file of every station on ``days`` assembled and accepted, except ``but``."""
    for station in INV.stations:
        for d in days:
            for e in expected_files(station, d):
                if e.etc_name not in but:
                    add_upload(conn, add_file(conn, e), "accepted")


def audit_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT station, level, message, details, run_id FROM stationflow.audit_log"
        " WHERE step = 'reconcile' ORDER BY id"
    ).fetchall()


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM stationflow.output_file),"
        " (SELECT count(*) FROM stationflow.upload)"
    ).fetchone()


# ----------------------------------------------------------------------------- tests


def test_the_expected_files_of_a_day():
    files = expected_files(INV.station("FR-Lam"), DAY)
    assert len(files) == 1 + 1 + 48
    bm = files[0]
    assert bm.etc_name == "FR-Lam_BM_20261120_L01_F01.dat"
    assert (bm.period_start, bm.period_end) == (
        datetime(2026, 11, 19, 23, 0, tzinfo=UTC),
        datetime(2026, 11, 20, 23, 0, tzinfo=UTC),
    )
    assert bm.deadline == datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
    ec = [e for e in files if e.file_type == "EC"]
    assert ec[0].etc_name == "FR-Lam_EC_202611200030_L03_F01.zip"  # named by its END
    assert ec[0].period_start == datetime(2026, 11, 19, 23, 0, tzinfo=UTC)
    assert ec[0].deadline == datetime(2026, 11, 20, 5, 30, tzinfo=UTC)
    assert ec[-1].etc_name == "FR-Lam_EC_202611210000_L03_F01.zip"  # midnight: next day
    assert ec[-1].period_end == bm.period_end


def test_all_accepted_gives_info_rows_and_no_alert(conn, sink, hook):
    all_accepted(conn, DAY - timedelta(days=1), DAY)
    summary = reconcile(conn, INV, now=AFTER, ids=RunIds(dag_id="icos_reconcile", run_id="r1"))
    assert summary["missing"] == 0 and summary["alert"] == []
    lam = summary["stations"]["FR-Lam"]
    assert lam["days"] == ["2026-11-19", "2026-11-20"]
    assert (lam["expected"], lam["due"], lam["accepted"], lam["missing"]) == (100, 100, 100, [])
    rows = audit_rows(conn)
    assert [(r[0], r[1]) for r in rows] == [("FR-Lam", "INFO"), ("FR-Aur", "INFO")]
    assert "all 100 files due were accepted" in rows[0][2] and rows[0][4] == "r1"
    assert sink.messages == [] and hook.received == []  # nothing missing: no alert


def test_missing_files_are_reported_with_their_state_in_one_alert(conn, sink, hook):
    lam = {e.etc_name: e for e in expected_files(INV.station("FR-Lam"), DAY)}
    st = "FR-Lam_ST_20261120_L02_F01.dat"
    rejected, errored, waiting = (f"FR-Lam_EC_20261120{t}_L03_F01.zip" for t in (1230, 1300, 1330))
    hole = [f"FR-Lam_EC_20261120{t}_L03_F01.zip" for t in (1430, 1500, 1530, 1600)]
    retried, newer, other_ext = (f"FR-Lam_EC_20261120{t}_L03_F01.zip" for t in (1700, 1730, 1800))
    special = (st, rejected, errored, waiting, *hole, retried, newer, other_ext)
    all_accepted(conn, DAY - timedelta(days=1), DAY, but=special)
    # one upload rejected by the portal, one that never got an answer
    add_upload(conn, add_file(conn, lam[rejected]), "rejected", status=403, message="bad checksum")
    add_upload(conn, add_file(conn, lam[errored]), "error", message="read timeout after 60 s")
    add_file(conn, lam[waiting])  # assembled, never uploaded (a hard-killed upload task)
    # not missing: accepted at the second attempt; accepted once, a newer version pending;
    # accepted under another extension than the inventory's
    fid = add_file(conn, lam[retried])
    add_upload(conn, fid, "error", message="connection reset")
    add_upload(conn, fid, "accepted", attempt=2)
    add_upload(conn, add_file(conn, lam[newer]), "accepted")
    add_file(conn, lam[newer], version=2)
    add_upload(conn, add_file(conn, lam[other_ext], ext="bin"), "accepted")
    before = counts(conn)

    summary = reconcile(conn, INV, now=AFTER)

    missing = {m["etc_name"]: m for m in summary["stations"]["FR-Lam"]["missing"]}
    assert set(missing) == {st, rejected, errored, waiting, *hole}
    assert summary["missing"] == 8 and summary["stations"]["FR-Aur"]["missing"] == []
    assert {n: missing[n]["state"] for n in (st, rejected, errored, waiting)} == {
        st: "not_assembled",
        rejected: "rejected",
        errored: "error",
        waiting: "not_uploaded",
    }
    assert {missing[n]["state"] for n in hole} == {"not_assembled"}  # no data, no file
    assert (missing[rejected]["http_status"], missing[rejected]["message"]) == (
        403,
        "bad checksum",
    )
    assert missing[errored]["http_status"] is None
    assert missing[errored]["message"] == "read timeout after 60 s"
    assert summary["alert"] == [f"smtp:{SMTP_CONN}", f"webhook:{HOOK_CONN}"]
    assert counts(conn) == before  # the ledger is only read

    rows = audit_rows(conn)
    assert [(r[0], r[1]) for r in rows] == [("FR-Lam", "WARNING"), ("FR-Aur", "INFO")]
    assert "8 of 100 files due not accepted" in rows[0][2]
    assert {m["etc_name"] for m in rows[0][3]["missing"]} == set(missing)

    (mail,) = sink.messages  # ONE alert for the run
    assert (
        mail["Subject"] == "[stationflow] 8 ICOS files not accepted by their deadline (FR-Lam: 8)"
    )
    body = MailSink.html(mail)
    for line in (
        f"{st}: never assembled",
        f"{rejected}: last upload rejected (HTTP 403: bad checksum)",
        f"{errored}: last upload failed (no answer: read timeout after 60 s)",
        f"{waiting}: assembled (version 1), not uploaded",
        f"{hole[0]} .. {hole[-1]} (4 files): never assembled",
    ):
        assert line in body
    assert "FR-Aur" not in body
    ((_, _, payload),) = hook.received
    assert payload["kind"] == "reconcile" and payload["stations"] == {"FR-Lam": 8}
    assert {f["etc_name"] for f in payload["files"]} == set(missing)
    assert payload["text"] == body.split(">", 1)[1].rsplit("<", 1)[0].replace("&#x27;", "'")


def test_nothing_is_missing_before_its_deadline(conn, sink):
    """At 02:00Z on the 21st: DAY's daily files (due 05:00Z) and its last EC half-hours
    (due after 02:00Z) are not missing yet, whatever the ledger says; earlier ones are."""
    last_ec = "FR-Lam_EC_202611210000_L03_F01.zip"  # 23:30-24:00 local, due 05:00Z
    early_ec = "FR-Lam_EC_202611201200_L03_F01.zip"  # due 17:00Z on DAY
    st = "FR-Lam_ST_20261120_L02_F01.dat"
    all_accepted(conn, DAY - timedelta(days=1), DAY, but=(last_ec, st, early_ec))

    early = reconcile(conn, INV, now=datetime(2026, 11, 21, 2, 0, tzinfo=UTC))
    lam = early["stations"]["FR-Lam"]
    assert [m["etc_name"] for m in lam["missing"]] == [early_ec]
    assert lam["pending"] == 2  # not due and not accepted: ST and the last EC
    assert lam["due"] == 100 - 2 - 6  # not due yet: BM, ST, the EC ending after 21:00 LST

    at_deadline = reconcile(conn, INV, now=datetime(2026, 11, 21, 5, 0, tzinfo=UTC))
    assert {m["etc_name"] for m in at_deadline["stations"]["FR-Lam"]["missing"]} == {
        early_ec,
        last_ec,
        st,
    }
    assert len(sink.messages) == 2


def test_running_twice_alerts_twice_and_changes_no_ledger_state(conn, sink):
    all_accepted(conn, DAY - timedelta(days=1), DAY, but=("FR-Aur_BM_20261120_L01_F01.dat",))
    before = counts(conn)
    first = reconcile(conn, INV, now=AFTER)
    second = reconcile(conn, INV, now=AFTER)
    assert first == second and first["missing"] == 1
    assert counts(conn) == before
    assert len(sink.messages) == 2 and len(audit_rows(conn)) == 4


def test_a_failed_alert_is_recorded_not_raised(conn, monkeypatch):
    from tests.integration.publish.test_alerts import free_port, set_smtp_conn

    set_smtp_conn(monkeypatch, free_port())  # nobody listens; the webhook is undefined
    monkeypatch.delenv(f"AIRFLOW_CONN_{HOOK_CONN.upper()}", raising=False)
    summary = reconcile(conn, INV, now=AFTER, days=1)
    assert summary["missing"] == 50 + 1  # days=1, an empty ledger: everything is missing
    assert summary["alert"] == []
    assert summary["alert_failed"] == [f"smtp:{SMTP_CONN}", f"webhook:{HOOK_CONN}"]
    rows = audit_rows(conn)
    assert rows[0][3]["alert_failed"] == summary["alert_failed"]


def test_now_must_be_aware(conn):
    with pytest.raises(ValueError, match="timezone-aware"):
        reconcile(conn, INV, now=datetime(2026, 11, 21, 8, 0))
