"""airflow_db_clean: the cutoff and argv (no Airflow), then real `airflow db clean` runs.

The real runs use logical dates in 2001, so the cutoff falls in 2000: only the rows this file
inserts there can go, nothing another test made in the session's database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from stationflow.housekeeping import (
    DB_CLEAN_RETENTION_VARIABLE,
    InvalidRetention,
    db_clean_argv,
    db_clean_cutoff,
    db_clean_retention_days,
    run_db_clean,
)

LOGICAL = datetime(2001, 1, 1, 3, 30, tzinfo=UTC)


# ---------------------------------------------------------------- pure functions


def test_retention_days_default_and_validation():
    assert db_clean_retention_days(None) == 90
    assert db_clean_retention_days("  ") == 90
    assert db_clean_retention_days("30") == 30
    assert db_clean_retention_days(7) == 7
    for bad in ("6", "0", "-5", "ninety", "30.5"):
        with pytest.raises(InvalidRetention, match=DB_CLEAN_RETENTION_VARIABLE):
            db_clean_retention_days(bad)


def test_cutoff_is_the_logical_date_minus_the_retention_in_utc():
    assert db_clean_cutoff(LOGICAL, 90) == datetime(2000, 10, 3, 3, 30, tzinfo=UTC)
    paris = datetime(2026, 3, 29, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert db_clean_cutoff(paris, 7) == datetime(2026, 3, 22, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        db_clean_cutoff(datetime(2026, 1, 1), 90)


def test_argv():
    argv = db_clean_argv(datetime(2000, 10, 3, 3, 30, tzinfo=UTC), airflow="airflow")
    assert argv == [
        "airflow",
        "db",
        "clean",
        "--clean-before-timestamp",
        "2000-10-03T03:30:00+00:00",
        "--yes",
        "--skip-archive",
        "--error-on-cleanup-failure",
    ]
    assert db_clean_argv(LOGICAL)[0].endswith("airflow")  # the venv's by default
    with pytest.raises(ValueError, match="timezone-aware"):
        db_clean_argv(datetime(2000, 1, 1))


# ---------------------------------------------------------------- real runs


def _add_log_rows(*dttms: datetime) -> str:
    """Rows of Airflow's event log (table ``log``) at the given times; returns their event."""
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    event = f"sf-test-{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        for dttm in dttms:
            row = Log(event=event)
            row.dttm = dttm
            session.add(row)
    return event


def _log_times(event: str) -> list[datetime]:
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return sorted(session.scalars(select(Log.dttm).where(Log.event == event)))


OLD = datetime(2000, 1, 1, tzinfo=UTC)  # before the 2000-10-03 cutoff
RECENT = datetime(2000, 12, 1, tzinfo=UTC)  # after it


@pytest.mark.airflow
def test_run_db_clean_removes_old_rows_and_keeps_recent_ones(airflow_db):
    event = _add_log_rows(OLD, RECENT)
    assert _log_times(event) == [OLD, RECENT]
    report = run_db_clean(db_clean_cutoff(LOGICAL, 90), timeout=120)
    assert _log_times(event) == [RECENT]
    assert report["cutoff"] == "2000-10-03T03:30:00+00:00"
    assert "--skip-archive" in report["argv"]


def test_the_dag_is_daily_without_catchup_and_fails_fast_on_a_bad_retention(dagbag):
    from airflow.timetables.interval import CronDataIntervalTimetable

    from stationflow.errors import PermanentError

    dag = dagbag.get_dag("airflow_db_clean")
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.summary == "30 3 * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"stationflow", "housekeeping"} <= set(dag.tags)
    (task,) = dag.tasks
    assert task.task_id == "clean_metadata" and task.retries >= 2
    assert task.on_failure_callback  # the alert row
    # the retry policy of dag_defaults fails a PermanentError at once
    assert issubclass(InvalidRetention, PermanentError)
