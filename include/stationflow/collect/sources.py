"""The harvester source for each ``harvest`` entry of a sensor network, from its Connection."""

from __future__ import annotations

from stationflow.collect.harvest import Source
from stationflow.config import Harvest, InfluxHarvest, WhaleHarvest
from stationflow.connections import get_connection


def source_for(cfg: Harvest) -> Source:
    conn = get_connection(cfg.connection_id)
    if isinstance(cfg, WhaleHarvest):
        from stationflow.collect.whale import WhaleSource

        return WhaleSource.from_connection(
            conn, connection_id=cfg.connection_id, devices=cfg.devices
        )
    if isinstance(cfg, InfluxHarvest):
        from stationflow.collect.influxdb import InfluxSource

        return InfluxSource.from_connection(
            conn,
            database=cfg.database,
            measurements=cfg.measurements,
            connection_id=cfg.connection_id,
        )
    raise TypeError(f"no harvester source for {type(cfg).__name__}")
