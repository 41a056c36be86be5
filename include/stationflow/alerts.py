"""Alerts: a failed task leaves an ERROR audit row; failed uploads and missing files reach people.

- ``on_failure_alert``: the audit row (what the completeness view and the ledger
  reconciliation read); the task log carries the same line.
- ``notifiers(inventory)``: Airflow notifiers for upload tasks, from ``defaults.alerts``:
  a mail through the SMTP provider's ``SmtpNotifier`` and, when a webhook Connection is
  named, a JSON POST (``WebhookNotifier``). Both say station, file, HTTP status and the
  server's reason, read from the exception by ``alert_fields``.
- ``failure_callbacks(inventory)``: ``[on_failure_alert, *notifiers]`` for ``on_failure_callback``.
- ``send_alert``: the same two channels outside a task callback (the daily reconciliation,
  which also catches hard-killed tasks, whose callbacks never run).

Upload exceptions carry ``station``, ``name`` (the ETC file name), ``http_status`` (None when
the server never answered) and ``reason`` (the server's text); anything missing is read
from their ``result`` (name, http_status, message), their causes (a ``requests`` HTTPError's
response) or the file name (the station), else left empty.

SMTP Connection (``smtp_connection_id``): host, port, login/password, and in extra
``from_email`` (required: the sender), ``disable_tls``/``disable_ssl``, ``timeout``,
``retry_limit`` (read by the provider's SmtpHook). Webhook Connection: see ``webhook_url``;
basic auth from login/password, or extra ``token`` (a Bearer token), extra ``headers``.
"""

from __future__ import annotations

import contextlib
import copy
import html
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from stationflow.formats.etc_names import parse as parse_etc_name

if TYPE_CHECKING:
    from stationflow.config import Alerts, Inventory

log = logging.getLogger("stationflow.alerts")

WEBHOOK_TIMEOUT_S = 10.0
_MAX_REASON = 2000  # characters of a server's answer kept in an alert
_BUILTIN_NAME_ATTR = (AttributeError, NameError, ImportError)  # their .name is not a file

#: Mail subject and HTML body of a failed upload (Jinja, rendered with the task context;
#: ``alert`` holds ``notification_fields(context)``).
SUBJECT = (
    "[stationflow] {{ alert.station or 'station ?' }}: upload of {{ alert.file or 'a file' }}"
    " failed{% if alert.status %} (HTTP {{ alert.status }}){% endif %}"
)
HTML_BODY = """\
<p>An upload to the ICOS Carbon Portal failed.</p>
<table>
<tr><th align="left">Station</th><td>{{ (alert.station or '?') | e }}</td></tr>
<tr><th align="left">File</th><td>{{ (alert.file or '?') | e }}</td></tr>
<tr><th align="left">HTTP status</th><td>{{ (alert.status or 'no answer') | e }}</td></tr>
<tr><th align="left">Server's reason</th><td>{{ (alert.reason or '') | e }}</td></tr>
<tr><th align="left">Error</th><td>{{ (alert.error or '') | e }}</td></tr>
<tr><th align="left">Task</th><td>{{ alert.dag_id | e }}.{{ alert.task_id | e }}\
 (run {{ alert.run_id | e }}, try {{ alert.try_number | e }})</td></tr>
</table>
{% if alert.log_url %}<p><a href="{{ alert.log_url | e }}">Task log</a></p>{% endif %}
"""


# ------------------------------------------------------------------ audit callback


