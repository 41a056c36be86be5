"""Failed-upload alerts through a real SMTP sink (aiosmtpd) and a real local webhook server.

The notifiers are called the way Airflow 3.3's task runner calls ``on_failure_callback``
entries: with the task context (dag, task, ti/task_instance, run_id, params, exception).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from stationflow.alerts import (
    WebhookNotifier,
    alert_fields,
    failure_callbacks,
    notifiers,
    on_failure_alert,
    send_alert,
    webhook_url,
)
from stationflow.config import Inventory, parse_inventory
from stationflow.errors import PermanentError
from tests.alert_sinks import (
    HOOK_CONN,
    SMTP_CONN,
    HookServer,
    MailSink,
    free_port,
    set_smtp_conn,
    smtp_sink,
    webhook_server,
)

NAME = "FR-Lam_EC_202611201230_L03_F01.zip"

INVENTORY = """
version: 1
defaults:
  alerts:
    email: [station-team@example.org, pi@example.org]
    smtp_connection_id: smtp_test
    {webhook}
stations:
  - id: FR-Lam
    utc_offset_hours: 1
    upload: {{connection_id: icos_etc_fr_lam, deadline_hours: 6}}
    loggers:
      - id: cr3000_meteo
        kind: campbell
        collect: {{method: loggernet, folder: sim/FR-Lam, tables: [Meteo_1min]}}
      - id: smartflux
        kind: smartflux
        collect: {{method: ftp_push, connection_id: ftp_push_fr_lam}}
    files:
      - {{type: BM, logger: cr3000_meteo, logger_number: 1, file_number: 1, extension: dat}}
      - {{type: EC, logger: smartflux, logger_number: 3, file_number: 1, extension: zip}}
"""


def inventory(*, webhook: bool = False, email: bool = True) -> Inventory:
    text = INVENTORY.format(webhook=f"webhook_connection_id: {HOOK_CONN}" if webhook else "")
    if not email:
        text = text.replace("[station-team@example.org, pi@example.org]", "[]")
    return parse_inventory(text)


class UploadRejected(PermanentError):
    """What an upload raises on a 4xx: the attributes the alerts read."""

    def __init__(self, station: str, name: str, http_status: int | None, reason: str):
        super().__init__(f"{name}: HTTP {http_status}: {reason}")
        self.station, self.name, self.http_status, self.reason = (
            station,
            name,
            http_status,
            reason,
        )


@pytest.fixture
def sink(monkeypatch) -> Iterator[MailSink]:
    with smtp_sink(monkeypatch) as s:
        yield s


@pytest.fixture
def hook(monkeypatch) -> Iterator[HookServer]:
    with webhook_server(
        monkeypatch, extra={"path": "/hooks/stationflow", "token": "hook-Token-1234"}
    ) as s:
        yield s


# --------------------------------------------------------------------------- context


def task_context(exception: BaseException | None, try_number: int = 2) -> dict[str, Any]:
    """The context Airflow 3.3's task runner hands ``on_failure_callback`` entries:
    ``get_template_context()`` plus ``exception`` (set by ``main`` before ``finalize``)."""
    with DAG("icos_upload", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)) as dag:
        task = BaseOperator(task_id="FR-Lam.upload_ec")
    run_id = "scheduled__2026-11-21T00:30:00+00:00"
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=dag.dag_id,
        run_id=run_id,
        try_number=try_number,
        max_tries=3,
        map_index=-1,
        task=task,
        dag_version_id=uuid.uuid4(),
        start_date=datetime.now(UTC),
    )
    return {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "run_id": run_id,
        "params": {},
        "ds": "2026-11-21",
        "exception": exception,
    }


REJECTED = UploadRejected("FR-Lam", NAME, 403, "station FR-Lam may not upload <EC> files")


# ----------------------------------------------------------------------------- tests


def test_the_notifiers_come_from_the_inventory():
    (smtp,) = notifiers(inventory())
    assert isinstance(smtp, SmtpNotifier)  # the provider's, with our templates
    assert smtp.smtp_conn_id == SMTP_CONN
    assert smtp.to == ["station-team@example.org", "pi@example.org"]
    both = notifiers(inventory(webhook=True))
    assert isinstance(both[0], SmtpNotifier) and isinstance(both[1], WebhookNotifier)
    assert both[1].webhook_conn_id == HOOK_CONN
    assert notifiers(inventory(email=False)) == []  # no recipients, no webhook: nothing
    callbacks = failure_callbacks(inventory(webhook=True))
    assert callbacks[0] is on_failure_alert and len(callbacks) == 3


def test_a_rejected_upload_mails_station_file_status_and_reason(sink):
    (smtp,) = notifiers(inventory())
    smtp(task_context(REJECTED))
    (msg,) = sink.messages
    assert msg["Subject"] == f"[stationflow] FR-Lam: upload of {NAME} failed (HTTP 403)"
    assert msg["From"] == "stationflow@localhost"
    assert msg["X-Envelope-To"] == "station-team@example.org, pi@example.org"
    body = MailSink.html(msg)
    assert "FR-Lam" in body and NAME in body and "403" in body
    assert "station FR-Lam may not upload &lt;EC&gt; files" in body  # escaped
    assert "icos_upload.FR-Lam.upload_ec" in body and "try 2" in body
    assert "/dags/icos_upload/runs/" in body and "try_number=2" in body  # the log link


def test_one_notifier_serves_many_failures(sink):
    """Rendering is in place in Airflow; ours renders a copy, so a second failure in the
    same process (dag.test, one notifier in default_args) is not the first one's mail."""
    (smtp,) = notifiers(inventory())
    smtp(task_context(REJECTED))
    other = UploadRejected("FR-Lam", "FR-Lam_BM_20261120_L01_F01.dat", 422, "bad header")
    smtp(task_context(other))
    assert [m["Subject"].split(": ", 1)[1] for m in sink.messages] == [
        f"upload of {NAME} failed (HTTP 403)",
        "upload of FR-Lam_BM_20261120_L01_F01.dat failed (HTTP 422)",
    ]


