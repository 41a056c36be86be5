"""Every outgoing HTTP client verifies TLS certificates unless it is told which CA to trust.

One HTTPS server on loopback whose certificate comes from a CA made for this test (and
trusted by nothing on the machine). Each client is built the way production builds it
(from an Airflow Connection that says nothing about ``verify``) and sent one real request:
it must fail with the project's own error naming the certificate problem, and the server
must have served no request at all (the TLS handshake failed before any HTTP). Given the CA
bundle (Connection extra ``verify`` or the client's own way of trusting a CA), the same
client succeeds against the same server, so the failure was the certificate check and
nothing else. Where the code promises that checks are never turned off (the generic
fetcher and the harvesters built on it, the ICOS ETC upload), ``verify: false`` is shown
to change nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.models.connection import Connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stationflow.alerts import post_webhook
from stationflow.collect.harvest import HarvestError
from stationflow.collect.health import RelayError, reset_device
from stationflow.collect.http_get import Fetcher, FetchError
from stationflow.collect.sources import source_for
from stationflow.config import (
    InfluxHarvest,
    PublishTarget,
    Relay,
    SensorNetwork,
    WhaleHarvest,
)
from stationflow.publish.icos_etc import (
    RECEIPT_HEADER,
    UploadFailed,
    endpoint_from_connection,
    upload_file,
    verify_receipt,
)
from stationflow.publish.records.tasks import build_target
from stationflow.publish.sos import SosUnavailable
from stationflow.publish.sta import StaUnavailable

CERT_FAILED = "CERTIFICATE_VERIFY_FAILED"
ETC_NAME = "FR-Lam_BM_20261120_L01_F01.dat"
RECEIPT = "rcpt-0001"


# ------------------------------------------------------------------ a throwaway PKI


@dataclass(frozen=True)
class Pki:
    ca_pem: Path  # the CA bundle a client is given to trust the server
    cert_pem: Path  # the server's certificate (127.0.0.1, localhost)
    key_pem: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("stationflow test CA"))
        .issuer_name(_name("stationflow test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


# ------------------------------------------------------------------ the HTTPS server


def route(method: str, path: str) -> tuple[dict[str, str], Any]:
    """A harmless 200 answer for each client: (headers, JSON body)."""
    path = path.split("?", 1)[0]
    if method == "PUT" and path.startswith("/upload/etc/"):  # ICOS ETC upload
        return {RECEIPT_HEADER: RECEIPT}, {"status": "ok"}
    if path.startswith("/upload/etc/receipt/"):  # ICOS ETC receipt check
        return {}, {"upload_time": "2026-11-21T00:10:00Z", "file_name": ETC_NAME, "md5": "0" * 32}
    if path == "/query":  # InfluxDB: no points
        return {}, {"results": [{"statement_id": 0}]}
    if path.endswith("/devices"):  # Whale API: no devices
        return {}, {"devices": []}
    if path == "/service":  # SOS: no observations
        return {}, {"observations": []}
    if path.startswith("/sensorthings/"):  # STA: an empty collection
        return {}, {"value": []}
    return {}, {"ok": True}  # relay command, alert webhook


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TlsServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.count(self.command, self.path)
        headers, doc = route(self.command, self.path)
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TlsServer(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1 (a free port); the handshake runs in the request's thread, so a
    client that drops it is counted (``handshake_failures``) and never reaches HTTP."""

    daemon_threads = True

    def __init__(self, pki: Pki) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.cert_pem, pki.key_pem)
        self._lock = threading.Lock()
        self.served: list[tuple[str, str]] = []
        self.handshake_failures = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def count(self, method: str, path: str) -> None:
        with self._lock:
            self.served.append((method, path))

    def reset(self) -> None:
        with self._lock:
            self.served.clear()
            self.handshake_failures = 0

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError included: the client refused our certificate
            with self._lock:
                self.handshake_failures += 1
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def wait_handshake_failures(self, expected: int, timeout: float = 3.0) -> int:
        """The server side of a refused handshake may lag the client's exception a little."""
        deadline = time.monotonic() + timeout
        while self.handshake_failures < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # one more would show up now
        return self.handshake_failures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[TlsServer]:
    srv = TlsServer(pki)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def https(server: TlsServer, monkeypatch: pytest.MonkeyPatch) -> TlsServer:
    """The server with fresh counters, and no CA bundle or proxy from the environment: the
    clients' own default (requests: certifi) is what is tested."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server.reset()
    return server


# ------------------------------------------------------------------ helpers


def connection(
    conn_id: str, port: int, *, extra: dict[str, Any] | None = None, **fields: Any
) -> Connection:
    return Connection(
        conn_id=conn_id,
        conn_type="http",
        host="127.0.0.1",
        port=port,
        schema="https",
        extra=json.dumps(extra) if extra else None,
        **fields,
    )


def define(monkeypatch: pytest.MonkeyPatch, conn: Connection) -> None:
    """Where the code looks the Connection up by id (stationflow.connections)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn.conn_id.upper()}", conn.as_json())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    todo, seen = [exc], set()
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        nxt = [cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args]
        todo += [e for e in nxt if isinstance(e, BaseException)]


