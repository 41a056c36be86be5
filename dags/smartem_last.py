"""Smart Emission record chain, last values (seed 001, 4.2.4): every 10 minutes, each
sensor network's newest sample per device is harvested (Whale `/devices/{id}/last`, the
last minutes of each AirSensEUR box in InfluxDB), refined with the network's indicators
and calibration, and written to `smartem_rt.last_device_output`: one row per device and
indicator, overwritten in place (no history), never with an older sample.

Rows older than two hours are marked `value_stale` and leave the views
`smartem_rt.v_last_measurements[_<indicator>]`. A device that fails is audited (step
`last`) and the others are refreshed; a source that gives nothing fails the task after
the others are written. Nothing to backfill: a run only ever shows the present.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.config import load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE

INVENTORY = load_inventory()


@task(retries=2, retry_delay=timedelta(seconds=30), execution_timeout=timedelta(minutes=4))
def refresh(network_id: str) -> dict:
    from stationflow.refine.records.last_tasks import refresh_last

    return refresh_last(network_id, get_current_context())


@dag(
    dag_id="smartem_last",
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=9),
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "smartemission", "last"],
    doc_md=__doc__,
)
def smartem_last():
    for net in INVENTORY.sensor_networks:
        refresh.override(task_id=f"last_{net.id}")(net.id)


smartem_last()