def test_a_failure_without_upload_fields_still_mails(sink):
    """No answer at all (a timeout): the station from the task id, no status, the message."""
    (smtp,) = notifiers(inventory())
    smtp(task_context(TimeoutError("no answer within 60 s")))
    (msg,) = sink.messages
    assert msg["Subject"] == "[stationflow] FR-Lam: upload of a file failed"
    body = MailSink.html(msg)
    assert "no answer" in body and "no answer within 60 s" in body


def test_the_webhook_receives_the_json(hook):
    _, webhook = notifiers(inventory(webhook=True))
    webhook(task_context(REJECTED))
    ((path, headers, payload),) = hook.received
    assert path == "/hooks/stationflow"
    assert headers["Authorization"] == "Bearer hook-Token-1234"
    assert headers["Content-Type"] == "application/json"
    assert {k: payload[k] for k in ("station", "file", "status", "reason")} == {
        "station": "FR-Lam",
        "file": NAME,
        "status": 403,
        "reason": "station FR-Lam may not upload <EC> files",
    }
    assert payload["dag_id"] == "icos_upload" and payload["task_id"] == "FR-Lam.upload_ec"
    assert payload["run_id"] == "scheduled__2026-11-21T00:30:00+00:00"
    assert payload["try_number"] == 2 and "try_number=2" in payload["log_url"]
    assert NAME in payload["text"] and "HTTP 403" in payload["subject"]


def test_basic_auth_from_login_and_password(monkeypatch):
    with webhook_server(monkeypatch, login="alerts", password="pw-Hook-98") as server:
        _, webhook = notifiers(inventory(webhook=True))
        webhook(task_context(REJECTED))
    ((path, headers, _),) = server.received
    assert path == "/" and headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("broken", ["refused", "http500"])
def test_a_broken_webhook_does_not_raise(monkeypatch, caplog, broken):
    caplog.set_level(logging.ERROR, logger="stationflow.alerts")
    if broken == "refused":
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": free_port()}
        monkeypatch.setenv(f"AIRFLOW_CONN_{HOOK_CONN.upper()}", json.dumps(conn))
        _, webhook = notifiers(inventory(webhook=True))
        webhook(task_context(REJECTED))  # must not raise
    else:
        with webhook_server(monkeypatch) as server:
            server.status = 500
            _, webhook = notifiers(inventory(webhook=True))
            webhook(task_context(REJECTED))
        assert len(server.received) == 1
    assert f"alert webhook {HOOK_CONN!r} failed" in caplog.text
    webhook({})  # not even a context: still no exception


def test_a_missing_webhook_connection_does_not_raise(monkeypatch, caplog):
    monkeypatch.delenv(f"AIRFLOW_CONN_{HOOK_CONN.upper()}", raising=False)
    _, webhook = notifiers(inventory(webhook=True))
    webhook(task_context(REJECTED))
    assert "failed" in caplog.text


