"""Daily `airflow db clean`: Airflow's metadata database keeps only the last N days.

Runs, task instances and their history, XCom, the event log, jobs, rendered fields and
asset events older than the run's logical date minus N days are purged
(`airflow db clean --clean-before-timestamp ... --yes --skip-archive`). N is the Airflow
Variable `stationflow_db_clean_retention_days` (default 90, at least 7; set by
`stationflow bootstrap`). The project's own ledger and audit log (the `stationflow`
database) are not touched. The task runs the `airflow` CLI, so it needs the metadata
database connection where it runs (every service of docker-compose.yaml has it).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Variable, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.alerts import on_failure_alert
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE


@task(execution_timeout=timedelta(hours=1))
def clean_metadata() -> dict:
    """Retries with backoff (a locked table, a busy database); a wrong retention Variable
    is permanent and fails at once."""
    from stationflow.housekeeping import (
        DB_CLEAN_RETENTION_VARIABLE,
        db_clean_cutoff,
        db_clean_retention_days,
        run_db_clean,
    )

    context = get_current_context()
    days = db_clean_retention_days(Variable.get(DB_CLEAN_RETENTION_VARIABLE, default=None))
    # a manual run without a logical date cleans relative to when it runs
    when = context.get("logical_date") or context["dag_run"].run_after
    return {"retention_days": days, **run_db_clean(db_clean_cutoff(when, days))}


@dag(
    dag_id="airflow_db_clean",
    schedule=CronDataIntervalTimetable("30 3 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={**DEFAULT_ARGS, "on_failure_callback": on_failure_alert},
    tags=["stationflow", "housekeeping"],
    doc_md=__doc__,
)
def airflow_db_clean():
    clean_metadata()


airflow_db_clean()
