"""A station's network relay (the internet WiFi relay that hard-resets each logger).

``RelaySim`` serves ``GET|POST /relay/{channel}/cycle`` (the path template of
``config/stations.yaml``) on loopback: it calls the channel's ``power_cycle`` callable
(e.g. ``TcpDevice.power_cycle`` with a boot time) and answers
``200 {"channel": n, "state": "cycled"}``. With a login or password it wants HTTP basic
auth (401 otherwise); an unknown channel or path is a 404. ``cycles[channel]`` counts
the power cycles done.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from stationflow.sim.http_server import LoopbackHttpServer

_CYCLE = re.compile(r"^/relay/(\d{1,3})/cycle/?$")


class RelaySim(LoopbackHttpServer):
    """The relay's HTTP interface, in a thread. ``port=0``: a free port (see ``.port``)."""

    def __init__(
        self,
        devices: dict[int, Callable[[], None]] | None = None,
        login: str | None = None,
        password: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.host = host
        self._port = port
        self.login = login
        self.password = password
        self._devices: dict[int, Callable[[], None]] = dict(devices or {})
        self._lock = threading.Lock()
        self.cycles: Counter[int] = Counter()  # channel -> power cycles done
        self.requests: list[tuple[str, str, int]] = []  # (method, path, HTTP status)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def auth_required(self) -> bool:
        return self.login is not None or self.password is not None

    def register(self, channel: int, power_cycle: Callable[[], None]) -> None:
        with self._lock:
            self._devices[int(channel)] = power_cycle

    def _handler_class(self):
        return _handler(self)

    # ------------------------------------------------------------ request handling

    def _authorized(self, header: str | None) -> bool:
        if not self.auth_required:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.login or ''}:{self.password or ''}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _handle(self, method: str, path: str, auth: str | None) -> tuple[int, dict]:
        if not self._authorized(auth):
            return 401, {"error": "unauthorized"}
        m = _CYCLE.match(urlsplit(path).path)
        if not m:
            return 404, {"error": "no such path"}
        channel = int(m.group(1))
        with self._lock:
            power_cycle = self._devices.get(channel)
        if power_cycle is None:
            return 404, {"error": f"no channel {channel}"}
        try:
            power_cycle()
        except Exception as exc:
            return 500, {"error": f"channel {channel}: {type(exc).__name__}"}
        with self._lock:
            self.cycles[channel] += 1
        return 200, {"channel": channel, "state": "cycled"}


def _handler(sim: RelaySim) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "RelaySim/1"

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 16))  # a POST body, ignored
            status, body = sim._handle(method, self.path, self.headers.get("Authorization"))
            with sim._lock:
                sim.requests.append((method, urlsplit(self.path).path, status))
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="relay"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: object) -> None:  # quiet in tests
            pass

    return Handler
