"""Refined Smart Emission values as SensorThings entities (seed 001 4.4.3, 4.4.4):

- station (device)            -> Thing ``<device id>`` and its Location (PATCHed when it moves)
- device type                 -> Sensor (``Intemo Josene``, ``JRC AirSensEUR``)
- indicator                   -> ObservedProperty ``<indicator>``
- (station, indicator) + unit -> Datastream ``<device id>-<indicator>``
- station position            -> FeatureOfInterest ``station-<device id> at <lon>,<lat>``
- hourly value                -> Observation: phenomenonTime = resultTime = the end of the
  hour (as the original publisher stamped it), the hour's min/max/count in ``parameters``.

Entities are looked up by name (``$filter``) the first time a run needs them, created when
missing, and their ids cached for the run. Observations are created in batches.

What the server holds of a value is decided from the ledger row (``ledger.PublishRow``):
never sent -> created; known id -> PATCHed (idempotent; a 404 means it was deleted, so it is
created again); sent but unconfirmed, or a replay -> the Datastream's Observations at that
time are read back first: one is kept (PATCHed if it differs), extra copies deleted, and
only a missing one is created.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from stationflow.config import SensorNetwork
from stationflow.publish.records.ledger import Key, Outcome, PublishRow
from stationflow.publish.sta import (
    Datastream,
    FeatureOfInterest,
    Id,
    Location,
    Observation,
    ObservedProperty,
    Sensor,
    StaClient,
    StaRejected,
    Thing,
    Unit,
    id_literal,
    iso,
    string_literal,
)

log = logging.getLogger("stationflow.publish.sta")

# device type -> (Sensor name, description, datasheet URL)
SENSORS = {
    "jose": ("Intemo Josene", "Josene outdoor sensor station (Intemo, CityGIS)",
             "https://www.intemo.com/"),
    "ase": ("JRC AirSensEUR", "AirSensEUR open air-quality sensor box (JRC)",
            "https://airsenseur.org/"),
}  # fmt: skip
POSITION_EPS = 1e-7  # degrees (~1 cm): closer positions are the same place


@dataclass
class _Thing:
    id: Id
    location_id: Id | None
    lon: float | None
    lat: float | None
    as_of: str | None  # when the Location was last set (its properties.as_of)


def _position(loc: dict | None) -> tuple[float | None, float | None]:
    geo = (loc or {}).get("location") or {}
    if geo.get("type") == "Point" and len(geo.get("coordinates") or []) >= 2:
        return float(geo["coordinates"][0]), float(geo["coordinates"][1])
    return None, None


def _moved(thing: _Thing, lon: float, lat: float) -> bool:
    if thing.lon is None or thing.lat is None:
        return True
    return abs(thing.lon - lon) > POSITION_EPS or abs(thing.lat - lat) > POSITION_EPS


class StaTarget:
    """One run's publisher to one STA server, for one sensor network."""

    kind = "sta"

    def __init__(self, client: StaClient, net: SensorNetwork, name: str):
        self.client, self.net, self.name = client, net, name
        self.device_names = {d.id: d.name for d in net.devices if d.name}
        self._things: dict[int, _Thing] = {}
        self._sensors: dict[str, Id] = {}
        self._properties: dict[str, Id] = {}
        self._streams: dict[tuple[int, str], Id] = {}
        self._features: dict[tuple[int, float | None, float | None], Id] = {}
        self.created: Counter[str] = Counter()  # entities created this run, per set
        self.moved = 0  # Locations updated
        self.duplicates_deleted = 0

    def __repr__(self) -> str:
        return f"StaTarget({self.name!r}, {self.client.url!r})"

    # ------------------------------------------------------------------ entities
    def _find_or_create(self, entity, **params: str) -> Id:
        found = self.client.find(entity.SET, entity.name, **params)
        if found:
            if len(found) > 1:
                log.warning("%s: %d %s named %r; using the first", self.name, len(found),
                            entity.SET, entity.name)  # fmt: skip
            return found[0]["@iot.id"]
        self.created[entity.SET] += 1
        return self.client.create(entity)

    def _location(self, device_id: int, lon: float | None, lat: float | None, as_of: str):
        return Location(
            name=f"{device_id}",
            description=f"Location of station {device_id}",
            lon=lon,
            lat=lat,
            properties={"as_of": as_of},
        )

    def thing(self, row: PublishRow) -> _Thing:
        if row.device_id in self._things:
            return self._things[row.device_id]
        name = str(row.device_id)
        found = self.client.find("Things", name, **{"$expand": "Locations"})
        if found:
            locs = found[0].get("Locations") or []
            loc = locs[0] if locs else None
            lon, lat = _position(loc)
            as_of = ((loc or {}).get("properties") or {}).get("as_of")
            t = _Thing(found[0]["@iot.id"], loc and loc["@iot.id"], lon, lat, as_of)
        else:
            location_id = None
            if row.lon is not None and row.lat is not None:
                loc = self._location(row.device_id, row.lon, row.lat, iso(row.time))
                location_id = self.client.create(loc)
                self.created["Locations"] += 1
            props = {"id": row.device_id, "network": self.net.id, "device_type": row.device_type}
            if row.device_id in self.device_names:
                props["name"] = self.device_names[row.device_id]
            thing = Thing(
                name=name,
                description=f"{self.net.name or self.net.id} station {row.device_id}",
                properties=props,
                location_ids=(location_id,) if location_id is not None else (),
            )
            t = _Thing(self.client.create(thing), location_id, row.lon, row.lat, iso(row.time))
            self.created["Things"] += 1
        self._things[row.device_id] = t
        return t

    def follow(self, rows: Sequence[PublishRow]) -> None:
        """Move each station's Location to its newest position in ``rows``, unless the
        Location was set from a newer hour (a replay of old hours never moves it back)."""
        newest: dict[int, PublishRow] = {}
        for r in rows:
            placed = r.lon is not None and r.lat is not None
            if placed and (r.device_id not in newest or r.time > newest[r.device_id].time):
                newest[r.device_id] = r
        for device_id, r in newest.items():
            t = self.thing(r)
            as_of = iso(r.time)
            if not _moved(t, r.lon, r.lat) or (t.as_of is not None and t.as_of > as_of):
                continue
            loc = self._location(device_id, r.lon, r.lat, as_of)
            if t.location_id is None:  # a station first seen without a position
                t.location_id = self.client.create(replace(loc, thing_ids=(t.id,)))
                self.created["Locations"] += 1
            else:
                body = loc.to_json()
                patch = {"location": body["location"], "properties": body["properties"]}
                self.client.patch("Locations", t.location_id, patch)
            log.info("%s: station %s moved to %s,%s (as of %s)", self.name, device_id, r.lon,
                     r.lat, as_of)  # fmt: skip
            t.lon, t.lat, t.as_of = r.lon, r.lat, as_of
            self.moved += 1

    def sensor(self, device_type: str) -> Id:
        if device_type not in self._sensors:
            name, description, url = SENSORS.get(
                device_type, (device_type, f"{device_type} sensor station", "")
            )
            sensor = Sensor(name, description, url, properties={"device_type": device_type})
            self._sensors[device_type] = self._find_or_create(sensor)
        return self._sensors[device_type]

    def observed_property(self, row: PublishRow) -> Id:
        if row.name not in self._properties:
            prop = ObservedProperty(
                name=row.name,
                definition=f"urn:stationflow:smartemission:indicator:{row.name}",
                description=f"{row.label} ({row.unit})",
                properties={"label": row.label},
            )
            self._properties[row.name] = self._find_or_create(prop)
        return self._properties[row.name]

    def datastream(self, row: PublishRow) -> Id:
        key = (row.device_id, row.name)
        if key not in self._streams:
            thing = self.thing(row)
            stream = Datastream(
                name=f"{row.device_id}-{row.name}",
                description=f"Hourly {row.label} of station {row.device_id}",
                unit=Unit(row.unit, row.unit, f"urn:stationflow:unit:{row.unit}"),
                thing_id=thing.id,
                sensor_id=self.sensor(row.device_type),
                observed_property_id=self.observed_property(row),
                properties={"device_id": row.device_id, "indicator": row.name},
            )
            # names are unique per Thing, not per server
            self._streams[key] = self._find_or_create(
                stream,
                **{"$filter": f"name eq {string_literal(stream.name)}"
                              f" and Thing/id eq {id_literal(thing.id)}"},
            )  # fmt: skip
        return self._streams[key]

    def feature(self, row: PublishRow) -> Id:
        lon = None if row.lon is None else round(row.lon, 6)
        lat = None if row.lat is None else round(row.lat, 6)
        key = (row.device_id, lon, lat)
        if key not in self._features:
            where = f"{lon:.6f},{lat:.6f}" if lon is not None and lat is not None else "unknown"
            foi = FeatureOfInterest(
                name=f"station-{row.device_id} at {where}",
                description=f"Where station {row.device_id} measured",
                lon=lon,
                lat=lat,
                properties={"device_id": row.device_id},
            )
            self._features[key] = self._find_or_create(foi)
        return self._features[key]

    def observation(self, row: PublishRow) -> Observation:
        params: dict[str, Any] = {
            "unique_id": row.unique_id,
            "hour_start": iso(row.time - timedelta(hours=1)),
            "value_min": row.value_min,
            "value_max": row.value_max,
            "sample_count": row.sample_count,
            "revision": row.revision,
        }
        if row.model_id is not None:
            params["model_id"] = row.model_id
        return Observation(
            datastream_id=self.datastream(row),
            feature_id=self.feature(row),
            phenomenon_time=row.time,
            result_time=row.time,
            result=float(row.value),
            parameters=params,
        )

    # ------------------------------------------------------------------ observations
    def held(self, rows: Sequence[PublishRow]) -> dict[Key, list[dict]]:
        """What the server holds at each row's Datastream and time (one query per Datastream
        and batch)."""
        by_stream: dict[Id, list[PublishRow]] = defaultdict(list)
        for r in rows:
            by_stream[self.datastream(r)].append(r)
        out: dict[Key, list[dict]] = {}
        for ds, rs in by_stream.items():
            at = {r.time: r.key for r in rs}
            lo, hi = min(at), max(at)
            query = {
                "$filter": f"Datastream/id eq {id_literal(ds)}"
                f" and resultTime ge {iso(lo)} and resultTime le {iso(hi)}",
                "$select": "id,resultTime,result,parameters",
                "$orderby": "resultTime asc,id asc",
            }
            for obs in self.client.collection("Observations", query):
                t = datetime.fromisoformat(obs["resultTime"])
                if t in at:
                    out.setdefault(at[t], []).append(obs)
        return out

    def _same(self, held: dict, obs: Observation) -> bool:
        """Result and parameters (which carry the refined revision: a station that moved
        gives its values a new one, so a changed FeatureOfInterest shows there too)."""
        return (held.get("result"), held.get("parameters") or {}) == (obs.result, obs.parameters)

    def publish(self, rows: Sequence[PublishRow], *, verify: bool = False) -> list[Outcome]:
        """Send the rows; an Outcome per row, in order."""
        given = rows
        outcome: dict[Key, Outcome] = {}
        for r in rows:
            if not math.isfinite(r.value):  # JSON has no NaN: never sent
                outcome[r.key] = Outcome(r.key, r.revision, error=f"value {r.value} is not finite")
        rows = [r for r in rows if r.key not in outcome]
        self.follow(rows)
        obs = {r.key: self.observation(r) for r in rows}
        ask = [r for r in rows if r.state is not None and (r.remote_id is None or verify)]
        held = self.held(ask) if ask else {}
        create: list[PublishRow] = []
        patch: list[tuple[PublishRow, Id]] = []
        for r in rows:
            if r.state is None:
                create.append(r)
            elif r.remote_id is not None and not verify:
                patch.append((r, r.remote_id))
            elif r.key not in held:
                create.append(r)
            else:
                copies = held[r.key]
                keep = next((h for h in copies if h["@iot.id"] == r.remote_id), copies[0])
                for extra in copies:
                    if extra is not keep:
                        self.client.delete("Observations", extra["@iot.id"])
                        self.duplicates_deleted += 1
                if self._same(keep, obs[r.key]):
                    outcome[r.key] = Outcome(r.key, r.revision, keep["@iot.id"])
                else:
                    patch.append((r, keep["@iot.id"]))
        for r, remote_id in patch:
            o = obs[r.key]
            try:
                body = {"result": o.result, "parameters": dict(o.parameters),
                        "FeatureOfInterest": {"@iot.id": o.feature_id}}  # fmt: skip
                self.client.patch("Observations", remote_id, body)
                outcome[r.key] = Outcome(r.key, r.revision, remote_id)
            except StaRejected as exc:
                if exc.status != 404:
                    outcome[r.key] = Outcome(r.key, r.revision, error=str(exc))
                    continue
                create.append(r)  # deleted on the server meanwhile
        ids = self.client.create_observations([obs[r.key] for r in create])
        for r, remote_id in zip(create, ids, strict=True):
            outcome[r.key] = Outcome(
                r.key,
                r.revision,
                remote_id,
                None if remote_id is not None else "the server refused the Observation",
            )
        return [outcome[r.key] for r in given]

    def delete(self, remote_ids: Sequence[Any]) -> int:
        """Delete Observations of values that no longer exist; how many were there."""
        return sum(self.client.delete("Observations", rid) for rid in remote_ids)
