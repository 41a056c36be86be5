"""Device health: a TCP reachability check per device, and a hard reset through the relay.

Every logger sits behind the station's 4G router on a VPN; an internet WiFi relay can
power-cycle each one. One ``check_device`` call is one cycle for one device:

1. TCP-connect to the device's ``health_connection_id``. Success resets the failure
   counter (status ``up``; audited only when the state changes). Failure increments
   ``consecutive_failures`` (status ``down``, audited WARNING with the reason).
2. At ``relay.after_failures`` consecutive failures, a device with a relay is
   power-cycled: the intent is audited and committed, the relay command sent, the reset
   recorded (status ``resetting``, ``last_reset_at``, ``resets + 1``) and COMMITTED before
   waiting ``relay.wait_seconds`` for the device to boot; then it is checked again:
   reachable -> ``up`` ("back after reset"), still down -> ``dead``, audited ERROR and
   ``DeviceDown`` raised (the task fails, its failure callback alerts).
3. A device that cannot be reset now (no relay, or inside the reset backoff below) and
   has been down for ``after_failures`` checks (3 without a relay) becomes ``dead``:
   ``DeviceDown`` is raised ONCE, when it becomes dead; later runs audit a WARNING only,
   until it comes back or the backoff lets the relay try again.

Reset backoff (a dead logger is not power-cycled every run forever): after a reset
attempt, the next one waits ``max(10 x wait_seconds, 30 min)``, and at least as long as
the device had already been down at the last attempt, so resets within one outage come
at doubling intervals (30 min, 1 h, 2 h, ...), never more than once a day
(``reset_backoff``). A device never seen up doubles with each accepted reset instead.

A relay that does not take the command (HTTP error, timeout, connection refused) is
audited ERROR and raises ``RelayError``; the attempt counts for the backoff (a timed-out
command may have cut the power anyway), so the next run inside the backoff only warns and
the relay is tried again once it has passed.

``DeviceDown`` and ``RelayError`` are permanent errors: Airflow does not retry the task
(a retry would re-check inside the backoff, pass, and swallow the alert); the next
scheduled run is the retry. Every step is one transaction, committed before the next
(``check_device`` commits ``conn``: pass a connection without pending work). A session
advisory lock per device keeps two overlapping runs from resetting it twice.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import requests

from stationflow.config import Logger, Relay, Station
from stationflow.connections import MissingConnection, endpoint, get_connection
from stationflow.errors import PermanentError
from stationflow.state.audit import RunIds, audit

CHECK_TIMEOUT_S = 5.0  # TCP connect timeout of one reachability check
RELAY_TIMEOUT_S = 10.0  # connect and read timeout of one relay command
DEFAULT_AFTER_FAILURES = 3  # a device without relay is dead after this many failed checks
RESET_BACKOFF_FACTOR = 10  # x relay.wait_seconds between two resets of a device ...
RESET_BACKOFF_MIN = timedelta(minutes=30)  # ... but never less than this
RESET_BACKOFF_MAX = timedelta(hours=24)  # doubling stops at once a day
STATUSES = ("unknown", "up", "down", "resetting", "dead")


class RelayError(PermanentError):
    """The relay did not take the command; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.status = status
        self.url = url


class DeviceDown(PermanentError):
    """A device stays unreachable (after a reset, or with none possible): a person acts."""

    def __init__(self, message: str, health: dict[str, Any] | None = None):
        super().__init__(message)
        self.health = health or {}


@dataclass(frozen=True)
class DeviceHealth:
    """One row of ``stationflow.device_health``."""

    station: str
    device: str
    status: str = "unknown"
    consecutive_failures: int = 0
    last_ok_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_reset_at: datetime | None = None  # last reset ATTEMPT (the relay answering or not)
    resets: int = 0  # reset commands the relay accepted
    message: str | None = None


# ------------------------------------------------------------------- reachability


