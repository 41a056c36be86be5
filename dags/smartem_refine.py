"""Smart Emission record chain, refine: each network's raw hours become hourly indicator
values in `smartem_refined.timeseries` (validated, converted, calibrated, aggregated over
the valid samples), driven by the device definitions and the network's indicators.

Runs when a harvest stored new raw hours (the `smartem_raw.<network>` Asset) and every
hour as a safety net. Only raw hours never refined, or changed since (late data), are
refined; values are upserted on (device, indicator, day, hour), so nothing is duplicated.
Replay a range (e.g. after training a new calibration model) with
`airflow backfill create --dag-id smartem_refine --from-date .. --to-date ..`: a backfill
run re-refines every raw hour in its interval and changes only values that differ.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task

from stationflow.assets import assets_or_cron, raw_asset, refined_asset
from stationflow.config import load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE

INVENTORY = load_inventory()
RAW_ASSETS = [raw_asset(net.id) for net in INVENTORY.sensor_networks]


@task(retries=3, retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=50))
def refine(network_id: str) -> dict:
    from stationflow.refine.records.tasks import refine_records

    context = get_current_context()
    summary = refine_records(network_id, context)
    context["outlet_events"][refined_asset(network_id)].extra = summary
    return summary


@dag(
    dag_id="smartem_refine",
    schedule=assets_or_cron(RAW_ASSETS, "30 * * * *"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=55),
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "smartemission", "refine"],
    doc_md=__doc__,
)
def smartem_refine():
    for net in INVENTORY.sensor_networks:
        refine.override(task_id=f"refine_{net.id}", outlets=[refined_asset(net.id)])(net.id)


smartem_refine()
