"""Shared pieces of the record chain's fault tests: what the peers hold (read back from them),
what the ledgers say, and an HTTP proxy that puts faults in front of a real server."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import psycopg
import requests

from stationflow.collect.raw_store import day_hour, hour_start
from stationflow.publish.sta import StaClient, iso
from stationflow.sim.http_server import AnsweringHandler, LoopbackHttpServer
from stationflow.sim.sos import SosSim
from stationflow.sim.whale import WhaleSim

H = timedelta(hours=1)
RawKey = tuple[int, int, int, int, str]  # device, day, hour, samples, sha256
ValueKey = tuple[str, int, str, datetime, float]  # target, device, indicator, end of hour, value


# ------------------------------------------------------------------ harvest


def hour_starts(start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += H
    return out


def whale_expected(sim: WhaleSim, devices: Iterable[int], start: datetime, end: datetime):
    """Every ended hour the Whale API holds in [start, end), as the input the peer gave:
    (device, day, hour, samples, sha256 of the body it serves)."""
    out: set[RawKey] = set()
    for d in devices:
        for t in hour_starts(start, end):
            day, h = day_hour(t)
            body = sim.hour_body(d, day, h)
            out.add((d, day, h, sim.visible_count(d, day, h), hashlib.sha256(body).hexdigest()))
    return out


def raw_delivered(conn: psycopg.Connection, harvester: str) -> list[RawKey]:
    """One entry per row of smartem_raw.timeseries (a second copy would count twice)."""
    rows = conn.execute(
        "SELECT device_id, day, hour, sample_count, content_hash FROM smartem_raw.timeseries"
        " WHERE harvester = %s",
        (harvester,),
    ).fetchall()
    return [(d, day, h, n, sha.strip()) for d, day, h, n, sha in rows]


def raw_ledger_problems(
    conn: psycopg.Connection,
    harvester: str,
    expected: Iterable[tuple[int, int, int, Any, Any]],
    *,
    audited: str | None,
) -> list[str]:
    """What the harvester's sync state gets wrong about what the raw table holds (empty:
    nothing): per device the newest committed hour and the hours stored, every row at
    revision 1 (nothing stored twice), nothing quarantined, and with ``audited`` an ERROR
    audit row whose message contains it (the failure was recorded)."""
    problems = []
    want: dict[int, list[datetime]] = {}
    for d, day, h, *_ in expected:
        want.setdefault(d, []).append(hour_start(day, h))
    progress = {
        d: (last, stored, changed)
        for d, last, stored, changed in conn.execute(
            "SELECT device_id, last_start, hours_stored, hours_changed"
            " FROM smartem_raw.harvester_progress WHERE harvester = %s",
            (harvester,),
        )
    }
    rows = Counter(
        d
        for (d,) in conn.execute(
            "SELECT device_id FROM smartem_raw.timeseries WHERE harvester = %s", (harvester,)
        )
    )
    for d, starts in sorted(want.items()):
        got = progress.get(d)
        if got is None:
            problems.append(f"device {d}: no sync state")
            continue
        last, stored, changed = got
        if last != max(starts):
            problems.append(f"device {d}: sync state at {last}, newest hour {max(starts)}")
        if (stored, changed) != (rows[d], 0):
            problems.append(f"device {d}: sync state counts {stored}+{changed}, {rows[d]} rows")
    if set(progress) != set(want):
        problems.append(f"sync state for devices {sorted(progress)}, expected {sorted(want)}")
    revised = conn.execute(
        "SELECT count(*) FROM smartem_raw.timeseries WHERE revision <> 1"
    ).fetchone()[0]
    if revised:
        problems.append(f"{revised} hours stored more than once (revision > 1)")
    quarantined = conn.execute("SELECT count(*) FROM smartem_raw.quarantine").fetchone()[0]
    if quarantined:
        problems.append(f"{quarantined} answers quarantined: a transport fault is not bad data")
    if audited is not None:
        found = conn.execute(
            "SELECT count(*) FROM stationflow.audit_log WHERE step = 'harvest'"
            " AND level = 'ERROR' AND message LIKE %s",
            (f"%{audited}%",),
        ).fetchone()[0]
        if not found:
            problems.append(f"no ERROR audit row containing {audited!r}")
    return problems


# ------------------------------------------------------------------ publish


def refined_expected(conn: psycopg.Connection, target: str) -> set[ValueKey]:
    rows = conn.execute("SELECT device_id, name, time, value FROM smartem_refined.timeseries")
    return {(target, d, n, t.astimezone(UTC), v) for d, n, t, v in rows}


def ledger_rows(conn: psycopg.Connection, target: str) -> dict[tuple[int, str, datetime], tuple]:
    """(device, indicator, end of hour) -> (state, remote id) of the target's ledger."""
    rows = conn.execute(
        "SELECT device_id, name, day, hour, state, remote_id FROM smartem_publish.observation"
        " WHERE target = %s",
        (target,),
    ).fetchall()
    return {(d, n, hour_start(day, h) + H): (state, rid) for d, n, day, h, state, rid in rows}


def ledger_states(conn: psycopg.Connection, target: str) -> Counter[str]:
    return Counter(
        s
        for (s,) in conn.execute(
            "SELECT state FROM smartem_publish.observation WHERE target = %s", (target,)
        )
    )


