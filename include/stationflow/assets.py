"""The Airflow Assets that chain the record chain's DAGs: harvest -> refine -> publish."""

from __future__ import annotations

from airflow.sdk import Asset


def raw_asset(network_id: str) -> Asset:
    """A network's rows in smartem_raw.timeseries; updated by every harvest that stored."""
    return Asset(
        name=f"smartem_raw.{network_id}",
        uri=f"stationflow://smartem_raw/timeseries/{network_id}",
        group="smartemission",
    )


def refined_asset(network_id: str) -> Asset:
    """A network's rows in smartem_refined.timeseries; updated by every refine that wrote."""
    return Asset(
        name=f"smartem_refined.{network_id}",
        uri=f"stationflow://smartem_refined/timeseries/{network_id}",
        group="smartemission",
    )


def assets_or_cron(assets: list[Asset], cron: str):
    """Run when any of ``assets`` is updated and on ``cron`` (UTC) as a safety net."""
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    timetable = CronDataIntervalTimetable(cron, timezone="UTC")
    if not assets:
        return timetable
    condition = assets[0]
    for a in assets[1:]:
        condition = condition | a
    return AssetOrTimeSchedule(timetable=timetable, assets=condition)