def on_failure_alert(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback``: never raises (a callback error would hide the alert)."""
    from stationflow.state.audit import RunIds, audit
    from stationflow.state.db import connect

    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    params = context.get("params") or {}
    station = (getattr(ti, "task_id", "") or "").split(".")[0] if ti else None
    station = params.get("station") or (station if station and "-" in station else None)
    message = (
        f"ALERT {getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} failed:"
        f" {type(error).__name__ if error else 'unknown error'}: {error}"
    )
    log.error(message)
    try:
        with connect() as conn:
            audit(
                conn,
                "alert",
                message,
                level="ERROR",
                station=station,
                ids=RunIds.from_context(context),
            )
    except Exception:  # the log line above is the alert of last resort
        log.exception("could not record the alert in the audit log")


# ------------------------------------------------------------- what an alert says


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        value = None
        with contextlib.suppress(Exception):  # a property that fails is no information
            value = getattr(obj, name, None)
        if value is not None and value != "":
            return value
    return None


def _status(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        status = int(value)
    except (TypeError, ValueError):
        return None
    return status if 100 <= status <= 599 else None


def _causes(exc: BaseException, depth: int = 5) -> list[BaseException]:
    chain, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(chain) < depth:
        chain.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return chain


def _short(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text).strip()
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _fill(fields: dict[str, Any], src: Any) -> None:
    """Fill the fields still None from one object: an exception, or its ``result``."""
    is_exc = isinstance(src, BaseException)
    response = _attr(src, "response")
    if fields["station"] is None:
        fields["station"] = _attr(src, "station")
    if fields["file"] is None:
        fields["file"] = _attr(src, "etc_name", "file_name", "filename")
        if fields["file"] is None and not isinstance(src, _BUILTIN_NAME_ATTR):
            fields["file"] = _attr(src, "name")
    if fields["status"] is None:
        fields["status"] = _status(_attr(src, "http_status", "status_code", "status"))
        if fields["status"] is None and response is not None:
            fields["status"] = _status(_attr(response, "status_code"))
    if fields["reason"] is None:
        reason = _attr(src, "reason") if is_exc else _attr(src, "reason", "message")
        if reason is None and response is not None:
            reason = _attr(response, "text", "reason")
        fields["reason"] = _short(reason)


def alert_fields(exception: BaseException | str | None) -> dict[str, Any]:
    """``station``, ``file``, ``status``, ``reason`` and ``error`` of a failed upload.

    Read defensively, first found wins: the attributes upload exceptions carry
    (``station``, ``name`` or ``etc_name``, ``http_status``, ``reason``), then their
    ``result`` object (``name``, ``http_status``, ``message``), their ``requests``
    response (``status_code``, body text), and the same along ``__cause__``. The station
    falls back to the file name's, the reason to the exception's message; a value nobody
    knows is None. Never raises.
    """
    fields: dict[str, Any] = dict.fromkeys(("station", "file", "status", "reason", "error"))
    if exception is None:
        return fields
    if not isinstance(exception, BaseException):  # Airflow may hand over a message
        fields["reason"] = fields["error"] = _short(exception)
        return fields
    try:
        for exc in _causes(exception):
            _fill(fields, exc)
            result = _attr(exc, "result")
            if result is not None:
                _fill(fields, result)
        fields["station"] = _short(fields["station"])
        fields["file"] = _short(fields["file"])
        if fields["station"] is None and fields["file"]:
            with contextlib.suppress(ValueError):
                fields["station"] = parse_etc_name(fields["file"]).station
        fields["error"] = _short(f"{type(exception).__name__}: {exception}")
        if fields["reason"] is None:
            fields["reason"] = _short(str(exception)) or type(exception).__name__
    except Exception:  # an exception that cannot even be printed
        log.exception("could not read the alert fields of an exception")
        fields["error"] = fields["error"] or type(exception).__name__
    return fields


def notification_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """``alert_fields`` of the context's exception plus the task's ids and log URL.

    The station falls back to ``params.station``, then to a task id like ``FR-Lam.upload``.
    """
    fields = alert_fields(context.get("exception"))
    ti = context.get("task_instance") or context.get("ti")
    params = context.get("params") or {}
    task_id = _attr(ti, "task_id")
    if not fields["station"]:
        prefix = str(task_id or "").split(".")[0]
        fields["station"] = params.get("station") or (prefix if "-" in prefix else None)
    dag_run = context.get("dag_run")
    log_url = None
    try:
        log_url = ti.log_url if ti is not None else None
    except Exception:  # a task instance without a configured base URL
        log_url = None
    fields.update(
        dag_id=_attr(ti, "dag_id") or _attr(context.get("dag"), "dag_id"),
        task_id=task_id,
        run_id=_attr(dag_run, "run_id") or context.get("run_id") or _attr(ti, "run_id"),
        try_number=_attr(ti, "try_number"),
        log_url=log_url if isinstance(log_url, str) else None,
    )
    return fields


def alert_text(fields: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, plain text) of a failed upload, for the webhook (the mail uses the templates)."""
    status = f" (HTTP {fields['status']})" if fields.get("status") else ""
    subject = (
        f"[stationflow] {fields.get('station') or 'station ?'}:"
        f" upload of {fields.get('file') or 'a file'} failed{status}"
    )
    lines = [subject, f"Reason: {fields.get('reason') or '?'}"]
    if fields.get("task_id"):
        lines.append(
            f"Task: {fields.get('dag_id')}.{fields.get('task_id')}"
            f" (run {fields.get('run_id')}, try {fields.get('try_number')})"
        )
    if fields.get("log_url"):
        lines.append(f"Log: {fields['log_url']}")
    return subject, "\n".join(lines)


# ----------------------------------------------------------------------- channels


def webhook_url(connection: Any) -> str:
    """The webhook's URL from its Connection; never carries credentials.

    Scheme: extra ``scheme``, ``schema`` when it is http(s) (the HTTP hook's habit), the
    host's own ``https://`` or the conn type; default http. Host and port as given. Path:
    extra ``path`` (or ``endpoint``), a host written as a URL with a path, or ``schema``
    when it is not a scheme (what a Connection URI ``https://host/path`` gives).
    """
    c = connection
    extra = c.extra_dejson or {}
    host = (c.host or "").strip()
    schema = (c.schema or "").strip()
    schema_is_scheme = schema.lower() in ("http", "https")
    scheme = extra.get("scheme") or (schema if schema_is_scheme else "")
    if "://" in host:
        host_scheme, host = host.split("://", 1)
        scheme = scheme or host_scheme
    host, _, host_path = host.partition("/")
    host = host.rsplit("@", 1)[-1]  # never user:password@ from a pasted URL
    conn_type = (getattr(c, "conn_type", "") or "").lower()
    scheme = (scheme or (conn_type if conn_type in ("http", "https") else "http")).lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"webhook Connection {c.conn_id!r}: scheme {scheme!r} is not http(s)")
    if not host:
        raise ValueError(f"webhook Connection {c.conn_id!r} needs a host")
    path = extra.get("path") or extra.get("endpoint") or ("" if schema_is_scheme else schema)
    parts = [p.strip("/") for p in (host_path, str(path or "")) if p and p.strip("/")]
    port = f":{int(c.port)}" if c.port else ""
    return f"{scheme}://{host}{port}/{'/'.join(parts)}"