def sta_held(client: StaClient, since: datetime, until: datetime) -> list[tuple]:
    """Every Observation of every Datastream with a resultTime in [since, until], read with
    $filter per Datastream and time: (device, indicator, resultTime, result, @iot.id)."""
    out = []
    for thing in client.collection("Things", {"$expand": "Datastreams($select=id,name)"}):
        for ds in thing["Datastreams"]:
            query = {
                "$filter": f"Datastream/id eq '{ds['@iot.id']}' and resultTime ge {iso(since)}"
                f" and resultTime le {iso(until)}",
                "$select": "id,resultTime,result",
                "$orderby": "resultTime asc",
            }
            for o in client.collection("Observations", query):
                t = datetime.fromisoformat(o["resultTime"]).astimezone(UTC)
                name = ds["name"].split("-", 1)[1]
                out.append((int(thing["name"]), name, t, o["result"], o["@iot.id"]))
    return out


def sos_held(sos: SosSim) -> list[tuple]:
    """Every observation the SOS stored: (device, indicator, resultTime, value, identifier)."""
    return [
        (
            int(o.procedure.removeprefix("station-")),
            o.observed_property,
            o.result_time.astimezone(UTC),
            o.value,
            o.identifier,
        )
        for o in sos.observations()
    ]


def unsettled(conn: psycopg.Connection, target: str) -> set[tuple[int, str, datetime]]:
    """(device, indicator, end of hour) of the target's values not 'published'."""
    return {k for k, (state, _) in ledger_rows(conn, target).items() if state != "published"}


def publish_ledger_problems(
    conn: psycopg.Connection,
    target: str,
    held: list[tuple],
    expected: set[ValueKey],
    *,
    resent: set[tuple[int, str, datetime]],
) -> list[str]:
    """What the publish ledger gets wrong about the server: every value 'published' with
    the id of the one copy the server holds, no row for a value it does not hold, and the
    attempts it counts: more than one exactly for the values the fault left unsettled
    (``resent``), one for every other value."""
    problems = []
    attempts = {
        (d, n, hour_start(day, h) + H): a
        for d, n, day, h, a in conn.execute(
            "SELECT device_id, name, day, hour, attempts FROM smartem_publish.observation"
            " WHERE target = %s",
            (target,),
        )
    }
    retried = {k for k, a in attempts.items() if a > 1}
    if retried != resent:
        problems.append(
            f"{len(retried)} values with attempts > 1, {len(resent)} left unsettled by the fault"
        )
    rows = ledger_rows(conn, target)
    ids: dict[tuple, list] = {}
    for d, n, t, _v, rid in held:
        ids.setdefault((d, n, t), []).append(rid)
    want = {(d, n, t) for _, d, n, t, _ in expected}
    if set(rows) != want:
        problems.append(
            f"ledger rows for {len(rows)} values, {len(want)} refined;"
            f" missing {sorted(want - set(rows))[:3]}, extra {sorted(set(rows) - want)[:3]}"
        )
    for key, (state, rid) in sorted(rows.items()):
        if state != "published":
            problems.append(f"{key}: {state}")
        elif ids.get(key) != [rid]:
            problems.append(f"{key}: ledger id {rid!r}, server ids {ids.get(key)}")
        if len(problems) > 5:
            break
    return problems


# ------------------------------------------------------------------ a faulty proxy


Match = Callable[[str, str], bool]


def any_request(method: str, path: str) -> bool:
    return True


@dataclass
class _Fault:
    kind: str  # "fail": answer status, never forwarded; "drop": forwarded, never answered
    match: Match
    skip: int
    times: int
    status: int = 503


class FaultyProxy(LoopbackHttpServer):
    """An HTTP reverse proxy in front of ``upstream`` (``http://host:port``) that forwards
    every request as it came and its answer as it went, except the faulted ones:
    ``fail_next`` answers a status (a proxy whose server is down), ``drop_next`` forwards the
    request (the server handles and stores it) and then closes the connection without an
    answer. ``stop()`` / ``start()`` (same port): connection refused in between."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self._port = 0
        self.log: list[tuple[str, str, str]] = []  # method, path, outcome
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def fail_next(
        self, n: int, status: int = 503, *, match: Match = any_request, skip: int = 0
    ) -> None:
        with self._lock:
            self._faults.append(_Fault("fail", match, skip, n, status))

    def drop_next(self, n: int = 1, *, match: Match = any_request, skip: int = 0) -> None:
        with self._lock:
            self._faults.append(_Fault("drop", match, skip, n))

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if not f.match(method, path):
                    continue
                if f.skip:
                    f.skip -= 1
                    return None
                f.times -= 1
                if f.times == 0:
                    self._faults.remove(f)
                return f
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        local = threading.local()

        class Handler(AnsweringHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else None
                fault = proxy._fault_for(method, self.path)
                if fault is not None and fault.kind == "fail":
                    proxy.log.append((method, self.path, str(fault.status)))
                    text = f"Simulated HTTP {fault.status}".encode()
                    self.reply(method, fault.status, {"Content-Type": "text/plain"}, text)
                    return
                session = getattr(local, "session", None) or requests.Session()
                local.session = session
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "accept", "authorization")
                }
                r = session.request(
                    method,
                    proxy.upstream + self.path,
                    data=body,
                    headers=headers,
                    timeout=60,
                    allow_redirects=False,
                )
                if fault is not None:  # "drop": the server has it, the client never hears
                    proxy.log.append((method, self.path, "dropped"))
                    self.close_connection = True
                    return
                proxy.log.append((method, self.path, str(r.status_code)))
                out = {
                    k: v for k, v in r.headers.items() if k.lower() in ("content-type", "location")
                }
                self.reply(method, r.status_code, out, r.content)

        return Handler