def assert_refused(
    server: TlsServer, message: str, exc: BaseException | None = None, *, attempts: int = 1
) -> None:
    """The request failed on the certificate: said so, every attempt was a TLS handshake the
    client dropped, and no HTTP reached the server."""
    assert CERT_FAILED in message or (
        "SSL" in message
        and exc is not None
        and any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc))
    ), message
    assert server.served == [], f"the server answered {server.served} despite the bad certificate"
    assert server.wait_handshake_failures(attempts) == attempts, "handshakes the client dropped"


def assert_served(server: TlsServer, method: str, path_start: str) -> None:
    assert server.handshake_failures == 0
    assert any(m == method and p.startswith(path_start) for m, p in server.served), server.served


def refused(
    server: TlsServer, call: Callable[[], Any], error: type[BaseException], attempts: int = 1
) -> None:
    with pytest.raises(error) as info:
        call()
    assert_refused(server, str(info.value), info.value, attempts=attempts)


class NoSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# ------------------------------------------------------------------ the generic fetcher


def test_fetcher_verifies_by_default_and_never_turns_it_off(https: TlsServer, pki: Pki) -> None:
    url = f"https://127.0.0.1:{https.port}/devices"
    for verify in (True, False):  # False: "never turned off"
        sleep = NoSleep()
        fetcher = Fetcher(retries=1, sleep=sleep, **({} if verify else {"verify": False}))
        assert fetcher.verify is True
        refused(https, lambda f=fetcher: f.get(url), FetchError, attempts=2)
        assert len(sleep.calls) == 1  # a failed handshake is retried like no answer, then fails
        https.reset()

    assert json.loads(Fetcher(verify=str(pki.ca_pem), retries=0).get(url)) == {"devices": []}
    assert_served(https, "GET", "/devices")


# ------------------------------------------------------------------ harvesters


@pytest.mark.parametrize("verify", [None, False, "false"], ids=["unset", "false", "'false'"])
def test_whale_source(
    https: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, verify: Any
) -> None:
    cfg = WhaleHarvest(kind="whale", connection_id="tls_whale")
    extra = {} if verify is None else {"verify": verify}
    define(monkeypatch, connection(cfg.connection_id, https.port, password="t0ken-x", extra=extra))
    src = source_for(cfg)  # production: WhaleSource.from_connection(get_connection(...))
    src.fetcher.sleep = NoSleep()
    refused(https, src.devices, HarvestError, attempts=4)  # every retry failed the same way

    https.reset()
    define(
        monkeypatch, connection(cfg.connection_id, https.port, extra={"verify": str(pki.ca_pem)})
    )
    assert source_for(cfg).devices() == []
    assert_served(https, "GET", "/sensors/v1/devices")


@pytest.mark.parametrize("verify", [None, False, "false"], ids=["unset", "false", "'false'"])
def test_influx_source(
    https: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, verify: Any
) -> None:
    cfg = InfluxHarvest(
        kind="influxdb", connection_id="tls_influx", database="ase", measurements={"ASE_NL_01": 1}
    )
    extra = {} if verify is None else {"verify": verify}
    define(monkeypatch, connection(cfg.connection_id, https.port, login="ase", extra=extra))
    src = source_for(cfg)  # production: InfluxSource.from_connection(get_connection(...))
    src.fetcher.sleep = NoSleep()
    refused(https, lambda: src.last_record(1), HarvestError, attempts=4)

    https.reset()
    define(
        monkeypatch, connection(cfg.connection_id, https.port, extra={"verify": str(pki.ca_pem)})
    )
    with source_for(cfg) as ok:
        assert ok.last_record(1) is None  # no points, read over verified TLS
    assert_served(https, "GET", "/query")


# ------------------------------------------------------------------ ICOS ETC upload


