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
