"""Upload ETC files to the ICOS Carbon Portal (REFERENCE section 1), with every attempt in
the ledger.

The protocol: ``PUT <base>/upload/etc/<md5>/<name>``, the raw bytes as the body (streamed
from the file), HTTP Basic auth sent pre-emptively (user = station id), TLS verified. The
portal answers ``200 OK`` with an ``X-ICOSCP-Receipt`` header, 400/403 with its reason when
it refuses the file (retrying cannot help), or 500 ``Expected MD5 checksum X, got Y`` when
the bytes it received do not match the MD5 in the URL.

What the client does with each answer (``upload_file``):

- 200 with a receipt: ``accepted``;
- 3xx, 400, 403, 404 and any other 4xx but 408/429: ``rejected`` at once, no retry;
- the MD5-mismatch 500: the file is read again and its MD5 recomputed (a file that changed on
  disk is said to have changed), then sent ONCE more; a second mismatch is an ``error``;
- other 5xx, 408, 429, connection errors and timeouts: retried inside the call with
  exponential backoff (``backoff * 2**k`` seconds), up to ``retries`` times, then ``error``.

With the ledger (``upload_output``): the file is the ``output_file`` row's bytes and only
those - a file whose MD5/SHA-256 on disk differ from the row is never sent. Every attempt is
an ``upload`` row (attempt numbers continue from the last one for the row and target) plus an
audit row (step ``publish.upload``), committed one by one so a crash keeps the history.

Skips, decided here:

- bytes already accepted by the target (``output_file`` rows are per name and SHA-256): not
  sent, reported ``skipped`` with the first receipt, an INFO audit row, NO ``upload`` row -
  an upload row is an attempt, and a skip repeated by every scheduled run is not one;
- a superseded version (a newer version of the name was already accepted by the target, or
  the file on disk now holds a newer version): not sent - sending older bytes would make them
  the portal's newest version - and recorded once as a ``skipped`` upload row.

Failures for Airflow: ``UploadRejected`` (a ``PermanentError``: the task fails at once) for a
refusal, ``FileNotAsRecorded`` (also permanent) when the file is not the ledger's,
``UploadFailed`` (retryable: Airflow's task retries apply) when the client's own retries are
exhausted. ``raise_on_failure=False`` returns the result instead.

The password goes into the Authorization header only: never into a URL, message, ledger row,
audit row, log line or exception (messages are scrubbed of it all the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import requests

from stationflow.errors import PermanentError
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.publish")

STEP = "publish.upload"
RECEIPT_HEADER = "X-ICOSCP-Receipt"
MD5_MISMATCH = "Expected MD5 checksum"
RETRYABLE_4XX = (408, 429)
MAX_DELAY = 300.0
_MESSAGE_MAX = 1000
NOT_IN_LEDGER = "not in the ledger: uploaded without a ledger row"


class UploadRejected(PermanentError):
    """The portal refused the file (4xx): it will refuse it again; a person has to act."""

    def __init__(self, message: str, result: UploadResult | None = None):
        super().__init__(message)
        self.result = result


class FileNotAsRecorded(PermanentError):
    """The file on disk is not the bytes the ledger describes (or is gone): never sent."""

    def __init__(self, message: str, result: UploadResult | None = None):
        super().__init__(message)
        self.result = result


class UploadFailed(Exception):
    """No answer, or only server errors, after the client's retries: retry the task later."""

    def __init__(self, message: str, result: UploadResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class UploadResult:
    name: str
    md5: str
    sha256: str
    status: str  # accepted | rejected | error | skipped
    http_status: int | None = None
    receipt: str | None = None
    message: str | None = None
    attempts: int = 0  # requests sent by this call
    output_file_id: int | None = None  # None: not in the ledger (or no ledger)
    target: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Attempt:
    """One request (or a refusal to send one) and what came of it."""

    number: int  # 1-based, within one upload_file call
    name: str
    md5: str
    sha256: str
    outcome: str  # accepted | rejected | error
    http_status: int | None
    receipt: str | None
    message: str | None
    retry_in: float | None  # seconds until the next attempt; None: this was the last


@dataclass(frozen=True)
class Endpoint:
    """Where to upload and as whom; the password never shows in a repr."""

    base_url: str
    login: str
    password: str = field(repr=False)


# ------------------------------------------------------------------------ helpers


def file_digests(path: Path | str) -> tuple[str, str, int]:
    """(md5, sha256, size) of a file, read once in 1 MiB blocks."""
    md5 = hashlib.md5(usedforsecurity=False)  # the ETC protocol's checksum
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return md5.hexdigest(), sha.hexdigest(), size


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(url: str, *, allow_http: bool = False) -> str:
    """``scheme://host[:port][/path]`` without credentials, query or trailing slash.

    Basic auth over plain http would show the station's password to the network: http is
    accepted for loopback hosts only, unless ``allow_http``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upload URL must be http(s)://host[:port], got {parts.scheme!r}")
    if scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise ValueError(
            f"plain http to {parts.hostname} would send the station's password in clear:"
            " use https (or allow http explicitly)"
        )
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never user:password@
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def _scrub(text: str | None, password: str | None) -> str | None:
    if text is None:
        return None
    if password and len(password) >= 4:  # a shorter one would mangle every message
        text = text.replace(password, "***")
    text = text.strip()
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 3] + "..."


def _verify(session: requests.Session) -> bool | str:
    """True (or the session's CA bundle): certificate checks are never turned off."""
    return session.verify if isinstance(session.verify, str) else True


def _delay(k: int, backoff: float) -> float:
    return min(backoff * (2**k), MAX_DELAY)


# ------------------------------------------------------------------------ the client


def upload_file(
    session: requests.Session | None,
    base_url: str,
    login: str,
    password: str,
    path: Path | str,
    *,
    name: str | None = None,
    timeout: float | tuple[float, float] = (10, 300),
    retries: int = 4,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    expected_sha256: str | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    before_attempt: Callable[[int], None] | None = None,
    allow_http: bool = False,
) -> UploadResult:
    """PUT one file to ``<base_url>/upload/etc/<md5>/<name>`` (``name``: the file's own).

    ``expected_sha256``: the bytes the caller vouches for; if the file is not (or no longer)
    those bytes, nothing (more) is sent and the result is an ``error``. ``before_attempt``
    is called with the attempt's number just before each request goes out, ``on_attempt``
    after every attempt, before any wait (the ledger records both).
    """
    path = Path(path)
    name = name or path.name
    target = normalize_base_url(base_url, allow_http=allow_http)
    result = UploadResult(name=name, md5="", sha256="", status="error", target=target)
    try:
        md5, sha, _ = file_digests(path)
    except OSError as exc:
        result.message = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
        return result
    result.md5, result.sha256 = md5, sha
    if expected_sha256 and sha != expected_sha256:
        result.message = f"not sent: {path} is not the expected bytes (sha256 {sha})"
        return result

    own = session is None
    s = session or requests.Session()
    auth = (login, password)
    transient = 0  # retries used for 5xx / no answer
    reread = False  # the one retry after an MD5 mismatch
    try:
        while True:
            result.attempts += 1
            url = f"{target}/upload/etc/{md5}/{quote(name, safe='')}"
            status: int | None = None
            receipt: str | None = None
            try:
                with path.open("rb") as body:
                    if before_attempt is not None:
                        before_attempt(result.attempts)
                    r = s.put(
                        url,
                        data=body,
                        auth=auth,
                        timeout=timeout,
                        verify=_verify(s),
                        allow_redirects=False,
                        headers={"Content-Type": "application/octet-stream"},
                    )
                status, text = r.status_code, r.text
                receipt = r.headers.get(RECEIPT_HEADER)
            except requests.RequestException as exc:  # (an OSError too: catch it first)
                text = f"no answer from {target}: {type(exc).__name__}: {exc}"
            except OSError as exc:  # the file went away between two attempts
                result.status, result.http_status = "error", None
                result.message = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
                _report(on_attempt, result, None)
                return result
            text = _scrub(text, password) or ""
            result.http_status = status

            if status == 200 and receipt:
                result.status, result.receipt, result.message = "accepted", receipt, None
                _report(on_attempt, result, None)
                log.info("%s accepted by %s (attempt %d)", name, target, result.attempts)
                return result
            if status is not None and 300 <= status < 500 and status not in RETRYABLE_4XX:
                result.status = "rejected"
                result.message = text or f"HTTP {status}"
                if 300 <= status < 400:
                    where = _scrub(r.headers.get("Location"), password)
                    result.message = (
                        f"redirected (HTTP {status}) to {where}: point the endpoint at the"
                        " final URL"
                    )
                _report(on_attempt, result, None)
                log.warning("%s refused by %s: %s", name, target, result.message)
                return result

            result.status = "error"
            if status == 200:
                text = "answered 200 without an X-ICOSCP-Receipt header"
            if status == 500 and text.startswith(MD5_MISMATCH):
                if reread:
                    result.message = f"{text} (again, after re-reading the file): giving up"
                    _report(on_attempt, result, None)
                    return result
                reread = True
                try:
                    new_md5, new_sha, _ = file_digests(path)
                except OSError as exc:
                    result.message = f"{text}; cannot re-read {path}: {exc.strerror}"
                    _report(on_attempt, result, None)
                    return result
                if new_sha == sha:
                    result.message = f"{text}; the file is unchanged: sending it once more"
                elif expected_sha256:
                    result.message = (
                        f"{text}; the file changed on disk (md5 {md5} -> {new_md5}) and is no"
                        " longer the expected bytes: not sent again"
                    )
                    _report(on_attempt, result, None)
                    return result
                else:
                    result.message = (
                        f"{text}; the file changed on disk (md5 {md5} -> {new_md5}):"
                        " sending the new bytes once more"
                    )
                _report(on_attempt, result, 0.0)  # with the md5 that was sent
                log.warning("%s: %s", name, result.message)
                md5, sha = new_md5, new_sha
                result.md5, result.sha256 = md5, sha
                continue

            result.message = text or f"HTTP {status}"
            if transient >= retries:
                result.message = f"{result.message} (after {result.attempts} attempt(s))"
                _report(on_attempt, result, None)
                log.warning("%s not accepted by %s: %s", name, target, result.message)
                return result
            wait = _delay(transient, backoff)
            transient += 1
            _report(on_attempt, result, wait)
            log.info("%s: %s; retrying in %.1f s", name, result.message, wait)
            sleep(wait)
    finally:
        if own:
            s.close()


def _report(
    on_attempt: Callable[[Attempt], None] | None, r: UploadResult, retry_in: float | None
) -> None:
    if on_attempt is None:
        return
    on_attempt(
        Attempt(
            number=r.attempts,
            name=r.name,
            md5=r.md5,
            sha256=r.sha256,
            outcome=r.status,
            http_status=r.http_status,
            receipt=r.receipt,
            message=r.message,
            retry_in=retry_in,
        )
    )


def parse_receipt(text: str) -> dict[str, str]:
    """The portal's receipt report (``Upload time:``, ``File name:``, ``MD5 checksum:``
    lines) as ``{"upload_time", "file_name", "md5"}``."""
    keys = {"upload time": "upload_time", "file name": "file_name", "md5 checksum": "md5"}
    out: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep and label.strip().lower() in keys:
            out[keys[label.strip().lower()]] = value.strip()
    return out


def verify_receipt(
    base_url: str,
    login: str,
    password: str,
    token: str,
    *,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = (10, 60),
    allow_http: bool = False,
) -> dict[str, str]:
    """Ask the portal what a receipt certifies: ``upload_time``, ``file_name``, ``md5``.

    A receipt the portal did not issue (400/404) raises ``UploadRejected``; no answer or a
    server error raises ``UploadFailed``."""
    target = normalize_base_url(base_url, allow_http=allow_http)
    s = session or requests.Session()
    try:
        r = s.get(
            f"{target}/upload/etc/receipt/{quote(token, safe='')}",
            auth=(login, password),
            timeout=timeout,
            verify=_verify(s),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        msg = _scrub(f"receipt check: no answer from {target}: {exc}", password)
        raise UploadFailed(msg or "receipt check: no answer") from None
    finally:
        if session is None:
            s.close()
    text = _scrub(r.text, password) or ""
    if r.status_code != 200:
        kind = UploadFailed if r.status_code >= 500 else UploadRejected
        raise kind(f"receipt check: HTTP {r.status_code}: {text}")
    if "json" in (r.headers.get("Content-Type") or ""):
        data = r.json()
        found = {
            "upload_time": str(data.get("upload_time") or data.get("uploadTime") or ""),
            "file_name": str(data.get("file_name") or data.get("fileName") or ""),
            "md5": str(data.get("md5") or ""),
        }
    else:
        found = parse_receipt(text)
    if set(found) != {"upload_time", "file_name", "md5"} or not all(found.values()):
        raise UploadFailed(f"receipt check: unexpected answer: {text[:200]}")
    return found


# ------------------------------------------------------------------------ the ledger


def endpoint_from_connection(conn_id: str) -> tuple[Endpoint, bool]:
    """(Endpoint, allow_http) from an Airflow Connection: scheme from ``schema`` (or extra
    ``scheme``; default https), ``host``, ``port``, ``login`` = station id, ``password``.
    Extra ``{"allow_http": true}`` permits plain http to a host other than loopback."""
    from stationflow.connections import MissingConnection, get_connection

    c = get_connection(conn_id)
    extra = c.extra_dejson or {}
    host = (c.host or "").strip()
    scheme = c.schema or extra.get("scheme") or ""
    if "://" in host:
        host_scheme, host = host.split("://", 1)
        scheme = scheme or host_scheme
    host = host.rsplit("@", 1)[-1].strip("/")
    scheme = (scheme or "https").lower()
    if not host:
        raise MissingConnection(f"Airflow Connection {conn_id!r} needs a host")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            host = f"[{host.strip('[]')}]"
    if not c.login or not c.password:
        raise MissingConnection(
            f"Airflow Connection {conn_id!r} needs a login (the station id) and a password"
        )
    allow_http = bool(extra.get("allow_http"))
    port = f":{int(c.port)}" if c.port else ""
    try:
        base = normalize_base_url(f"{scheme}://{host}{port}", allow_http=allow_http)
    except ValueError as exc:
        raise PermanentError(f"Airflow Connection {conn_id!r}: {exc}") from exc
    return Endpoint(base, c.login, c.password), allow_http


@dataclass(frozen=True)
class _Row:
    id: int
    station: str
    etc_name: str
    path: str
    md5: str
    sha256: str
    version: int


def _output_row(conn: psycopg.Connection, output_file_id: int) -> _Row:
    row = conn.execute(
        "SELECT id, station, etc_name, path, md5, sha256, version"
        " FROM stationflow.output_file WHERE id = %s",
        (output_file_id,),
    ).fetchone()
    if row is None:
        raise PermanentError(f"output_file {output_file_id} is not in the ledger")
    return _Row(*row)


@contextlib.contextmanager
def _upload_lock(conn: psycopg.Connection, output_file_id: int, target: str) -> Iterator[None]:
    """One upload of a row to a target at a time (a session lock: it survives commits)."""
    key = f"stationflow.upload:{output_file_id}:{target}"
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
    conn.commit()
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
            conn.commit()


def _insert_upload(
    conn: psycopg.Connection,
    output_file_id: int,
    target: str,
    outcome: str,
    http_status: int | None,
    receipt: str | None,
    message: str | None,
) -> int:
    attempt = conn.execute(
        "SELECT COALESCE(max(attempt), 0) + 1 FROM stationflow.upload"
        " WHERE output_file_id = %s AND target = %s",
        (output_file_id, target),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO stationflow.upload"
        " (output_file_id, target, attempt, outcome, http_status, receipt, message)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (output_file_id, target, attempt, outcome, http_status, receipt, message),
    )
    return attempt


_LEVEL = {"accepted": "INFO", "rejected": "ERROR", "error": "WARNING", "skipped": "INFO"}
# What an attempt row says until the portal's answer replaces it; if it stays, the process
# ended (or lost the connection) while waiting: the portal may or may not hold the file.
IN_FLIGHT = "sent; no answer recorded (the process ended while the portal was answering)"


def _audit(
    conn: psycopg.Connection,
    station: str,
    message: str,
    level: str,
    ids: RunIds | None,
    **details: Any,
) -> None:
    audit(conn, STEP, message, level=level, station=station, details=details, ids=ids)


def _skip_reason(conn: psycopg.Connection, row: _Row, target: str) -> tuple[str, Any] | None:
    """('accepted', (attempt, receipt, at)) or ('superseded', text) or None."""
    done = conn.execute(
        "SELECT attempt, receipt, at FROM stationflow.upload"
        " WHERE output_file_id = %s AND target = %s AND outcome = 'accepted'",
        (row.id, target),
    ).fetchone()
    if done:
        return "accepted", done
    newer = conn.execute(
        "SELECT o.version FROM stationflow.output_file o"
        " JOIN stationflow.upload u ON u.output_file_id = o.id"
        " WHERE o.etc_name = %s AND o.version > %s AND u.target = %s"
        " AND u.outcome = 'accepted' ORDER BY o.version DESC LIMIT 1",
        (row.etc_name, row.version, target),
    ).fetchone()
    if newer:
        return "superseded", (
            f"superseded: version {newer[0]} of {row.etc_name} was already accepted by"
            f" {target}; sending version {row.version} would replace it: not sent"
        )
    return None


def _check_file(conn: psycopg.Connection, row: _Row, path: Path) -> tuple[str, str] | None:
    """None if ``path`` holds the row's bytes; else ('superseded' | 'error', message)."""
    try:
        md5, sha, _ = file_digests(path)
    except OSError as exc:
        return "error", f"not sent: {path} cannot be read ({exc.strerror or exc})"
    if md5 == row.md5 and sha == row.sha256:
        return None
    newer = conn.execute(
        "SELECT version FROM stationflow.output_file"
        " WHERE etc_name = %s AND sha256 = %s AND version > %s",
        (row.etc_name, sha, row.version),
    ).fetchone()
    if newer:
        return "superseded", (
            f"superseded: {path} now holds version {newer[0]} of {row.etc_name};"
            f" version {row.version} is not sent"
        )
    return "error", (
        f"not sent: {path} is not the bytes the ledger describes (ledger md5 {row.md5},"
        f" on disk {md5}): never upload bytes the ledger does not describe"
    )


def _record_skip_once(
    conn: psycopg.Connection, row: _Row, target: str, message: str, ids: RunIds | None
) -> None:
    last = conn.execute(
        "SELECT outcome FROM stationflow.upload WHERE output_file_id = %s AND target = %s"
        " ORDER BY attempt DESC LIMIT 1",
        (row.id, target),
    ).fetchone()
    if not last or last[0] != "skipped":
        _insert_upload(conn, row.id, target, "skipped", None, None, message)
    _audit(conn, row.station, f"{row.etc_name}: {message}", "INFO", ids, output_file_id=row.id)
    conn.commit()


def _upload_row(
    conn: psycopg.Connection,
    row: _Row,
    ep: Endpoint,
    *,
    path: Path | None = None,
    ids: RunIds | None = None,
    session: requests.Session | None = None,
    raise_on_failure: bool = True,
    allow_http: bool = False,
    **client: Any,
) -> UploadResult:
    target = normalize_base_url(ep.base_url, allow_http=allow_http)
    path = Path(path or row.path)
    base = {"output_file_id": row.id, "target": target, "name": row.etc_name}
    with _upload_lock(conn, row.id, target):
        skip = _skip_reason(conn, row, target)
        if skip and skip[0] == "accepted":
            attempt, receipt, at = skip[1]
            msg = (
                f"already accepted by {target} (attempt {attempt}, {at:%Y-%m-%d %H:%M:%S %Z}):"
                " not sent again"
            )
            _audit(
                conn, row.station, f"{row.etc_name}: {msg}", "INFO", ids, receipt=receipt, **base
            )
            conn.commit()
            return UploadResult(
                row.etc_name, row.md5, row.sha256, "skipped", None, receipt, msg, 0, row.id, target
            )
        if skip is None:
            skip = _check_file(conn, row, path)
        if skip and skip[0] == "superseded":
            _record_skip_once(conn, row, target, skip[1], ids)
            return UploadResult(
                row.etc_name, row.md5, row.sha256, "skipped", None, None, skip[1], 0, row.id, target
            )
        if skip:  # the file is not the ledger's
            _insert_upload(conn, row.id, target, "error", None, None, skip[1])
            _audit(conn, row.station, f"{row.etc_name}: {skip[1]}", "ERROR", ids, **base)
            conn.commit()
            result = UploadResult(
                row.etc_name, row.md5, row.sha256, "error", None, None, skip[1], 0, row.id, target
            )
            if raise_on_failure:
                raise FileNotAsRecorded(f"{row.etc_name}: {skip[1]}", result)
            return result

        in_flight: list[int] = []  # the attempt row written before its request went out

        def sending(_: int) -> None:
            # committed before the PUT: a process killed while the portal answers leaves
            # this row (an attempt whose answer nobody saw), never an unrecorded upload
            in_flight.append(_insert_upload(conn, row.id, target, "error", None, None, IN_FLIGHT))
            conn.commit()

        def record(a: Attempt) -> None:
            if in_flight:
                number = in_flight.pop()
                conn.execute(
                    "UPDATE stationflow.upload SET outcome = %s, http_status = %s,"
                    " receipt = %s, message = %s, at = now()"
                    " WHERE output_file_id = %s AND target = %s AND attempt = %s",
                    (a.outcome, a.http_status, a.receipt, a.message, row.id, target, number),
                )
            else:  # nothing was sent (the file could not be read)
                number = _insert_upload(
                    conn, row.id, target, a.outcome, a.http_status, a.receipt, a.message
                )
            what = {
                "accepted": f"accepted by {target}, receipt {a.receipt}",
                "rejected": f"refused by {target} (HTTP {a.http_status}): {a.message}",
            }.get(a.outcome, f"attempt failed ({a.http_status or 'no answer'}): {a.message}")
            if a.outcome == "error" and a.retry_in is not None:
                what += f"; retrying in {a.retry_in:g} s"
            _audit(
                conn,
                row.station,
                f"{row.etc_name} v{row.version} attempt {number}: {what}",
                _LEVEL[a.outcome],
                ids,
                attempt=number,
                http_status=a.http_status,
                receipt=a.receipt,
                md5=a.md5,
                sha256=a.sha256,
                **base,
            )
            conn.commit()

        result = upload_file(
            session,
            target,
            ep.login,
            ep.password,
            path,
            name=row.etc_name,
            expected_sha256=row.sha256,
            on_attempt=record,
            before_attempt=sending,
            allow_http=allow_http,
            **client,
        )
        result.output_file_id = row.id
        if result.status == "error" and result.attempts == 0:  # could not even start
            gone = Attempt(0, row.etc_name, row.md5, row.sha256, "error", None, None, None, None)
            record(replace(gone, message=result.message))
        if result.status == "error":
            msg = f"{row.etc_name}: not accepted by {target} after {result.attempts} attempt(s)"
            _audit(conn, row.station, f"{msg}: {result.message}", "ERROR", ids, **base)
            conn.commit()
    if result.status == "accepted" or not raise_on_failure:
        return result
    if result.status == "rejected":
        raise UploadRejected(
            f"{row.etc_name}: refused by {target} (HTTP {result.http_status}): {result.message}",
            result,
        )
    if _check_file(conn, row, path) is not None:  # it changed on disk during the upload
        raise FileNotAsRecorded(f"{row.etc_name}: {result.message}", result)
    raise UploadFailed(
        f"{row.etc_name}: not accepted by {target} after {result.attempts} attempt(s):"
        f" {result.message}",
        result,
    )


def upload_output(
    conn: psycopg.Connection,
    output_file_id: int,
    *,
    conn_id: str,
    ids: RunIds | None = None,
    session: requests.Session | None = None,
    raise_on_failure: bool = True,
    timeout: float | tuple[float, float] = (10, 300),
    retries: int = 4,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> UploadResult:
    """Upload one ``output_file`` row to the endpoint of Airflow Connection ``conn_id``
    (login = the row's station), recording every attempt; commits on ``conn``.

    Raises ``UploadRejected`` / ``FileNotAsRecorded`` (permanent) or ``UploadFailed``
    (retryable) unless ``raise_on_failure=False``; a login that is not the station, or a
    Connection without credentials, is a ``PermanentError`` before anything is sent."""
    row = _output_row(conn, output_file_id)
    ep, allow_http = endpoint_from_connection(conn_id)
    if ep.login != row.station:
        msg = (
            f"Airflow Connection {conn_id!r} logs in as {ep.login!r}, but {row.etc_name} belongs"
            f" to {row.station}: the portal only takes a station's files from its own account"
        )
        _audit(conn, row.station, msg, "ERROR", ids, output_file_id=row.id, conn_id=conn_id)
        conn.commit()
        raise PermanentError(msg)
    return _upload_row(
        conn,
        row,
        ep,
        ids=ids,
        session=session,
        raise_on_failure=raise_on_failure,
        allow_http=allow_http,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        sleep=sleep,
    )


def upload_paths(
    conn: psycopg.Connection | None,
    station: str,
    paths: Iterable[Path | str],
    *,
    base_url: str,
    login: str,
    password: str,
    ids: RunIds | None = None,
    session: requests.Session | None = None,
    allow_http: bool = False,
    timeout: float | tuple[float, float] = (10, 300),
    retries: int = 4,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[UploadResult]:
    """Upload files given by path (the CLI); never raises for one file's failure.

    With a ledger (``conn``), a file whose name and SHA-256 match an ``output_file`` row is
    uploaded as that row (skipped if already accepted, every attempt recorded). Any other
    file is uploaded without an ``upload`` row - there is no output_file to hang it on and
    migrations are not ours to add - so the no-duplicate rule cannot hold for it: its result
    says so (``NOT_IN_LEDGER``) and each attempt still leaves an audit row."""
    if login != station:
        raise PermanentError(f"login {login!r} is not the station {station!r}")
    ep = Endpoint(normalize_base_url(base_url, allow_http=allow_http), login, password)
    client = {"timeout": timeout, "retries": retries, "backoff": backoff, "sleep": sleep}
    own = session is None
    s = session or requests.Session()
    results: list[UploadResult] = []
    try:
        for p in map(Path, paths):
            results.append(_upload_path(conn, station, p, ep, ids, s, allow_http, client))
    finally:
        if own:
            s.close()
    return results


def _upload_path(
    conn: psycopg.Connection | None,
    station: str,
    path: Path,
    ep: Endpoint,
    ids: RunIds | None,
    session: requests.Session,
    allow_http: bool,
    client: dict[str, Any],
) -> UploadResult:
    row = None
    if conn is not None:
        try:
            _, sha, _ = file_digests(path)
        except OSError:
            sha = None
        if sha is not None:
            found = conn.execute(
                "SELECT id FROM stationflow.output_file WHERE etc_name = %s AND sha256 = %s",
                (path.name, sha),
            ).fetchone()
            row = _output_row(conn, found[0]) if found else None
    if row is not None:
        return _upload_row(
            conn,  # type: ignore[arg-type]
            row,
            ep,
            path=path,
            ids=ids,
            session=session,
            raise_on_failure=False,
            allow_http=allow_http,
            **client,
        )

    def audit_only(a: Attempt) -> None:
        if conn is None:
            return
        what = a.receipt if a.outcome == "accepted" else a.message
        _audit(
            conn,
            station,
            f"{a.name} attempt {a.number}: {a.outcome} ({what}); {NOT_IN_LEDGER}",
            _LEVEL[a.outcome],
            ids,
            target=ep.base_url,
            name=a.name,
            md5=a.md5,
            sha256=a.sha256,
            http_status=a.http_status,
            receipt=a.receipt,
            ledger=False,
        )
        conn.commit()

    result = upload_file(
        session,
        ep.base_url,
        ep.login,
        ep.password,
        path,
        on_attempt=audit_only,
        allow_http=allow_http,
        **client,
    )
    if result.attempts:  # something was sent: say that no upload row records it
        note = NOT_IN_LEDGER if conn is not None else "no ledger: uploaded without a ledger row"
        result.message = f"{result.message}; {note}" if result.message else note
    return result
