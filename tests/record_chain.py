"""The record chain up to refined values, for the publish tests: Whale hours harvested from
the simulator and refined (no calibration models)."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from stationflow.collect.harvest import harvest
from stationflow.collect.whale import WhaleSource
from stationflow.config import SensorNetwork
from stationflow.refine.records.refiner import Calibration
from stationflow.refine.records.run import refine_network
from stationflow.sim.whale import WhaleSim
from tests.clock import Clock


def harvest_and_refine(
    conn: psycopg.Connection, sim: WhaleSim, clock: Clock, net: SensorNetwork, token: str,
    hours: int = 6,
) -> None:  # fmt: skip
    src = WhaleSource(url=sim.url, connection_id="whale_api", token=token, backoff=0.01)
    harvest(conn, src, until=clock.t, now=clock.t, lookback=timedelta(hours=hours), workers=2)
    refine_network(conn, net, Calibration())
