"""The ICOS Carbon Portal's ETC upload endpoint (REFERENCE section 1), on loopback.

``IcosEtcSim`` is a real HTTP server (a ``ThreadingHTTPServer`` in a thread) that answers
the way the portal's ``EtcUploadRouting`` / ``EtcFilename`` / ``FacadeService`` do:

* ``PUT /upload/etc/<md5>/<filename>``, HTTP Basic auth checked first and never challenged
  (missing or wrong credentials: ``403 Authentication error``, no ``WWW-Authenticate``);
* then, in the portal's order: the md5 segment (32 hex digits, any case), the empty-file
  md5, exactly one file-name segment, the file name (the portal's regex and rules), the
  station of the name against the login, the name's date (not after today + 1 day, not
  before 2010-01-01), and last the MD5 of the body (``500 Expected MD5 checksum X, got Y``);
* ``200 OK`` with ``X-ICOSCP-Receipt: <token>``; ``GET /upload/etc/receipt/<token>`` gives
  the portal's plain-text receipt report (upload time, file name, MD5), ``400 Invalid
  receipt`` for a token it did not issue;
* anything else: ``404``. Bodies are plain text, and every request body is read to its end
  before answering (the portal discards it too), so a client always gets the answer.

What happens to accepted files follows ``FacadeService``: a file replaces the staged file of
the same name; a daily file (BM, ST, SAHEAT) becomes an object at once - new bytes under a
known name are a new version of that object, bytes already known (same SHA-256) are not a
new object. Half-hourly EC and PHEN files wait in staging until all 48 slots of their
(station, type, day, logger, file) are there, then they are packed into one daily zip
(``<station>_<type>_<YYYYMMDD>_L<nn>_F<nn>.zip``, an object; recorded in ``.packed``) and
leave staging. ``force_pack()`` is the portal's forced packing at about 04:00 UTC: every
day before today with fresh half-hours is packed, supplemented by the half-hours of a
previous package of that day (a new version). The test station (``FA-Lso``) is staged,
never published.

Simulator-only additions (not portal behaviour): ``GET /upload/etc/staging/<station>``
(Basic auth as that station) lists its staging folder as JSON - the portal browses the
folder as HTML; two-digit logger and file numbers are enforced (REFERENCE; the portal
reads ``\\d+`` and rewrites them with two digits); fault injection for tests:
``fail_next``, ``corrupt_next_md5``, ``drop_next`` (before, or with ``after_store``
after, the file was stored), ``delay_next`` (the answer held for some seconds) and
``hold_next`` (the answer held until the test releases it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import math
import re
import secrets
import threading
import time as _time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from stationflow.sim.http_server import AnsweringHandler, LoopbackHttpServer

# ------------------------------------------------------------------ the portal's rules

#: EtcFilename.pattern, matched against the whole name (Scala's ``case pattern(...)``)
NAME_PATTERN = re.compile(r"(.{6})_([A-Z]{2,6})_(\d+)_L(\d+)_F(\d+)\.(\w{3})", re.ASCII)
STATION_PATTERN = re.compile(r"[A-Z]{2}-[A-Za-z][A-Za-z0-9]{2}", re.ASCII)  # REFERENCE
DATA_TYPES = ("EC", "BM", "ST", "SAHEAT", "PHEN")
DAILY_PACKAGE_TYPES = ("EC", "PHEN")  # EtcFilename.canBeDailyPackage: carry a time
EXTENSIONS = ("csv", "zip", "bin", "dat", "txt", "jpg")
COMPRESSED_EXTENSIONS = ("zip", "jpg", "jpeg", "gz")  # stored, not deflated, in a package
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
EARLIEST = date(2010, 1, 1)
TEST_STATION = "FA-Lso"
RECEIPT_HEADER = "X-ICOSCP-Receipt"

MSG_AUTH = "Authentication error"
MSG_MD5_SEGMENT = "Expected hex-encoded MD5 sum as URL segment after 'upload/etc'"
MSG_EMPTY = "MD5 checksum corresponds to an empty file"
MSG_NAME_SEGMENT = "Expected single URL segment with file name after the MD5 segment"
MSG_FORMAT = "Wrong file name format, expecting CC-###_##_YYYYMMDD_LLN_FFN.zzz"
MSG_NOT_FOUND = "The requested resource could not be found."

_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}", re.ASCII)
_DIGITS = re.compile(r"\d+", re.ASCII)
_PREFIX = ("upload", "etc")


class PortalNameError(ValueError):
    """A file name the portal refuses (400 with this message)."""


@dataclass(frozen=True)
class PortalName:
    """A file name as the portal's ``EtcFilename`` sees it."""

    station: str
    type: str
    date: date
    time: time | None  # EC, PHEN: the END of the half-hour; others: None
    logger: int
    file: int
    extension: str
    text: str

    @property
    def slot(self) -> tuple[date, int] | None:
        """The half-hour slot (day, 0..47) the file fills; midnight ``0000`` is slot 47 of
        the previous day (FacadeService.slot: the middle of the half-hour, rounded)."""
        if self.time is None:
            return None
        middle = datetime.combine(self.date, self.time) - timedelta(minutes=15)
        second = middle.hour * 3600 + middle.minute * 60 + middle.second
        return middle.date(), math.floor((second - 900) / 1800 + 0.5)  # Java Math.round

    @property
    def daily(self) -> str | None:
        """The daily package this half-hourly file goes into (EtcFilename.toDaily)."""
        slot = self.slot
        if slot is None or self.type not in DAILY_PACKAGE_TYPES:
            return None
        return daily_name(self.station, self.type, slot[0], self.logger, self.file)


