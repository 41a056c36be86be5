"""Smart Emission record chain, publish: each network's refined values go to its targets in
stations.yaml - OGC SensorThings API (Things, Datastreams, Observations created lazily) and
SOS-T (InsertSensor on first use, InsertObservation) - exactly once per target.

Runs when a refine wrote values (the `smartem_refined.<network>` Asset) and every hour as a
safety net. What each target holds is in `smartem_publish.observation`: a value is sent
when the target lacks it or it changed (late data), never twice - also not after a crash
between the server's answer and the ledger's commit. A failed value fails the task (an
alert) and is tried again by the next run. Replay a range with
`airflow backfill create --dag-id smartem_publish --from-date .. --to-date ..`: a backfill
run checks every value of its interval against the server, creates what the server lost,
updates what differs, deletes duplicates and values the refiner no longer gives.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, dag, get_current_context, task

from stationflow.alerts import failure_callbacks
from stationflow.assets import assets_or_cron, refined_asset
from stationflow.config import load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE

INVENTORY = load_inventory()
ALERT = failure_callbacks(INVENTORY)
REFINED_ASSETS = [refined_asset(net.id) for net in INVENTORY.sensor_networks if net.publish]


@task(retries=3, retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=50))
def publish(network_id: str, target: str) -> dict:
    from stationflow.publish.records.tasks import publish_records

    return publish_records(network_id, target, get_current_context())


@dag(
    dag_id="smartem_publish",
    schedule=assets_or_cron(REFINED_ASSETS, "45 * * * *"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=55),
    default_args={**DEFAULT_ARGS, "on_failure_callback": ALERT},
    tags=["stationflow", "smartemission", "publish"],
    doc_md=__doc__,
)
def smartem_publish():
    for net in INVENTORY.sensor_networks:
        with TaskGroup(group_id=net.id):
            for t in net.publish:
                publish.override(task_id=f"publish_{t.kind}_{t.connection_id}")(
                    net.id, f"{t.kind}:{t.connection_id}"
                )


smartem_publish()
