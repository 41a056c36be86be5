"""A loopback HTTP server in a thread: the life cycle the HTTP simulators share."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackHttpServer:
    """``start()`` / ``stop()`` / context manager; ``port=0`` picks a free port (``.port``).

    Subclasses set ``host`` and ``_port`` and give their request handler class."""

    host: str
    _port: int
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} has no port yet: start() it first")
        return self._port

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self._port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AnsweringHandler(BaseHTTPRequestHandler):
    """Every HTTP method goes to ``_answer(method)``, which the simulator's handler defines;
    no access log (tests stay quiet)."""

    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

    def _answer(self, method: str) -> None:
        raise NotImplementedError

    def reply(self, method: str, status: int, headers: dict[str, str], body: bytes) -> None:
        """Send one answer; a HEAD gets the headers (Content-Length of the body) only."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_OPTIONS(self) -> None:
        self._answer("OPTIONS")

    def log_message(self, format: str, *args: object) -> None:
        pass
