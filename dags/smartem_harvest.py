"""Smart Emission record chain, collect: every hour, each sensor network's harvesters (Whale
raw-sensor API, InfluxDB for AirSensEUR boxes) store the hours that ended in
`smartem_raw.timeseries`, byte for byte, with their progress kept by a trigger.

Each run re-checks the last `lookback_hours` (late data is stored as a new revision), and
resumes from the newest committed hour of each device after any outage. A device that fails
is audited and skipped; the others go on. Each network's raw table is an Asset: the refine
DAG runs when it changes. Replay any range with
`airflow backfill create --dag-id smartem_harvest --from-date .. --to-date ..`: a backfill
run harvests exactly its hour, and identical hours are left untouched.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.assets import raw_asset
from stationflow.config import load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE

INVENTORY = load_inventory()


@task(retries=3, retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=50))
def harvest(network_id: str, harvester: str) -> dict:
    from stationflow.collect.tasks import harvest_source

    context = get_current_context()
    summary = harvest_source(network_id, harvester, context)
    context["outlet_events"][raw_asset(network_id)].extra = summary
    return summary


@dag(
    dag_id="smartem_harvest",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=55),
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "smartemission", "collect"],
    doc_md=__doc__,
)
def smartem_harvest():
    for net in INVENTORY.sensor_networks:
        with TaskGroup(group_id=net.id):
            for cfg in net.harvest:
                harvest.override(
                    task_id=f"harvest_{cfg.kind}_{cfg.connection_id}",
                    outlets=[raw_asset(net.id)],
                )(net.id, cfg.harvester)


smartem_harvest()