@pytest.mark.parametrize("extra", [None, {"verify": False}], ids=["unset", "verify-false"])
def test_icos_etc_upload_and_receipt(
    https: TlsServer,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    extra: dict | None,
) -> None:
    define(
        monkeypatch,
        connection("tls_icos", https.port, login="FR-Lam", password="Lam-pw-123", extra=extra),
    )
    ep, allow_http = endpoint_from_connection("tls_icos")
    assert ep.base_url == f"https://127.0.0.1:{https.port}"
    path = tmp_path / ETC_NAME
    path.write_bytes(b"TIMESTAMP,SWC_1\r\n202611200030,-9999\r\n")

    # as upload_output sends it: no session of its own (a new one, defaults)
    sleep = NoSleep()
    args = (ep.base_url, ep.login, ep.password)
    result = upload_file(None, *args, path, retries=2, sleep=sleep, allow_http=allow_http)
    assert result.status == "error" and result.receipt is None
    assert_refused(https, result.message or "", attempts=3)
    assert result.attempts == 3 and len(sleep.calls) == 2
    https.reset()
    refused(https, lambda: verify_receipt(*args, RECEIPT, allow_http=allow_http), UploadFailed)

    # a session that says verify=False: _verify never turns checks off
    https.reset()
    off = requests.Session()
    off.verify = False
    result = upload_file(off, *args, path, retries=0, sleep=sleep)
    assert result.status == "error"
    assert_refused(https, result.message or "")
    https.reset()
    refused(https, lambda: verify_receipt(*args, RECEIPT, session=off), UploadFailed)

    # the same upload trusting the test CA goes through
    https.reset()
    with requests.Session() as s:
        s.verify = str(pki.ca_pem)
        result = upload_file(s, *args, path, retries=0, sleep=sleep)
        assert (result.status, result.receipt) == ("accepted", RECEIPT), result.message
        got = verify_receipt(*args, RECEIPT, session=s)
    assert got["file_name"] == ETC_NAME
    assert_served(https, "PUT", f"/upload/etc/{result.md5}/{ETC_NAME}")
    assert_served(https, "GET", f"/upload/etc/receipt/{RECEIPT}")


# ------------------------------------------------------------------ STA / SOS publish


def _network(kind: str, conn_id: str) -> tuple[SensorNetwork, PublishTarget]:
    net = SensorNetwork.model_validate(
        {
            "id": "se-tls",
            "harvest": [{"kind": "whale", "connection_id": "tls_whale"}],
            "indicators": ["no2"],
            "publish": [{"kind": kind, "connection_id": conn_id}],
        }
    )
    return net, net.publish[0]


def test_sta_client(https: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    net, spec = _network("sta", "tls_sta")
    define(monkeypatch, connection(spec.connection_id, https.port, login="pub", password="pw-sta"))
    client = build_target(net, spec).client
    assert client.url == f"https://127.0.0.1:{https.port}/sensorthings/v1.1"
    refused(https, lambda: client.find("Things", "station 1"), StaUnavailable)

    https.reset()
    define(
        monkeypatch, connection(spec.connection_id, https.port, extra={"verify": str(pki.ca_pem)})
    )
    assert build_target(net, spec).client.find("Things", "station 1") == []
    assert_served(https, "GET", "/sensorthings/v1.1/Things")


def test_sos_client(https: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    net, spec = _network("sos", "tls_sos")
    define(monkeypatch, connection(spec.connection_id, https.port, login="pub", password="pw-sos"))
    client = build_target(net, spec).client
    assert client.url == f"https://127.0.0.1:{https.port}/service"
    refused(https, lambda: client.get_observations(procedure="station-1"), SosUnavailable)

    https.reset()
    define(
        monkeypatch, connection(spec.connection_id, https.port, extra={"verify": str(pki.ca_pem)})
    )
    assert build_target(net, spec).client.get_observations(procedure="station-1") == []
    assert_served(https, "POST", "/service")


# ------------------------------------------------------------------ relay, alert webhook
# Neither reads a ``verify`` from its Connection: requests' default (verify on) applies,
# and the only way to trust a private CA is requests' own REQUESTS_CA_BUNDLE.


def test_relay_command(https: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    relay = Relay(connection_id="tls_relay", url="/relay/{channel}/cycle", method="POST")
    define(monkeypatch, connection("tls_relay", https.port, login="admin", password="relay-pw"))
    refused(https, lambda: reset_device(relay, "FR-Lam", "cr3000"), RelayError)

    https.reset()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_pem))
    assert "answered HTTP 200" in reset_device(relay, "FR-Lam", "cr3000")
    assert_served(https, "POST", "/relay/1/cycle")


def test_alert_webhook(https: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    define(monkeypatch, connection("tls_hook", https.port, extra={"path": "/hook"}))
    refused(https, lambda: post_webhook("tls_hook", {"text": "test"}), RuntimeError)

    https.reset()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_pem))
    assert post_webhook("tls_hook", {"text": "test"}) == 200
    assert_served(https, "POST", "/hook")
