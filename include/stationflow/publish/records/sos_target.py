"""Refined Smart Emission values as SOS-T observations (seed 001 4.4.2):

- station (device)  -> procedure ``station-<device id>`` with its offering
  ``offering-<device id>``, inserted lazily (InsertSensor when InsertObservation answers
  that the SOS does not know them), observing every indicator of the network;
- station position  -> feature of interest ``fid-<device id>-<lon>,<lat>`` (a sampling point);
- hourly value      -> an OM_Measurement identified by the refined ``unique_id``
  (``<device>-<yyyymmdd>-<h>-<indicator>``), phenomenonTime the hour (a period),
  resultTime its end.

SOS-T has no update: a value the server may hold in another version (a new refined
revision, a send that was never confirmed, a replay) is deleted by identifier first
(52North's DeleteObservation extension; "not there" is fine) and inserted again. Values
never sent go in one InsertObservation per station and batch; when the SOS refuses a batch
(a duplicate, a bad value) it is sent again value by value, so only the bad ones fail.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from stationflow.config import SensorNetwork
from stationflow.publish.records.ledger import Outcome, PublishRow
from stationflow.publish.sos import (
    SosClient,
    SosDuplicate,
    SosFeature,
    SosObservation,
    SosRejected,
    SosSensor,
)

log = logging.getLogger("stationflow.publish.sos")


class SosTarget:
    """One run's publisher to one SOS-T server, for one sensor network."""

    kind = "sos"

    def __init__(self, client: SosClient, net: SensorNetwork, name: str):
        self.client, self.net, self.name = client, net, name
        self.created: dict[str, int] = {}  # (the SOS reports no lazily inserted sensors)
        self.replaced = 0  # values deleted and inserted again

    def __repr__(self) -> str:
        return f"SosTarget({self.name!r}, {self.client.url!r})"

    def feature(self, row: PublishRow) -> SosFeature:
        if row.lon is None or row.lat is None:
            return SosFeature(f"fid-{row.device_id}", f"station {row.device_id}", None, None)
        where = f"{row.lon:.6f},{row.lat:.6f}"
        return SosFeature(
            f"fid-{row.device_id}-{where}", f"station {row.device_id} at {where}", row.lon, row.lat
        )

    def sensor(self, row: PublishRow) -> SosSensor:
        return SosSensor(
            procedure=f"station-{row.device_id}",
            offering=f"offering-{row.device_id}",
            name=f"{self.net.name or self.net.id} station {row.device_id}",
            observable_properties=tuple(self.net.indicators),
            feature=self.feature(row),
        )

    def observation(self, row: PublishRow) -> SosObservation:
        return SosObservation(
            identifier=row.unique_id,
            procedure=f"station-{row.device_id}",
            offering=f"offering-{row.device_id}",
            observed_property=row.name,
            feature=self.feature(row),
            phenomenon_start=row.time - timedelta(hours=1),
            phenomenon_end=row.time,
            result_time=row.time,
            value=float(row.value),
            uom=row.unit,
        )

    def publish(self, rows: Sequence[PublishRow], *, verify: bool = False) -> list[Outcome]:
        """Send the rows; an Outcome per row, in order. A server that is down raises
        (``SosUnavailable``): the rows stay 'sending' and the task's retry sends them.

        One InsertObservation per station and indicator: 52North silently leaves out an
        observation whose indicator the station's sensor does not observe when others in
        the request are fine, so a request never mixes indicators (all stored, or refused)."""
        outcome: dict[Any, Outcome] = {}
        fresh: dict[tuple[int, str], list[PublishRow]] = defaultdict(list)
        for r in rows:
            try:
                self.observation(r)
            except ValueError as exc:  # e.g. a value that is not a number: never sent
                outcome[r.key] = Outcome(r.key, r.revision, error=str(exc))
                continue
            if r.state is None:
                fresh[(r.device_id, r.name)].append(r)
            else:  # the server may hold another version, or this one
                outcome[r.key] = self._replace(r)
        for group in fresh.values():
            try:
                self.client.insert_observations(
                    self.sensor(group[-1]), [self.observation(r) for r in group]
                )
            except (SosDuplicate, SosRejected) as exc:
                log.warning("%s: batch of %d refused (%s); sending them one by one",
                            self.name, len(group), exc)  # fmt: skip
                outcome.update({r.key: self._one(r) for r in group})
                continue
            outcome.update({r.key: Outcome(r.key, r.revision, r.unique_id) for r in group})
        return [outcome[r.key] for r in rows]

    def _one(self, row: PublishRow) -> Outcome:
        try:
            self.client.insert_observations(self.sensor(row), [self.observation(row)])
        except SosDuplicate:  # held already, maybe in another version: ours wins
            return self._replace(row)
        except SosRejected as exc:
            return Outcome(row.key, row.revision, error=str(exc))
        return Outcome(row.key, row.revision, row.unique_id)

    def _replace(self, row: PublishRow) -> Outcome:
        if self.client.delete_observation(row.unique_id):
            self.replaced += 1
        try:
            self.client.insert_observations(self.sensor(row), [self.observation(row)])
        except SosRejected as exc:
            return Outcome(row.key, row.revision, error=str(exc))
        return Outcome(row.key, row.revision, row.unique_id)

    def delete(self, remote_ids: Sequence[Any]) -> int:
        return sum(self.client.delete_observation(str(rid)) for rid in remote_ids)
