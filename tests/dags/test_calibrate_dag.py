"""smartem_calibrate: its shape and policy in the DagBag, and a run with dag.test() (a manual
run) that trains on the Whale simulator's hours of device 23 over the shipped reference
window and stores a model per gas with the run's ids; a run without data only warns."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stationflow.collect.harvest import harvest
from stationflow.collect.whale import WhaleSource
from stationflow.sim import reference as simref
from stationflow.sim.whale import WhaleSim

H = timedelta(hours=1)
END = simref.START + simref.HOURS * H
MONDAY = datetime(2026, 1, 26, 4, tzinfo=UTC)  # the weekly slot right after the reference
HARVESTER = "whale:calibrate_dag_test"


def test_the_dag_has_a_weekly_task_per_calibrated_network(dagbag) -> None:
    from airflow.sdk import CronTriggerTimetable

    assert dagbag.import_errors == {}
    dag = dagbag.dags["smartem_calibrate"]
    assert [t.task_id for t in dag.tasks] == ["calibrate_smartemission"]
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "0 4 * * 1"  # Mondays 04:00 UTC
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.max_active_tasks == 1
    task = dag.get_task("calibrate_smartemission")
    assert task.owner == "stationflow" and task.retries >= 2
    assert task.execution_timeout == timedelta(hours=1)
    assert "calibrate" in dag.tags and "stationflow" in dag.tags and dag.doc_md


@pytest.fixture
def device_23_hours() -> Iterator[None]:
    """Device 23's raw hours of the reference window in the session's state database (the
    one the DAG's tasks use); removed afterwards with the models (the audit log stays)."""
    url = os.environ["STATIONFLOW_DB_URL"]
    clock = END + 2 * H
    with (
        WhaleSim([23], clock=lambda: clock, history_hours=simref.HOURS + 48) as sim,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        src = WhaleSource(url=sim.url, connection_id="calibrate_dag_test", backoff=0.01)
        report = harvest(conn, src, until=END, since=simref.START, now=clock, workers=2)
        assert report.written.inserted + report.written.unchanged == simref.HOURS
    yield
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM smartem_raw.timeseries WHERE harvester = %s", (HARVESTER,))
        conn.execute(
            "DELETE FROM smartem_raw.harvester_progress WHERE harvester = %s", (HARVESTER,)
        )
        conn.execute("DELETE FROM smartem_calibration.model WHERE dag_id = 'smartem_calibrate'")


def calibrate_rows(run_id: str) -> tuple[list[tuple], list[tuple]]:
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        audits = c.execute(
            "SELECT level, details->>'gas', task_id FROM stationflow.audit_log"
            " WHERE step = 'calibrate' AND run_id = %s ORDER BY id",
            (run_id,),
        ).fetchall()
        models = c.execute(
            "SELECT gas, valid, window_end, task_id FROM smartem_calibration.model"
            " WHERE run_id = %s ORDER BY gas",
            (run_id,),
        ).fetchall()
    return audits, models


@pytest.mark.airflow
def test_a_run_trains_and_stores_a_model_per_gas(airflow_db, dagbag, device_23_hours) -> None:
    dag = dagbag.get_dag("smartem_calibrate")
    run = dag.test(logical_date=MONDAY)
    assert run.state == "success"
    audits, models = calibrate_rows(run.run_id)
    task = "calibrate_smartemission"
    assert audits == [("INFO", gas, task) for gas in ("co", "no2", "o3")]
    # the window ends at the run's slot, whenever the run happens
    assert models == [(gas, True, MONDAY, task) for gas in ("co", "no2", "o3")]


@pytest.mark.airflow
def test_a_run_without_data_warns_and_succeeds(airflow_db, dagbag) -> None:
    dag = dagbag.get_dag("smartem_calibrate")
    run = dag.test(logical_date=MONDAY + timedelta(weeks=10))  # no raw data in its window
    assert run.state == "success"
    audits, models = calibrate_rows(run.run_id)
    assert [a[:2] for a in audits] == [("WARNING", g) for g in ("co", "no2", "o3")]
    assert models == []