def daily_name(station: str, type_: str, day: date, logger: int, file: int) -> str:
    return f"{station}_{type_}_{day:%Y%m%d}_L{logger:02d}_F{file:02d}.zip"


def parse_name(text: str) -> PortalName:
    """Parse a file name with the portal's regex and rules; PortalNameError says why not."""
    m = NAME_PATTERN.fullmatch(text)
    if not m:
        raise PortalNameError(MSG_FORMAT)
    station, type_, stamp, logger, file, ext = m.groups()
    if ext not in EXTENSIONS:
        raise PortalNameError(f"Illegal file extension {ext}")
    if not STATION_PATTERN.fullmatch(station):
        raise PortalNameError(f"Wrong station id: {station}")
    if type_ not in DATA_TYPES:
        raise PortalNameError(f"Unknown data type {type_}, expected one of {', '.join(DATA_TYPES)}")
    if len(logger) != 2 or len(file) != 2:
        raise PortalNameError(
            f"Logger and file numbers are written with two digits, got L{logger}_F{file}"
        )
    try:
        day = datetime.strptime(stamp[:8], "%Y%m%d").date() if len(stamp) >= 8 else None
    except ValueError:
        day = None
    if day is None:
        raise PortalNameError(f"Text '{stamp[:8]}' could not be parsed as a date (yyyyMMdd)")
    rest = stamp[8:]
    when: time | None = None
    if not rest:
        if type_ in DAILY_PACKAGE_TYPES:
            raise PortalNameError("EC and PHEN filenames must contain time")
    else:
        if type_ not in DAILY_PACKAGE_TYPES:
            raise PortalNameError("Only EC and PHEN filenames can contain time")
        try:
            if len(rest) != 4 or not _DIGITS.fullmatch(rest):
                raise ValueError(rest)
            when = time(int(rest[:2]), int(rest[2:]))
        except ValueError:
            raise PortalNameError(f"Text '{rest}' could not be parsed as a time (HHmm)") from None
    return PortalName(station, type_, day, when, int(logger), int(file), ext, text)


