"""stationflow_inventory end to end with dag.test(): real tasks, real state database."""

from __future__ import annotations

import os

import psycopg
import pytest

pytestmark = pytest.mark.airflow


def audit_rows(run_id: str) -> list[tuple]:
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        return c.execute(
            "SELECT dag_id, task_id, step, details->'stations' FROM stationflow.audit_log"
            " WHERE run_id = %s",
            (run_id,),
        ).fetchall()


def test_inventory_dag_records_the_check(airflow_db, dagbag):
    dag = dagbag.get_dag("stationflow_inventory")
    run = dag.test()
    assert run.state == "success"
    assert audit_rows(run.run_id) == [
        ("stationflow_inventory", "record", "housekeeping.inventory", ["FR-Lam", "FR-Aur"])
    ]
    # replaying the same check gives one more row for the new run, nothing else changes
    again = dag.test()
    assert again.state == "success" and again.run_id != run.run_id
    assert len(audit_rows(again.run_id)) == 1


def test_a_broken_inventory_fails_at_once_without_retries(
    airflow_db, dagbag, tmp_path, monkeypatch
):
    bad = tmp_path / "stations.yaml"
    bad.write_text("version: 1\nstations:\n  - id: not-an-icos-id\n")
    monkeypatch.setenv("STATIONFLOW_CONFIG", str(bad))
    dag = dagbag.get_dag("stationflow_inventory")
    run = dag.test()
    assert run.state == "failed"
    ti = run.get_task_instance("check_inventory")
    assert ti.state == "failed"
    assert ti.try_number == 1  # PermanentError: the retry policy did not retry
    assert audit_rows(run.run_id) == []  # nothing recorded for a failed check
