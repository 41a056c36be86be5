"""Daily check that the station inventory is valid and the state schema is current.

Fails (and so alerts) on a broken `stations.yaml` or a pending migration; records the
inventory it saw in the audit log.
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id="stationflow_inventory",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "housekeeping"],
    doc_md=__doc__,
)
def stationflow_inventory():
    @task  # a ConfigError is permanent: fails at once, no retries (see dag_defaults)
    def check_inventory() -> dict:
        from stationflow.housekeeping import inventory_summary

        return inventory_summary()

    @task
    def check_state_schema() -> list[str]:
        from stationflow.housekeeping import check_schema

        return check_schema()

    @task
    def record(summary: dict, migrations: list[str]) -> int:
        from stationflow.housekeeping import record_check
        from stationflow.state.audit import RunIds

        return record_check(summary, migrations, RunIds.from_context(get_current_context()))

    record(check_inventory(), check_state_schema())


stationflow_inventory()