# ------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Staged:
    """A file in a station's staging folder (the last one received under its name)."""

    station: str
    name: str
    md5: str
    sha256: str
    size: int
    received_at: datetime
    data: bytes = field(repr=False)

    def listing(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "md5": self.md5,
            "sha256": self.sha256,
            "size": self.size,
            "received_at": self.received_at.isoformat(),
        }


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a data object: a daily file, or a daily package of half-hours."""

    name: str
    station: str
    version: int
    sha256: str
    size: int
    created_at: datetime
    members: tuple[str, ...] = ()  # a package's half-hourly files


@dataclass(frozen=True)
class Packed:
    """A daily package made from half-hourly files (``force``: packed incomplete)."""

    name: str
    station: str
    type: str
    day: date
    logger: int
    file: int
    members: tuple[str, ...]
    sha256: str
    size: int
    forced: bool
    object: str  # "new object" | "new version" | "same bytes: not a new object"
    at: datetime
    data: bytes = field(repr=False)


@dataclass
class _Fault:
    kind: str  # "status" | "drop" | "drop_after" | "delay" | "hold"
    status: int = 0
    message: str = ""
    seconds: float = 0.0
    hold: Hold | None = None


class Hold:
    """One PUT whose answer the simulator holds after handling it (``hold_next``).

    ``reached`` is set once the request was handled (the file stored, if it was accepted)
    and the answer is waiting; ``release()`` lets it go. A held answer is released on its
    own after ``limit`` seconds, so a forgotten hold never blocks a server thread forever."""

    def __init__(self, limit: float = 120.0):
        self.reached = threading.Event()
        self._released = threading.Event()
        self.limit = limit

    def wait_reached(self, timeout: float) -> bool:
        return self.reached.wait(timeout)

    def release(self) -> None:
        self._released.set()

    def _hold(self) -> None:
        self.reached.set()
        self._released.wait(self.limit)


# ------------------------------------------------------------------------ the server


class IcosEtcSim(LoopbackHttpServer):
    """The portal's ETC upload endpoint in a thread. ``port=0``: a free port (``.port``).

    ``accounts``: station id -> password. ``today``: the portal's date (default: the
    UTC date of ``clock()``); ``clock``: aware datetimes for receipts and records.
    """

    def __init__(
        self,
        accounts: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        today: Callable[[], date] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        test_station: str | None = TEST_STATION,
    ):
        self.host = host
        self._port = port
        self._accounts = dict(accounts)
        self._clock = clock
        self._today = today or (lambda: self._clock().astimezone(UTC).date())
        self.test_station = test_station
        self._lock = threading.RLock()
        self._staging: dict[str, dict[str, Staged]] = {}
        self._objects: dict[str, list[ObjectVersion]] = {}
        self._hashes: set[str] = set()  # an object is its bytes: same sha256, same object
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._packed: list[Packed] = []
        self._package_members: dict[str, dict[int, Staged]] = {}  # daily -> slot -> file
        self._receipts: dict[str, dict[str, str]] = {}
        self._requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._corrupt = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _handler_class(self):
        return _handler(self)

    # ------------------------------------------------------------ accounts, faults

    def set_password(self, station: str, password: str) -> None:
        with self._lock:
            self._accounts[station] = password

    def fail_next(
        self, status: int, times: int = 1, message: str = "Simulated server error"
    ) -> None:
        """The next ``times`` PUTs answer ``status`` with ``message`` (before any check,
        as a proxy or an overloaded portal would), their bodies read and dropped."""
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        with self._lock:
            self._faults.extend(_Fault("status", status, message) for _ in range(times))

    def drop_next(self, times: int = 1, *, after_store: bool = False) -> None:
        """The next ``times`` PUTs get no answer: the connection is closed. By default
        before anything is checked or stored; ``after_store``: the request is handled as
        usual (an acceptable file is stored, its receipt issued) and only then is the
        connection closed, so the client never learns that the portal has the file."""
        kind = "drop_after" if after_store else "drop"
        with self._lock:
            self._faults.extend(_Fault(kind) for _ in range(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` PUTs are handled as usual (an acceptable file is stored),
        then their answer is held ``seconds`` before it is sent: a portal (or a proxy)
        slower than the client's read timeout."""
        if not 0 < seconds <= 600:
            raise ValueError(f"a delay of 0 to 600 seconds, not {seconds}")
        with self._lock:
            self._faults.extend(_Fault("delay", seconds=seconds) for _ in range(times))

    def hold_next(self, limit: float = 120.0) -> Hold:
        """The next PUT is handled as usual (an acceptable file is stored), then its answer
        is held until ``release()`` of the returned ``Hold`` (or ``limit`` seconds): a test
        can act (kill the uploading process) while the portal has the file and the client
        has no answer yet."""
        hold = Hold(limit)
        with self._lock:
            self._faults.append(_Fault("hold", hold=hold))
        return hold

    def corrupt_next_md5(self, times: int = 1) -> None:
        """The next ``times`` uploads that reach the MD5 check find the body damaged in
        transit: ``500 Expected MD5 checksum X, got Y`` even for a correct request."""
        with self._lock:
            self._corrupt += times

    def clear_faults(self) -> None:
        """Forget every fault still pending."""
        with self._lock:
            self._faults.clear()
            self._corrupt = 0

    # ------------------------------------------------------------ accessors (copies)

    def staging(self, station: str) -> dict[str, Staged]:
        """The station's staging folder: name -> the last file received under it."""
        with self._lock:
            return dict(self._staging.get(station, {}))

    @property
    def objects(self) -> dict[str, list[ObjectVersion]]:
        """Object name -> its versions, oldest first."""
        with self._lock:
            return {k: list(v) for k, v in self._objects.items()}

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every accepted upload of ``name``: md5, sha256, replaced, object outcome..."""
        with self._lock:
            return [dict(h) for h in self._history.get(name, [])]

    @property
    def packed(self) -> list[Packed]:
        with self._lock:
            return list(self._packed)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request: method, path, status, login (no password), name, size."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def puts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "PUT"]

    def receipt(self, token: str) -> dict[str, str] | None:
        with self._lock:
            found = self._receipts.get(token)
            return dict(found) if found else None

    # ------------------------------------------------------------ packing

    def force_pack(self, day: date | None = None) -> list[Packed]:
        """The forced packing (about 04:00 UTC at the portal): every day before today with
        fresh half-hours in staging (or only ``day``) is packed, complete or not."""
        with self._lock:
            dailies: dict[str, tuple[str, PortalName]] = {}
            for station, files in self._staging.items():
                if station == self.test_station:
                    continue
                for staged in files.values():
                    pn = parse_name(staged.name)
                    slot = pn.slot
                    if pn.daily is None or slot is None:
                        continue
                    if (day is None and slot[0] < self._today()) or slot[0] == day:
                        dailies.setdefault(pn.daily, (station, pn))
            return [
                self._pack(station, pn, forced=True) for _, (station, pn) in sorted(dailies.items())
            ]

    def _fresh(self, station: str, daily: str) -> dict[int, Staged]:
        fresh: dict[int, Staged] = {}
        for staged in sorted(self._staging.get(station, {}).values(), key=lambda s: s.name):
            pn = parse_name(staged.name)
            if pn.daily == daily and pn.slot is not None:
                fresh[pn.slot[1]] = staged
        return fresh

    def _maybe_pack(self, station: str, pn: PortalName) -> Packed | None:
        """A package is made when the day's 48 slots are in and it was never made before
        (later half-hours wait for the forced packing, which makes a new version)."""
        daily = pn.daily
        if daily is None or daily in self._package_members:
            return None
        if len(self._fresh(station, daily)) < 48:
            return None
        return self._pack(station, pn, forced=False)

    def _pack(self, station: str, pn: PortalName, *, forced: bool) -> Packed:
        daily = pn.daily
        slot = pn.slot
        assert daily is not None and slot is not None
        fresh = self._fresh(station, daily)
        members = {**self._package_members.get(daily, {}), **fresh}  # fresh slots win
        entries = sorted(members.values(), key=lambda s: s.name)
        stored = all(s.name.rsplit(".", 1)[-1] in COMPRESSED_EXTENSIONS for s in entries)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for s in entries:  # a fixed timestamp: the same members give the same bytes
                info = zipfile.ZipInfo(s.name, date_time=(*slot[0].timetuple()[:3], 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                zf.writestr(info, s.data)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        outcome = self._publish(daily, station, sha, len(data), tuple(s.name for s in entries))
        packed = Packed(
            name=daily,
            station=station,
            type=pn.type,
            day=slot[0],
            logger=pn.logger,
            file=pn.file,
            members=tuple(s.name for s in entries),
            sha256=sha,
            size=len(data),
            forced=forced,
            object=outcome,
            at=self._clock(),
            data=data,
        )
        self._packed.append(packed)
        self._package_members[daily] = members
        for s in fresh.values():
            self._staging[station].pop(s.name, None)
        return packed

    def _publish(
        self, name: str, station: str, sha: str, size: int, members: tuple[str, ...] = ()
    ) -> str:
        if sha in self._hashes:
            return "same bytes: not a new object"
        versions = self._objects.setdefault(name, [])
        versions.append(
            ObjectVersion(name, station, len(versions) + 1, sha, size, self._clock(), members)
        )
        self._hashes.add(sha)
        return "new object" if len(versions) == 1 else "new version"

    # ------------------------------------------------------------ request handling

    def _login(self, header: str | None) -> str | None:
        """The station whose credentials the request carries, or None."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        login, sep, password = given.partition(":")
        with self._lock:
            expected = self._accounts.get(login)
        if not sep or expected is None:
            return None
        if not hmac.compare_digest(password.encode(), expected.encode()):
            return None
        return login

    def _put(self, segments: list[str], auth: str | None, body: bytes) -> _Answer:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None and fault.kind == "drop":
            return _Answer(0, "")
        if fault is not None and fault.kind == "status":
            return _Answer(fault.status, fault.message)
        answer = self._check_and_store(segments, auth, body)
        if fault is None:
            return answer
        if fault.kind == "drop_after":
            answer.dropped, answer.status = answer.status, 0
        elif fault.kind == "delay":
            answer.wait = lambda: _time.sleep(fault.seconds)
        elif fault.kind == "hold" and fault.hold is not None:
            answer.wait = fault.hold._hold
        return answer

    def _check_and_store(self, segments: list[str], auth: str | None, body: bytes) -> _Answer:
        login = self._login(auth)
        if login is None:
            return _Answer(403, MSG_AUTH)
        if not segments or not _MD5_HEX.fullmatch(segments[0]):
            return _Answer(400, MSG_MD5_SEGMENT, login=login)
        md5 = segments[0].lower()
        if md5 == EMPTY_MD5:
            return _Answer(400, MSG_EMPTY, login=login)
        if len(segments) != 2 or not segments[1]:
            return _Answer(400, MSG_NAME_SEGMENT, login=login)
        name = segments[1]
        try:
            pn = parse_name(name)
        except PortalNameError as exc:
            return _Answer(400, str(exc), login=login, name=name)
        if pn.station != login:
            msg = f"This file must be uploaded by {pn.station}, not by {login}!"
            return _Answer(403, msg, login=login, name=name)
        if pn.date > self._today() + timedelta(days=1):
            msg = f"File name date {pn.date.isoformat()} is in the future, cannot be right"
            return _Answer(403, msg, login=login, name=name)
        if pn.date < EARLIEST:
            msg = f"File name date {pn.date.isoformat()} is too far in the past"
            return _Answer(403, msg, login=login, name=name)
        actual = hashlib.md5(body, usedforsecurity=False).hexdigest()
        with self._lock:
            if self._corrupt:
                self._corrupt -= 1
                damaged = bytes([body[0] ^ 0xFF]) + body[1:] if body else b"\0"
                actual = hashlib.md5(damaged, usedforsecurity=False).hexdigest()
        if actual != md5:
            msg = f"Expected MD5 checksum {md5}, got {actual}"
            return _Answer(500, msg, login=login, name=name)
        token = self._accept(login, pn, md5, body)
        return _Answer(200, "OK", login=login, name=name, receipt=token)

    def _accept(self, station: str, pn: PortalName, md5: str, body: bytes) -> str:
        now = self._clock()
        sha = hashlib.sha256(body).hexdigest()
        staged = Staged(station, pn.text, md5, sha, len(body), now, body)
        with self._lock:
            folder = self._staging.setdefault(station, {})
            event: dict[str, Any] = {
                "at": now,
                "md5": md5,
                "sha256": sha,
                "size": len(body),
                "replaced": pn.text in folder,
            }
            folder[pn.text] = staged
            if station == self.test_station:
                event["object"] = "test station: staged, never published"
            elif pn.daily is not None:
                packed = self._maybe_pack(station, pn)
                event["object"] = "waiting for its daily package"
                event["packed"] = packed.name if packed else None
            else:
                event["object"] = self._publish(pn.text, station, sha, len(body))
                folder.pop(pn.text, None)  # ingested: it leaves staging
            token = secrets.token_urlsafe(24)
            event["receipt"] = token
            self._history.setdefault(pn.text, []).append(event)
            self._receipts[token] = {
                "upload_time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "file_name": pn.text,
                "md5": md5,
            }
        return token

    def _get(self, segments: list[str], auth: str | None) -> _Answer:
        if len(segments) == 2 and segments[0] == "receipt":
            found = self.receipt(segments[1])
            if found is None:
                return _Answer(400, "Invalid receipt:\nnot a receipt this portal issued")
            report = (
                "ICOS CP ETC logger facade file upload receipt:\n"
                f"Upload time:  {found['upload_time']}\n"
                f"File name:    {found['file_name']}\n"
                f"MD5 checksum: {found['md5']}\n"
            )
            return _Answer(200, report)
        if len(segments) == 2 and segments[0] == "staging":
            login = self._login(auth)
            if login is None or login != segments[1]:
                return _Answer(403, MSG_AUTH)
            files = sorted(self.staging(login).values(), key=lambda s: s.name)
            body = {"station": login, "files": [s.listing() for s in files]}
            return _Answer(200, json.dumps(body), content_type="application/json", login=login)
        return _Answer(404, MSG_NOT_FOUND)

    def _handle(self, method: str, raw_path: str, auth: str | None, body: bytes) -> _Answer:
        parts = [unquote(p) for p in urlsplit(raw_path).path.split("/")[1:]]
        if tuple(parts[:2]) != _PREFIX:
            answer = _Answer(404, MSG_NOT_FOUND)
        elif method == "PUT":
            answer = self._put(parts[2:], auth, body)
        elif method == "GET":
            answer = self._get(parts[2:], auth)
        else:
            answer = _Answer(404, MSG_NOT_FOUND)
        with self._lock:
            self._requests.append(
                {
                    "method": method,
                    "path": urlsplit(raw_path).path,
                    "status": answer.status or None,  # None: dropped, no answer
                    "dropped": answer.dropped,  # the status it had when dropped after_store
                    "login": answer.login,
                    "name": answer.name,
                    "size": len(body),
                    "at": self._clock(),
                }
            )
        if answer.wait is not None:  # handled and logged; the answer is held (delay, hold)
            answer.wait()
        return answer


