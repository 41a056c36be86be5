"""Poll Modbus loggers (directly, or RTU through a serial server) every minute.

One task per logger from stations.yaml; each appends one row per poll to its table in the
spool, and lands the day's table once the day is over. A serial server's port has one owner
at a time (a pool of one slot per port). A failed poll is audited and retried within the
minute (the row keeps the slot's timestamp); if the logger stays silent the slot stays a
visible hole, never a made-up value.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.alerts import on_failure_alert
from stationflow.config import ModbusCollect, load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE
from stationflow.pools import port_pool

INVENTORY = load_inventory()


@task(
    retries=2,
    retry_delay=timedelta(seconds=5),
    retry_exponential_backoff=0,
    execution_timeout=timedelta(seconds=40),
)
def poll(station_id: str, logger_id: str) -> dict:
    from stationflow.collect.tasks import poll_modbus

    return poll_modbus(station_id, logger_id, get_current_context())


@dag(
    dag_id="icos_poll",
    schedule=CronDataIntervalTimetable("* * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(seconds=55),
    default_args={**DEFAULT_ARGS, "on_failure_callback": on_failure_alert},
    tags=["stationflow", "icos", "collect"],
    doc_md=__doc__,
)
def icos_poll():
    for st in INVENTORY.stations:
        for lg in st.loggers:
            if isinstance(lg.collect, ModbusCollect):
                poll.override(
                    task_id=f"poll_{st.id}_{lg.id}", pool=port_pool(lg.collect.connection_id)
                )(st.id, lg.id)


icos_poll()
