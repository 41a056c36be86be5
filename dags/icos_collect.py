"""Collect every station's files: LoggerNet folders, FTP pulls, device health and resets.

Tasks are generated from stations.yaml, one per device, grouped by station. Transfers over a
station's VPN link share its pool; each task retries with backoff. A device that stays down
after its relay reset fails its health task (an alert).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.alerts import on_failure_alert
from stationflow.config import FtpPullCollect, LoggerNetCollect, load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE
from stationflow.pools import station_pool

INVENTORY = load_inventory()


@task(retries=3, retry_delay=timedelta(seconds=30), execution_timeout=timedelta(minutes=20))
def scan_loggernet(station_id: str, logger_id: str) -> dict:
    from stationflow.collect.tasks import scan_loggernet

    return scan_loggernet(station_id, logger_id, get_current_context())


@task(execution_timeout=timedelta(minutes=30))
def pull_ftp(station_id: str, logger_id: str) -> dict:
    from stationflow.collect.tasks import pull_ftp

    return pull_ftp(station_id, logger_id, get_current_context())


@task(retries=0, execution_timeout=timedelta(minutes=15))
def check_health(station_id: str, logger_id: str) -> dict:
    """No retries: the next scheduled run is the retry, and an immediate re-check after a
    failed reset would find the device booting, pass, and swallow the alert."""
    from stationflow.collect.tasks import check_health

    return check_health(station_id, logger_id, get_current_context())


@dag(
    dag_id="icos_collect",
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=60),
    default_args={**DEFAULT_ARGS, "on_failure_callback": on_failure_alert},
    tags=["stationflow", "icos", "collect"],
    doc_md=__doc__,
)
def icos_collect():
    for st in INVENTORY.stations:
        with TaskGroup(group_id=st.id):
            for lg in st.loggers:
                if isinstance(lg.collect, LoggerNetCollect):  # a folder on the lab PC
                    scan_loggernet.override(task_id=f"scan_{lg.id}")(st.id, lg.id)
                elif isinstance(lg.collect, FtpPullCollect):
                    pull_ftp.override(task_id=f"pull_{lg.id}", pool=station_pool(st.id))(
                        st.id, lg.id
                    )
                if lg.health_connection_id:
                    check_health.override(task_id=f"health_{lg.id}", pool=station_pool(st.id))(
                        st.id, lg.id
                    )


icos_collect()