@dataclass
class _Answer:
    status: int  # 0: close the connection without an answer
    text: str
    content_type: str = "text/plain; charset=UTF-8"
    login: str | None = None
    name: str | None = None
    receipt: str | None = None
    wait: Callable[[], None] | None = None  # run after the request is logged
    dropped: int | None = None  # drop_next(after_store=True): the answer it would have had


def _handler(sim: IcosEtcSim) -> type[BaseHTTPRequestHandler]:
    class Handler(AnsweringHandler):
        server_version = "IcosEtcSim/1"
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _answer(self, method: str) -> None:
            try:
                body = self._body()
            except (ValueError, OSError):
                self.close_connection = True
                return
            answer = sim._handle(method, self.path, self.headers.get("Authorization"), body)
            if not answer.status:
                self.close_connection = True
                return
            headers = {RECEIPT_HEADER: answer.receipt} if answer.receipt else {}
            headers["Content-Type"] = answer.content_type
            try:
                self.reply(method, answer.status, headers, answer.text.encode("utf-8"))
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                self.close_connection = True

    return Handler


__all__ = [
    "DATA_TYPES",
    "EXTENSIONS",
    "NAME_PATTERN",
    "RECEIPT_HEADER",
    "Hold",
    "IcosEtcSim",
    "ObjectVersion",
    "Packed",
    "PortalName",
    "PortalNameError",
    "Staged",
    "daily_name",
    "parse_name",
]