def test_an_unreachable_smtp_server_does_not_raise(monkeypatch, caplog):
    set_smtp_conn(monkeypatch, free_port())
    (smtp,) = notifiers(inventory())
    smtp(task_context(REJECTED))  # logged, not raised
    assert f"alert mail via Connection {SMTP_CONN!r} failed" in caplog.text


def test_send_alert_by_mail_only(sink):
    sent = send_alert(inventory(), "[stationflow] 2 files missing", "a <b>\nline 2", fields={})
    assert sent == [f"smtp:{SMTP_CONN}"]
    (msg,) = sink.messages
    assert msg["Subject"] == "[stationflow] 2 files missing"
    assert "a &lt;b&gt;\nline 2" in MailSink.html(msg)


def test_send_alert_by_mail_and_webhook(sink, hook):
    fields = {"kind": "reconcile", "station": "FR-Lam", "missing": 2}
    sent = send_alert(inventory(webhook=True), "[stationflow] missing", "body", fields=fields)
    assert sent == [f"smtp:{SMTP_CONN}", f"webhook:{HOOK_CONN}"]
    assert len(sink.messages) == 1
    ((_, _, payload),) = hook.received
    assert payload == {**fields, "subject": "[stationflow] missing", "text": "body"}


def test_send_alert_reports_a_failing_channel_and_sends_the_other(monkeypatch, hook, caplog):
    set_smtp_conn(monkeypatch, free_port())  # nobody listens
    sent = send_alert(inventory(webhook=True), "s", "b", fields={})
    assert sent == [f"webhook:{HOOK_CONN}"]
    assert len(hook.received) == 1
    assert f"alert mail via Connection {SMTP_CONN!r} failed" in caplog.text


# --------------------------------------------------------------------- the fields


def test_alert_fields_read_defensively():
    assert alert_fields(REJECTED) == {
        "station": "FR-Lam",
        "file": NAME,
        "status": 403,
        "reason": "station FR-Lam may not upload <EC> files",
        "error": f"UploadRejected: {NAME}: HTTP 403: station FR-Lam may not upload <EC> files",
    }
    assert alert_fields(None)["reason"] is None
    assert alert_fields("killed")["reason"] == "killed"
    # an AttributeError's .name is an attribute, not a file
    assert alert_fields(AttributeError("x", name="etc_name"))["file"] is None

    # a requests HTTPError wrapped by the upload code: status and text from its response
    resp = requests.Response()
    resp.status_code, resp._content = 503, b"portal in maintenance"
    try:
        try:
            raise requests.HTTPError("503 Server Error", response=resp)
        except requests.HTTPError as exc:
            raise RuntimeError("upload failed") from exc
    except RuntimeError as exc:
        fields = alert_fields(exc)
    assert fields["status"] == 503 and fields["reason"] == "portal in maintenance"

    # the upload client's shape: a message, and the outcome in ``result``
    class Refused(PermanentError):
        def __init__(self, message: str, result: Any):
            super().__init__(message)
            self.result = result

    result = SimpleNamespace(name=NAME, status="rejected", http_status=400, message="bad MD5")
    fields = alert_fields(Refused(f"{NAME}: refused", result))
    assert {k: fields[k] for k in ("station", "file", "status", "reason")} == {
        "station": "FR-Lam",  # from the file name
        "file": NAME,
        "status": 400,
        "reason": "bad MD5",
    }


def test_webhook_urls_from_connections():
    from airflow.sdk import Connection

    def url(**kw) -> str:
        if "extra" in kw:
            kw["extra"] = json.dumps(kw["extra"])
        return webhook_url(Connection(conn_id="h", **{"conn_type": "http", **kw}))

    assert url(host="chat.example.org", extra={"path": "/hooks/a"}) == (
        "http://chat.example.org/hooks/a"
    )
    assert url(host="chat.example.org", schema="https", port=8443) == (
        "https://chat.example.org:8443/"
    )
    assert url(host="https://user:pw@chat.example.org/services/T0") == (
        "https://chat.example.org/services/T0"
    )
    assert url(conn_type="https", host="chat.example.org", schema="services/T0/B1") == (
        "https://chat.example.org/services/T0/B1"
    )
    with pytest.raises(ValueError, match="needs a host"):
        url(host="")
