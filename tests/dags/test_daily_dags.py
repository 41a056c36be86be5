"""icos_daily_<station> end to end with dag.test(): the simulated station network and portal,
a whole day collected, assembled, uploaded and verified; replay uploads nothing twice; late
data is a new version, uploaded; a refusal fails the upload task and alerts."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stationflow.refine.daily import etc_day, half_hour_before
from tests.sim_network import INV, age, running_network

pytestmark = pytest.mark.airflow
STATION = INV.station("FR-Lam")


@pytest.fixture
def network(tmp_path, monkeypatch, state_db):
    """A fresh state database too: the simulated days are the same bytes in every test."""
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    yield from running_network(tmp_path, monkeypatch)


def yesterday_run() -> datetime:
    """A logical date whose data interval starts on yesterday's local date."""
    local_now = datetime.now(UTC) + timedelta(hours=STATION.utc_offset_hours)
    today = local_now.replace(hour=0, minute=30, second=0, microsecond=0)
    return today - timedelta(hours=STATION.utc_offset_hours)


def ledger(run_ids: list[str]):
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        outputs = c.execute(
            "SELECT o.etc_name, o.version, u.outcome, u.receipt FROM stationflow.output_file o"
            " JOIN stationflow.upload u ON u.output_file_id = o.id"
            " JOIN stationflow.audit_log a ON a.details->>'output_file_id' = o.id::text"
            " AND a.step = 'publish.upload' AND a.run_id = ANY(%s)"
            " WHERE o.station = 'FR-Lam' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2",
            (run_ids,),
        ).fetchall()
    return outputs


def test_a_station_day_is_uploaded_once_replayed_and_versioned(
    airflow_db, dagbag, network, tmp_path
):
    network.tick(datetime.now(UTC))
    age(tmp_path / "sim" / "loggernet" / "FR-Lam", 120)
    dag = dagbag.get_dag("icos_daily_FR-Lam")
    run = dag.test(logical_date=yesterday_run())
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    day = etc_day(run.data_interval_start, STATION)
    names = {f"FR-Lam_BM_{day:%Y%m%d}_L01_F01.dat", f"FR-Lam_ST_{day:%Y%m%d}_L02_F01.dat"}
    staged = set(network.portal.objects)
    assert names <= staged, (staged, network.portal.requests[:3])
    first = ledger([run.run_id])
    assert {(n, v, o) for n, v, o, _ in first} == {(n, 1, "accepted") for n in names}
    puts = len(network.portal.puts())

    again = dag.test(logical_date=yesterday_run() + timedelta(seconds=1))  # a replay
    assert again.state == "success"
    assert len(network.portal.puts()) == puts  # identical files: nothing sent twice

    # late data for that day: a recovered LoggerNet file with a row the day was missing
    folder = tmp_path / "sim" / "loggernet" / "FR-Lam"
    current = folder / "FR-Lam_Meteo_1min.dat"
    header = current.read_bytes().split(b"\r\n")[:4]
    stamp = f"{day:%Y-%m-%d} 12:00:00"
    late = folder / "FR-Lam_Meteo_1min_recovered.dat"
    late.write_bytes(b"\r\n".join([*header, f'"{stamp}",1,9,9,9,9,9'.encode(), b""]))
    age(folder, 120)
    late_run = dag.test(logical_date=yesterday_run() + timedelta(seconds=2))
    assert late_run.state == "success"
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        versions = c.execute(
            "SELECT o.version, u.outcome FROM stationflow.output_file o JOIN stationflow.upload u"
            " ON u.output_file_id = o.id WHERE o.etc_name = %s ORDER BY o.version",
            (f"FR-Lam_BM_{day:%Y%m%d}_L01_F01.dat",),
        ).fetchall()
    assert versions == [(1, "accepted"), (2, "accepted")]
    assert len(network.portal.puts()) == puts + 1
    bm = network.portal.history(f"FR-Lam_BM_{day:%Y%m%d}_L01_F01.dat")
    assert len(bm) == 2


def test_a_refused_upload_fails_the_task_and_alerts(airflow_db, dagbag, network, tmp_path):
    network.tick(datetime.now(UTC))
    age(tmp_path / "sim" / "loggernet" / "FR-Lam", 120)
    network.portal.fail_next(403, times=5, message="This file must be uploaded by X, not by Y!")
    # (a logical date of its own: the first test's runs stay in the session database)
    run = dagbag.get_dag("icos_daily_FR-Lam").test(
        logical_date=yesterday_run() + timedelta(seconds=10)
    )
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["upload_BM_L01_F01"] == "failed" and states["verify_BM_L01_F01"] in (
        "upstream_failed",
        "skipped",
    )
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        alerts = c.execute(
            "SELECT message FROM stationflow.audit_log WHERE step = 'alert' AND run_id = %s",
            (run.run_id,),
        ).fetchall()
        rejected = c.execute(
            "SELECT http_status, message FROM stationflow.upload WHERE outcome = 'rejected'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert any("upload_BM_L01_F01" in m for (m,) in alerts)
    assert rejected[0] == 403 and "must be uploaded by" in rejected[1]


def test_an_ec_half_hour_is_pulled_assembled_zipped_and_uploaded(
    airflow_db, dagbag, network, tmp_path
):
    aur = INV.station("FR-Aur")
    network.tick(datetime.now(UTC))  # yesterday's SmartFlux half-hours are on its FTP server
    local_now = datetime.now(UTC) + timedelta(hours=aur.utc_offset_hours)
    yesterday = local_now.date() - timedelta(days=1)
    at = datetime(yesterday.year, yesterday.month, yesterday.day, 10, 35, tzinfo=UTC)
    run = dagbag.get_dag("icos_halfhourly_FR-Aur").test(logical_date=at)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert set(states) == {
        "collect",
        "assemble_EC_L02_F01",
        "upload_EC_L02_F01",
        "verify_EC_L02_F01",
    }
    day, k = half_hour_before(run.data_interval_start, aur)  # the half-hour before the run's
    end = datetime(day.year, day.month, day.day) + timedelta(minutes=30 * (k + 1))
    name = f"FR-Aur_EC_{end:%Y%m%d%H%M}_L02_F01.zip"
    assert name in network.portal.staging("FR-Aur"), network.portal.staging("FR-Aur")
    assert len(network.portal.puts()) == 1  # that half-hour only