def post_webhook(
    conn_id: str, payload: Mapping[str, Any], *, timeout_s: float = WEBHOOK_TIMEOUT_S
) -> int:
    """POST ``payload`` as JSON to the webhook Connection; its HTTP status back.

    Raises on a refused connection, a timeout or a non-2xx answer (the callers catch);
    messages name the Connection, never its URL (a webhook URL is often a secret itself).
    """
    from stationflow.connections import get_connection

    c = get_connection(conn_id)
    extra = c.extra_dejson or {}
    url = webhook_url(c)
    headers = {"Content-Type": "application/json", "Accept": "application/json, */*;q=0.5"}
    headers.update({str(k): str(v) for k, v in (extra.get("headers") or {}).items()})
    auth = None
    if extra.get("token"):
        headers["Authorization"] = f"Bearer {extra['token']}"
    elif c.login or c.password:
        auth = (c.login or "", c.password or "")
    timeout_s = float(extra.get("timeout", timeout_s))
    try:
        resp = requests.post(
            url,
            data=json.dumps(dict(payload), default=str),
            headers=headers,
            auth=auth,
            timeout=(timeout_s, timeout_s),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise RuntimeError(f"webhook {conn_id!r}: no answer within {timeout_s:g} s") from None
    except requests.RequestException as exc:
        raise RuntimeError(f"webhook {conn_id!r}: {type(exc).__name__}") from None
    with resp:
        if not 200 <= resp.status_code < 300:
            raise RuntimeError(
                f"webhook {conn_id!r} answered HTTP {resp.status_code} {resp.reason or ''}".rstrip()
            )
        return resp.status_code


class WebhookNotifier(BaseNotifier):
    """POSTs ``{station, file, status, reason, dag_id, task_id, run_id, try_number, log_url}``
    (plus ``subject``, ``text`` and ``error``) as JSON to a Connection's URL; never raises."""

    def __init__(self, webhook_conn_id: str, *, timeout_s: float = WEBHOOK_TIMEOUT_S, **kwargs):
        super().__init__(**kwargs)
        self.webhook_conn_id = webhook_conn_id
        self.timeout_s = timeout_s

    def notify(self, context: Any) -> None:
        try:
            fields = notification_fields(context)
            subject, text = alert_text(fields)
            post_webhook(
                self.webhook_conn_id,
                {**fields, "subject": subject, "text": text},
                timeout_s=self.timeout_s,
            )
        except Exception as exc:
            log.error("alert webhook %r failed: %s", self.webhook_conn_id, exc)

    def __call__(self, *args) -> None:
        try:
            super().__call__(*args)
        except Exception:
            log.exception("alert webhook %r failed", self.webhook_conn_id)


class StationSmtpNotifier(SmtpNotifier):
    """The provider's SmtpNotifier with ``alert`` (``notification_fields``) in the template
    context; rendered on a copy (rendering is in place, and one notifier instance may serve
    many tasks in one process), and never raising (an error is logged)."""

    def _update_context(self, context: Any) -> Any:
        context = super()._update_context(context)
        context["alert"] = notification_fields(context)
        return context

    def __call__(self, *args) -> None:
        fresh = copy.copy(self)
        fresh.__dict__.pop("hook", None)  # a cached SmtpHook holds the previous connection
        try:
            SmtpNotifier.__call__(fresh, *args)
        except Exception:
            log.exception("alert mail via Connection %r failed", self.smtp_conn_id)


def notifiers(inventory: Inventory) -> list[BaseNotifier]:
    """The notifiers of ``defaults.alerts``: a mail when recipients are listed, a webhook
    POST when a webhook Connection is named (either may be absent: an empty list)."""
    alerts = inventory.defaults.alerts
    out: list[BaseNotifier] = []
    if alerts.email:
        out.append(
            StationSmtpNotifier(
                to=list(alerts.email),
                smtp_conn_id=alerts.smtp_connection_id,
                subject=SUBJECT,
                html_content=HTML_BODY,
            )
        )
    if alerts.webhook_connection_id:
        out.append(WebhookNotifier(alerts.webhook_connection_id))
    return out


def failure_callbacks(inventory: Inventory) -> list:
    """``on_failure_callback`` of upload tasks: the audit row first, then the notifiers."""
    return [on_failure_alert, *notifiers(inventory)]


# -------------------------------------------------------- outside a task callback


def _send_mail(alerts: Alerts, subject: str, body: str) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    content = f'<pre style="font-family: monospace">{html.escape(body)}</pre>'
    with SmtpHook(smtp_conn_id=alerts.smtp_connection_id) as hook:
        hook.send_email_smtp(to=list(alerts.email), subject=subject, html_content=content)


def alert_channels(inventory: Inventory) -> list[str]:
    """The channels ``send_alert`` tries: ``smtp:<conn id>``, ``webhook:<conn id>``."""
    alerts = inventory.defaults.alerts
    out = [f"smtp:{alerts.smtp_connection_id}"] if alerts.email else []
    if alerts.webhook_connection_id:
        out.append(f"webhook:{alerts.webhook_connection_id}")
    return out


def send_alert(
    inventory: Inventory, subject: str, body: str, *, fields: Mapping[str, Any]
) -> list[str]:
    """Send one alert by mail (``SmtpHook``) and to the webhook, outside a task callback.

    The webhook gets ``{**fields, "subject": ..., "text": body}``. Returns the channels that
    took it (``smtp:<conn id>``, ``webhook:<conn id>``); a failing channel is logged at
    ERROR and left out, never raised. With no channel configured, the log is the alert.
    """
    alerts = inventory.defaults.alerts
    sent: list[str] = []
    if alerts.email:
        try:
            _send_mail(alerts, subject, body)
            sent.append(f"smtp:{alerts.smtp_connection_id}")
        except Exception as exc:
            log.error("alert mail via Connection %r failed: %s", alerts.smtp_connection_id, exc)
    if alerts.webhook_connection_id:
        try:
            post_webhook(alerts.webhook_connection_id, {**fields, "subject": subject, "text": body})
            sent.append(f"webhook:{alerts.webhook_connection_id}")
        except Exception as exc:
            log.error("alert webhook %r failed: %s", alerts.webhook_connection_id, exc)
    if not alert_channels(inventory):
        log.warning("no alert channel configured (defaults.alerts): %s\n%s", subject, body)
    return sent
