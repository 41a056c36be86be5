"""Smart Emission record chain, calibrate: every Monday 04:00 UTC (or when triggered by
hand), for each sensor network with `calibration` in stations.yaml, an ANN per gas (CO, NO2,
O3) is trained on the raw samples of the sensors co-located with the reference station
against its hourly values over the last `training_days`, and stored with its input order,
held-out score and training window in `smartem_calibration.model`.

A model is valid when its held-out R^2 reaches `min_score`; the refiner applies the newest
valid model per gas, so a poor week leaves the previous model in use (stored, audited as a
WARNING). Too little data is an audited WARNING and no model, not a failure. Training is
CPU-bound: one task at a time.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from stationflow.config import load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE

INVENTORY = load_inventory()


@task(retries=2, retry_delay=timedelta(minutes=10), execution_timeout=timedelta(hours=1))
def calibrate(network_id: str) -> dict:
    from stationflow.refine.records.calibrate_tasks import calibrate_network

    return calibrate_network(network_id, get_current_context())


@dag(
    dag_id="smartem_calibrate",
    schedule=CronTriggerTimetable("0 4 * * 1", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "smartemission", "calibrate"],
    doc_md=__doc__,
)
def smartem_calibrate():
    for net in INVENTORY.sensor_networks:
        if net.calibration is not None:
            calibrate.override(task_id=f"calibrate_{net.id}")(net.id)


smartem_calibrate()
