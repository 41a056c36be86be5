"""A real SMTP sink (aiosmtpd) and a local webhook server, with their Connections as
variables: where alert tests send their mails and webhook calls."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

SMTP_CONN, HOOK_CONN = "smtp_test", "hook_test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailSink:
    """aiosmtpd handler: every message received, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content)
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 Message accepted"

    @staticmethod
    def html(msg: Message) -> str:
        part = next(p for p in msg.walk() if p.get_content_type() == "text/html")
        return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")


def set_smtp_conn(monkeypatch, port: int, conn_id: str = SMTP_CONN) -> None:
    extra = {
        "disable_tls": True,
        "disable_ssl": True,
        "from_email": "stationflow@localhost",
        "timeout": 5,
        "retry_limit": 0,
    }
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@contextmanager
def smtp_sink(monkeypatch, conn_id: str = SMTP_CONN) -> Iterator[MailSink]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, ready_timeout=5)
    controller.start()
    set_smtp_conn(monkeypatch, port, conn_id)
    try:
        yield sink
    finally:
        controller.stop()


class HookServer(ThreadingHTTPServer):
    """A webhook endpoint: records (path, headers, JSON body); answers ``self.status``."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], Any]] = []
        self.status = 200
        super().__init__(("127.0.0.1", 0), _HookHandler)


class _HookHandler(BaseHTTPRequestHandler):
    server: HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, dict(self.headers), json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@contextmanager
def webhook_server(monkeypatch, conn_id: str = HOOK_CONN, **conn: Any) -> Iterator[HookServer]:
    server = HookServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fields = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_address[1]}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**fields, **conn}))
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