def reachable(host: str, port: int, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """Whether ``host:port`` accepts a TCP connection within ``timeout_s``; and why not."""
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True, f"{where} accepts connections"
    except TimeoutError:
        return False, f"{where}: no answer within {timeout_s:g} s"
    except ConnectionRefusedError:
        return False, f"{where}: connection refused"
    except socket.gaierror as exc:
        return False, f"{host}: cannot resolve the name ({exc.strerror})"
    except OSError as exc:
        return False, f"{where}: {exc.strerror or type(exc).__name__}"


# -------------------------------------------------------------------------- relay


def relay_url(relay: Relay, station_id: str, device_id: str, connection: Any = None) -> str:
    """The relay command's URL: scheme, host and port from the Connection, path from
    the template. Never carries credentials (they go in an Authorization header).

    The scheme is the Connection's ``schema`` or its extra ``scheme`` (default http); a
    host written as a URL (``https://relay``) gives its scheme when neither is set.
    """
    c = connection if connection is not None else get_connection(relay.connection_id)
    host = (c.host or "").strip()
    scheme = c.schema or (c.extra_dejson or {}).get("scheme") or ""
    if "://" in host:
        host_scheme, host = host.split("://", 1)
        scheme = scheme or host_scheme
    host = host.rsplit("@", 1)[-1].strip("/")  # never user:password@ from a pasted URL
    scheme = (scheme or "http").lower()
    if scheme not in ("http", "https"):
        raise RelayError(
            f"relay Connection {relay.connection_id!r}: scheme {scheme!r} is not http(s)"
        )
    if not host:
        raise MissingConnection(f"Airflow Connection {relay.connection_id!r} needs a host")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            host = f"[{host.strip('[]')}]"
    try:
        path = relay.url.format(
            channel=relay.channel,
            device=quote(device_id, safe=""),
            station=quote(station_id, safe=""),
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise RelayError(
            f"relay url template {relay.url!r}: only {{channel}}, {{device}} and {{station}}"
            f" may be used ({type(exc).__name__}: {exc})"
        ) from exc
    port = f":{int(c.port)}" if c.port else ""
    return f"{scheme}://{host}{port}{path}"


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests error (``Connection refused``), not its repr."""
    todo, seen = [exc], set()
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno and cur.strerror:
            return cur.strerror
        nxt = [cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args]
        todo += [e for e in nxt if isinstance(e, BaseException)]
    return type(exc).__name__


def reset_device(
    relay: Relay, station_id: str, device_id: str, *, timeout_s: float = RELAY_TIMEOUT_S
) -> str:
    """Send the relay's power-cycle command for one device; a short description back.

    Basic auth from the Connection's login/password when set; redirects are not
    followed (a 3xx is an error, credentials never go elsewhere). Raises ``RelayError``
    on a non-2xx answer, a timeout or a refused connection; its message has no password.
    """
    c = get_connection(relay.connection_id)
    url = relay_url(relay, station_id, device_id, c)
    what = f"relay {relay.method} {url}"
    password = c.password or ""

    def scrub(text: str) -> str:
        return text.replace(password, "***") if len(password) >= 3 else text

    auth = (c.login or "", password) if (c.login or password) else None
    try:
        resp = requests.request(
            relay.method,
            url,
            auth=auth,
            timeout=(timeout_s, timeout_s),
            allow_redirects=False,
            headers={"Accept": "application/json, text/plain;q=0.9, */*;q=0.1"},
        )
    except requests.Timeout:
        raise RelayError(scrub(f"{what}: no answer within {timeout_s:g} s"), url=url) from None
    except requests.RequestException as exc:
        raise RelayError(scrub(f"{what}: {_root_cause(exc)}"), url=url) from None
    with resp:
        status, reason = resp.status_code, scrub(resp.reason or "")
    if not 200 <= status < 300:
        hint = ""
        if status in (401, 403):
            hint = f" (check the login/password of Connection {relay.connection_id!r})"
        raise RelayError(
            scrub(f"{what} answered HTTP {status} {reason}".rstrip() + hint),
            status=status,
            url=url,
        )
    return scrub(f"{what} answered HTTP {status} {reason}".rstrip())


# ------------------------------------------------------------------------ backoff


def reset_backoff(health: DeviceHealth, relay: Relay) -> timedelta:
    """How long after ``health.last_reset_at`` the next reset may come (see the module)."""
    base = max(timedelta(seconds=RESET_BACKOFF_FACTOR * relay.wait_seconds), RESET_BACKOFF_MIN)
    cap = max(RESET_BACKOFF_MAX, base)
    last, ok = health.last_reset_at, health.last_ok_at
    if last is None or (ok is not None and ok >= last):
        gap = base  # no reset yet, or the last one belongs to an earlier outage
    elif ok is not None:
        gap = max(base, last - ok)  # wait as long as it had been down at the last reset
    else:  # never seen up: every reset is in this outage
        gap = base * 2 ** min(max(health.resets - 1, 0), 16)
    return min(gap, cap)


def next_reset_at(health: DeviceHealth, relay: Relay) -> datetime | None:
    """The earliest time the relay may reset this device again; None: at once."""
    if health.last_reset_at is None:
        return None
    return health.last_reset_at + reset_backoff(health, relay)


# ---------------------------------------------------------------------- the table


def load_health(conn: psycopg.Connection, station: str, device: str) -> DeviceHealth:
    row = conn.execute(
        "SELECT status, consecutive_failures, last_ok_at, last_failure_at, last_reset_at,"
        " resets, message FROM stationflow.device_health WHERE station = %s AND device = %s",
        (station, device),
    ).fetchone()
    if row is None:
        return DeviceHealth(station, device)
    return DeviceHealth(station, device, *row)


def _save(conn: psycopg.Connection, h: DeviceHealth) -> None:
    conn.execute(
        "INSERT INTO stationflow.device_health (station, device, status, consecutive_failures,"
        " last_ok_at, last_failure_at, last_reset_at, resets, message)"
        " VALUES (%(station)s, %(device)s, %(status)s, %(consecutive_failures)s,"
        " %(last_ok_at)s, %(last_failure_at)s, %(last_reset_at)s, %(resets)s, %(message)s)"
        " ON CONFLICT (station, device) DO UPDATE SET status = EXCLUDED.status,"
        " consecutive_failures = EXCLUDED.consecutive_failures,"
        " last_ok_at = EXCLUDED.last_ok_at, last_failure_at = EXCLUDED.last_failure_at,"
        " last_reset_at = EXCLUDED.last_reset_at, resets = EXCLUDED.resets,"
        " message = EXCLUDED.message",
        asdict(h),
    )


@contextlib.contextmanager
def _step(conn: psycopg.Connection) -> Iterator[None]:
    """One step, one transaction: committed at the end, rolled back on an error."""
    if conn.autocommit:
        with conn.transaction():
            yield
        return
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _lock_key(station: str, device: str) -> str:
    return f"stationflow.device_health:{station}/{device}"


def _as_dict(h: DeviceHealth, **extra: Any) -> dict[str, Any]:
    out = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(h).items()}
    return {**out, **extra}


# ------------------------------------------------------------------- the cycle


def check_device(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    *,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
    ids: RunIds | None = None,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> dict[str, Any]:
    """Check one device, reset it through its relay when due; the device_health row back.

    ``now`` (timezone-aware) is the time of the check; the re-check after a reset is
    stamped ``now`` plus the real time elapsed. The result (JSON-able, for XCom) is the
    row plus ``reachable``, ``reset`` (a relay command was accepted in this call),
    ``skipped`` (another run holds the device) and ``next_reset_at``.
    Raises ``DeviceDown`` or ``RelayError`` as the module describes; commits ``conn``.
    """
    if logger.health_connection_id is None:
        raise ValueError(f"logger {logger.id!r} has no health_connection_id to check")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    host, port = endpoint(logger.health_connection_id)
    key = _lock_key(station.id, logger.id)
    with _step(conn):
        (locked,) = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        ).fetchone()
    if not locked:
        with _step(conn):
            h = load_health(conn, station.id, logger.id)
        return _as_dict(h, reachable=None, reset=False, skipped=True, next_reset_at=None)
    try:
        return _cycle(conn, station, logger, host, port, now, sleep, ids, timeout_s)
    finally:
        with contextlib.suppress(psycopg.Error), _step(conn):
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def _cycle(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    host: str,
    port: int,
    now: datetime,
    sleep: Callable[[float], None],
    ids: RunIds | None,
    timeout_s: float,
) -> dict[str, Any]:
    relay = logger.relay
    after = relay.after_failures if relay else DEFAULT_AFTER_FAILURES
    dev = logger.id
    details: dict[str, Any] = {"device": dev, "host": host, "port": port}
    if relay:
        details["relay"] = {"connection_id": relay.connection_id, "channel": relay.channel}

    def note(step: str, message: str, level: str, h: DeviceHealth, **extra: Any) -> None:
        info = {
            **details,
            "status": h.status,
            "consecutive_failures": h.consecutive_failures,
            **extra,
        }
        audit(conn, step, message, level=level, station=station.id, details=info, ids=ids)

    t0 = time.monotonic()
    ok, reason = reachable(host, port, timeout_s)

    with _step(conn):
        before = load_health(conn, station.id, dev)
        if ok:
            h = replace(before, status="up", consecutive_failures=0, last_ok_at=now, message=reason)
            _save(conn, h)
            if before.status != "up":
                n = before.consecutive_failures
                if before.status == "unknown" or not n:
                    msg = f"{dev}: up ({reason})"
                else:
                    msg = f"{dev}: back up after {n} failed check{'s' if n != 1 else ''}"
                note("health.check", msg, "INFO", h, previous_status=before.status)
            return _as_dict(h, reachable=True, reset=False, skipped=False, next_reset_at=None)

        failures = before.consecutive_failures + 1
        h = replace(
            before,
            status="down",
            consecutive_failures=failures,
            last_failure_at=now,
            message=reason,
        )
        due = next_reset_at(before, relay) if relay else None
        reset_now = relay is not None and failures >= after and (due is None or now >= due)
        if failures < after or reset_now:
            _save(conn, h)
            note("health.check", f"{dev}: unreachable ({failures}/{after}): {reason}", "WARNING", h)
        if failures < after:
            return _as_dict(h, reachable=False, reset=False, skipped=False, next_reset_at=None)
        if not reset_now:
            h = replace(h, status="dead")
            _save(conn, h)
            result, alert = _give_up(h, before, relay, due, after, note)
        else:
            note(
                "health.reset",
                f"{dev}: down for {failures} checks: resetting through relay"
                f" {relay.connection_id!r} channel {relay.channel}",
                "WARNING",
                h,
            )
    if not reset_now:  # committed above: the alert is raised after the step
        if alert is not None:
            raise alert
        return result

    # The relay command: the attempt is recorded whatever the relay answers.
    try:
        answer = reset_device(relay, station.id, dev)
    except (RelayError, MissingConnection) as exc:
        dead = replace(h, status="dead", last_reset_at=now, message=f"relay failed: {exc}")
        with _step(conn):
            _save(conn, dead)
            nxt = next_reset_at(dead, relay)
            note(
                "health.reset",
                f"{dev}: reset failed, device still down: {exc}; next attempt not before"
                f" {nxt:%Y-%m-%d %H:%M:%S %Z}",
                "ERROR",
                dead,
                http_status=getattr(exc, "status", None),
                next_reset_at=nxt.isoformat(),
            )
        raise
    h = replace(h, status="resetting", last_reset_at=now, resets=h.resets + 1, message=answer)
    with _step(conn):
        _save(conn, h)
        note(
            "health.reset",
            f"{dev}: power-cycled ({answer}); waiting {relay.wait_seconds:g} s for it to boot",
            "INFO",
            h,
            resets=h.resets,
        )

    sleep(relay.wait_seconds)
    ok, reason = reachable(host, port, timeout_s)
    later = now + timedelta(seconds=time.monotonic() - t0)
    with _step(conn):
        if ok:
            h = replace(h, status="up", consecutive_failures=0, last_ok_at=later, message=reason)
            _save(conn, h)
            note("health.recheck", f"{dev}: back after reset ({reason})", "INFO", h)
            return _as_dict(h, reachable=True, reset=True, skipped=False, next_reset_at=None)
        h = replace(
            h,
            status="dead",
            consecutive_failures=h.consecutive_failures + 1,
            last_failure_at=later,
            message=f"still down after reset: {reason}",
        )
        _save(conn, h)
        nxt = next_reset_at(h, relay)
        msg = (
            f"{dev}: still down {relay.wait_seconds:g} s after the reset: {reason};"
            f" next reset not before {nxt:%Y-%m-%d %H:%M:%S %Z}"
        )
        note("health.recheck", msg, "ERROR", h, next_reset_at=nxt.isoformat())
    raise DeviceDown(
        f"{station.id} {msg}",
        _as_dict(h, reachable=False, reset=True, skipped=False, next_reset_at=nxt.isoformat()),
    )


def _give_up(
    h: DeviceHealth,
    before: DeviceHealth,
    relay: Relay | None,
    due: datetime | None,
    after: int,
    note: Callable[..., None],
) -> tuple[dict[str, Any], DeviceDown | None]:
    """Down for ``after`` checks and no reset possible now: dead; alert once (the error)."""
    n, dev = h.consecutive_failures, h.device
    if relay is None:
        why = "no relay to reset it"
    else:
        why = f"next reset not before {due:%Y-%m-%d %H:%M:%S %Z}"
    result = _as_dict(
        h,
        reachable=False,
        reset=False,
        skipped=False,
        next_reset_at=due.isoformat() if due else None,
    )
    if before.status == "dead":
        note("health.check", f"{dev}: still down ({n} checks): {h.message}; {why}", "WARNING", h)
        return result, None
    msg = f"{dev}: down for {n} checks (dead after {after}): {h.message}; {why}"
    note("health.check", msg, "ERROR", h, previous_status=before.status)
    return result, DeviceDown(f"{h.station} {msg}", result)
