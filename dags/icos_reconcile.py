"""Daily reconciliation of the file chain: every file every station owes the ICOS ETC,
checked against the ledger once its deadline has passed.

Missing files (never assembled, not uploaded, rejected, failed) are listed per station in the
audit log and in one alert (mail, webhook); the task then fails, red in the UI. This also
catches what task callbacks cannot: tasks killed without running their callbacks.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE


@task
def reconcile() -> dict:
    from stationflow.publish.tasks import reconcile_all

    return reconcile_all(get_current_context())


@dag(
    dag_id="icos_reconcile",
    schedule=CronDataIntervalTimetable("0 7 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "icos", "publish"],
    doc_md=__doc__,
)
def icos_reconcile():
    reconcile()


icos_reconcile()
