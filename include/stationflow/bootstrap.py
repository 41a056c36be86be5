"""Production bootstrap: Airflow Connections, Variables and pools from one file.

``config/airflow_settings.yaml`` (the layout of astro's ``airflow_settings.yaml``)::

    airflow:
      connections:
        - conn_id: icos_etc_fr_lam
          conn_type: http
          conn_host: data.icos-cp.eu
          conn_login: FR-Lam
          conn_password: ${ICOS_ETC_FR_LAM_PASSWORD}    # always a placeholder
        - conn_id: whale_api
          from_secrets_backend: true                   # checked, never written
      variables:
        - variable_name: stationflow_db_clean_retention_days
          variable_value: ${STATIONFLOW_DB_CLEAN_RETENTION_DAYS:-90}
      pools:
        - {pool_name: link_fr_lam, pool_slot: 3}

Rules:

- Secrets never sit in the file: ``conn_password``, every ``conn_extra`` key and every variable
  name that looks secret (password, token, secret, key, credential, ...) must be exactly one
  ``${VAR}`` placeholder (no default). A literal is refused, so it cannot reach git.
- Placeholders are expanded from the environment; ``${VAR:-default}`` (non-secret fields only)
  takes the default when VAR is unset or empty; ``$$`` is a literal ``$``. A missing variable
  is an error naming the file, the entry and the variable.
- Applying is idempotent. Connections are upserted (the file is authoritative). Variables are
  created when missing and otherwise kept (UI edits survive) unless ``overwrite_variables``.
  Pools: the inventory's (``stationflow.pools.required_pools``) plus the file's, the file
  winning; upserted. A ``from_secrets_backend`` connection is looked up with
  ``Connection.get_connection_from_secrets`` (env vars, the configured backend, the metadata
  DB) before anything is written; one that does not resolve stops the run.
- The summary names entries and outcomes only, never a value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stationflow.config import CONN_ID, ConfigError, Inventory, Problem, _locate

#: Names whose value is a secret: connection extra keys and variable names.
SECRET_NAME = re.compile(
    r"pass(word|wd)?|secret|token|(^|[_-])key($|[_-])|api_?key|credential|private", re.I
)
_PLACEHOLDER = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_ONLY_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_UNCLOSED = re.compile(r"(?<!\$)\$\{(?![A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\})")
DEFAULT_FILE_NAME = "airflow_settings.yaml"

ConnId = Annotated[str, Field(pattern=CONN_ID)]
Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,250}$")]


class BootstrapError(ConfigError):
    """The settings file is wrong, or a value it needs is missing; every problem listed."""

    title = "invalid Airflow settings"


# ------------------------------------------------------------------ the file, as written


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ConnectionEntry(_Model):
    conn_id: ConnId
    from_secrets_backend: bool = False
    conn_type: str | None = None
    conn_description: str | None = None
    conn_host: str | None = None
    conn_schema: str | None = None
    conn_login: str | None = None
    conn_password: str | None = None
    conn_port: int | str | None = None  # a str only as a placeholder
    conn_extra: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ConnectionEntry:
        if self.from_secrets_backend:
            given = [k for k, v in self if k not in ("conn_id", "from_secrets_backend") and v]
            if given:
                raise ValueError(
                    f"from_secrets_backend: only conn_id, the backend holds the rest (not {given})"
                )
        elif not self.conn_type:
            raise ValueError("conn_type is required (http, ftp, generic, smtp, ...)")
        return self


class VariableEntry(_Model):
    variable_name: Key
    variable_value: str | int | float | bool | dict | list
    variable_description: str | None = None


class PoolEntry(_Model):
    pool_name: Key
    pool_slot: int = Field(ge=-1)  # -1: unlimited
    pool_description: str = ""
    include_deferred: bool = False


class AirflowSection(_Model):
    connections: list[ConnectionEntry] = Field(default_factory=list)
    variables: list[VariableEntry] = Field(default_factory=list)
    pools: list[PoolEntry] = Field(default_factory=list)


class SettingsFile(_Model):
    airflow: AirflowSection


# ------------------------------------------------------------------ resolved values


@dataclass(frozen=True)
class ConnectionSpec:
    conn_id: str
    conn_type: str | None = None
    description: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    port: int | None = None
    password: str | None = field(default=None, repr=False)
    extra: dict[str, Any] | None = field(default=None, repr=False)
    from_secrets_backend: bool = False
    secret_vars: tuple[str, ...] = ()  # names of the environment variables holding secrets


@dataclass(frozen=True)
class VariableSpec:
    key: str
    value: str = field(repr=False)
    description: str | None = None
    secret: bool = False


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str
    include_deferred: bool = False
    source: str = "file"  # or "inventory"


@dataclass(frozen=True)
class Bootstrap:
    """Everything one file (plus the inventory's pools) puts into Airflow, resolved."""

    source: str
    connections: list[ConnectionSpec]
    variables: list[VariableSpec]
    pools: list[PoolSpec]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ placeholders


def expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with its ``${VAR}`` / ``${VAR:-default}`` replaced; and the missing names."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m["name"], m["default"]
        value = env.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            missing.append(name)
            return ""
        return value

    return _PLACEHOLDER.sub(sub, text), missing


def _walk_strings(value: Any, loc: tuple[Any, ...]):
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_strings(v, (*loc, i))


def _entry_name(data: dict, loc: tuple[Any, ...]) -> str:
    """' (conn_id X)' / ' (variable X)' / ' (pool X)' for messages, from the raw data."""
    if len(loc) < 3 or not isinstance(loc[2], int):
        return ""
    items = (data.get("airflow") or {}).get(loc[1]) or []
    item = items[loc[2]] if loc[2] < len(items) and isinstance(items[loc[2]], dict) else {}
    for key, label in (
        ("conn_id", "conn_id"),
        ("variable_name", "variable"),
        ("pool_name", "pool"),
    ):
        if key in item:
            return f" ({label} {item[key]})"
    return ""


def _secret_locations(entry: ConnectionEntry | VariableEntry) -> list[tuple[str, ...]]:
    """Where, inside one entry, a value is a secret."""
    if isinstance(entry, VariableEntry):
        return [("variable_value",)] if SECRET_NAME.search(entry.variable_name) else []
    out = [("conn_password",)] if entry.conn_password is not None else []
    for k, v in (entry.conn_extra or {}).items():
        if SECRET_NAME.search(str(k)):
            out.append(("conn_extra", k))
        elif isinstance(v, dict):  # nested, e.g. headers: {Authorization: ...}
            out += [("conn_extra", k, kk) for kk in v if SECRET_NAME.search(str(kk))]
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def _secret_problems(model: SettingsFile) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for kind, entries in (
        ("connections", model.airflow.connections),
        ("variables", model.airflow.variables),
    ):
        for i, entry in enumerate(entries):
            for path in _secret_locations(entry):
                value = _get(entry, path)
                if isinstance(value, str) and _ONLY_PLACEHOLDER.fullmatch(value):
                    continue
                hint = "${" + re.sub(r"\W", "_", _entry_id(entry)).upper() + "_PASSWORD}"
                out.append(
                    (
                        ("airflow", kind, i, *path),
                        "a secret must be an environment placeholder such as"
                        f" {hint} (no literal, no default): secrets never go into git",
                    )
                )
    return out


def _entry_id(entry: ConnectionEntry | VariableEntry) -> str:
    return entry.conn_id if isinstance(entry, ConnectionEntry) else entry.variable_name


def _duplicates(model: SettingsFile) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for kind, attr in (
        ("connections", "conn_id"),
        ("variables", "variable_name"),
        ("pools", "pool_name"),
    ):
        seen: set[str] = set()
        for i, entry in enumerate(getattr(model.airflow, kind)):
            name = getattr(entry, attr)
            if name in seen:
                out.append((("airflow", kind, i, attr), f"duplicate {attr} {name!r}"))
            seen.add(name)
    return out


# ------------------------------------------------------------------ loading


def default_path() -> Path:
    """``airflow_settings.yaml`` next to the station inventory (config/ in the image)."""
    from stationflow.settings import load_settings

    return load_settings().config_path.parent / DEFAULT_FILE_NAME


def parse_bootstrap(
    text: str,
    source: str = "<airflow_settings.yaml>",
    env: Mapping[str, str] | None = None,
    inventory: Inventory | None = None,
) -> Bootstrap:
    """Validate, check for literal secrets, expand placeholders; raises BootstrapError."""
    env = os.environ if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise BootstrapError(source, [Problem("", line, f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise BootstrapError(source, [Problem("", 1, "expected a mapping with `airflow:`")])

    def fail(problems: list[tuple[tuple[Any, ...], str]]) -> BootstrapError:
        out = []
        for loc, msg in problems:
            path, line = _locate(root, loc)
            out.append(Problem(path + _entry_name(data, loc), line, msg))
        return BootstrapError(source, out)

    try:
        model = SettingsFile.model_validate(data)
    except ValidationError as exc:
        raise fail([(tuple(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    problems = _secret_problems(model) + _duplicates(model)
    for loc, text_value in _walk_strings(data, ()):
        if _UNCLOSED.search(text_value):
            problems.append((loc, "malformed placeholder: use ${VAR} or ${VAR:-default}"))
    if problems:
        raise fail(problems)

    # expand every string of the validated data, then build the specs
    problems = []
    expanded: Any = model.model_dump(mode="json")

    def resolve(loc: tuple[Any, ...], value: Any) -> Any:
        if isinstance(value, str):
            out, missing = expand(value, env)
            problems.extend(
                (loc, f"environment variable {name} is not set") for name in dict.fromkeys(missing)
            )
            return out
        if isinstance(value, dict):
            return {k: resolve((*loc, k), v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve((*loc, i), v) for i, v in enumerate(value)]
        return value

    expanded = resolve((), expanded)
    connections, variables, pools = [], [], []
    for i, (entry, raw) in enumerate(
        zip(model.airflow.connections, expanded["airflow"]["connections"], strict=True)
    ):
        loc = ("airflow", "connections", i)
        secret_vars = tuple(
            _ONLY_PLACEHOLDER.fullmatch(_get(entry, p)).group(0)[2:-1]  # type: ignore[union-attr]
            for p in _secret_locations(entry)
        )
        for p, name in zip(_secret_locations(entry), secret_vars, strict=True):
            if env.get(name) == "":
                problems.append(((*loc, *p), f"environment variable {name} is empty"))
        port = raw["conn_port"]
        if isinstance(port, str):
            if port.strip().isdigit() and 0 < int(port) < 65536:
                port = int(port)
            elif port.strip() == "":
                port = None
            else:
                problems.append(((*loc, "conn_port"), f"port {port!r} is not a number 1-65535"))
                port = None
        connections.append(
            ConnectionSpec(
                conn_id=entry.conn_id,
                conn_type=raw["conn_type"],
                description=raw["conn_description"],
                host=raw["conn_host"] or None,
                schema=raw["conn_schema"] or None,
                login=raw["conn_login"] or None,
                port=port,
                password=raw["conn_password"] or None,
                extra=raw["conn_extra"] or None,
                from_secrets_backend=entry.from_secrets_backend,
                secret_vars=secret_vars,
            )
        )
    for i, (entry, raw) in enumerate(
        zip(model.airflow.variables, expanded["airflow"]["variables"], strict=True)
    ):
        value = raw["variable_value"]
        secret = bool(_secret_locations(entry))
        if secret and env.get(str(entry.variable_value)[2:-1]) == "":
            problems.append(
                (
                    ("airflow", "variables", i, "variable_value"),
                    f"environment variable {str(entry.variable_value)[2:-1]} is empty",
                )
            )
        text_value = value if isinstance(value, str) else json.dumps(value)
        variables.append(
            VariableSpec(entry.variable_name, text_value, raw["variable_description"], secret)
        )
    if problems:
        raise fail(problems)

    notes = []
    if inventory is not None:
        from stationflow.pools import required_pools

        listed = {p.pool_name for p in model.airflow.pools}
        for name, (slots, description) in required_pools(inventory).items():
            if name not in listed:
                pools.append(PoolSpec(name, slots, description, False, "inventory"))
        named = {c.conn_id for c in connections}
        for conn_id in inventory_connection_ids(inventory):
            if conn_id not in named:
                notes.append(
                    f"the inventory names connection {conn_id}, which this file does not define"
                    " (define it in the UI, as AIRFLOW_CONN_*, or in a secrets backend)"
                )
    for p, raw in zip(model.airflow.pools, expanded["airflow"]["pools"], strict=True):
        pools.append(
            PoolSpec(p.pool_name, p.pool_slot, raw["pool_description"], p.include_deferred, "file")
        )
    return Bootstrap(source, connections, variables, pools, notes)


def load_bootstrap(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    inventory: Inventory | None = None,
) -> Bootstrap:
    path = Path(path) if path else default_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BootstrapError(
            str(path), [Problem("", None, f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_bootstrap(text, str(path), env, inventory)


def inventory_connection_ids(inv: Inventory) -> list[str]:
    """Every Connection id the inventory names, in the order it names them."""
    ids: dict[str, None] = {}
    for st in inv.stations:
        ids[st.upload.connection_id] = None
        for lg in st.loggers:
            for conn_id in (
                getattr(lg.collect, "connection_id", None),
                lg.health_connection_id,
                lg.relay.connection_id if lg.relay else None,
            ):
                if conn_id:
                    ids[conn_id] = None
    for net in inv.sensor_networks:
        for item in [*net.harvest, *net.publish]:
            ids[item.connection_id] = None
    alerts = inv.defaults.alerts
    for conn_id in (alerts.smtp_connection_id, alerts.webhook_connection_id):
        if conn_id:
            ids[conn_id] = None
    return list(ids)


# ------------------------------------------------------------------ plan and apply


def plan_lines(b: Bootstrap) -> list[str]:
    """What applying would write, without a value (``--dry-run``); no database is read."""
    lines = [f"plan from {b.source}:"]
    for c in b.connections:
        if c.from_secrets_backend:
            lines.append(f"  connection {c.conn_id}: from the secrets backend (checked on apply)")
            continue
        fields = [
            n for n in ("host", "schema", "login", "port", "password") if getattr(c, n) is not None
        ]
        if c.extra:
            fields.append(f"extra[{', '.join(sorted(c.extra))}]")
        secrets = f"; secrets from ${', $'.join(c.secret_vars)}" if c.secret_vars else ""
        lines.append(f"  connection {c.conn_id} ({c.conn_type}): {', '.join(fields)}{secrets}")
    for v in b.variables:
        lines.append(f"  variable {v.key}{' (secret)' if v.secret else ''}: set if missing")
    for p in b.pools:
        lines.append(f"  pool {p.name}: {p.slots} slots ({p.source})")
    lines += [f"  note: {n}" for n in b.notes]
    return lines


KINDS = ("connections", "variables", "pools")


@dataclass
class Summary:
    """Names per kind and outcome (created, updated, unchanged, kept, resolved); no value."""

    outcomes: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, outcome: str, name: str) -> None:
        self.outcomes[kind].setdefault(outcome, []).append(name)

    def count(self, kind: str, outcome: str) -> int:
        return len(self.outcomes[kind].get(outcome, []))

    @property
    def changed(self) -> bool:
        return any(self.count(k, o) for k in KINDS for o in ("created", "updated"))

    def lines(self) -> list[str]:
        out = []
        for kind in KINDS:
            counts = ", ".join(
                f"{self.count(kind, o)} {o}"
                for o in ("created", "updated", "unchanged", "kept", "resolved")
                if o in ("created", "updated", "unchanged") or self.count(kind, o)
            )
            out.append(f"{kind}: {counts}")
            for outcome in ("created", "updated", "kept"):
                if self.count(kind, outcome):
                    out.append(f"  {outcome}: {', '.join(self.outcomes[kind][outcome])}")
        return out + [f"note: {n}" for n in self.notes]


def _conn_changes(existing: Any, c: ConnectionSpec) -> dict[str, Any]:
    want = {
        "conn_type": c.conn_type,
        "description": c.description,
        "host": c.host,
        "schema": c.schema,
        "login": c.login,
        "port": c.port,
        "password": c.password,
    }
    changes = {k: v for k, v in want.items() if (getattr(existing, k) or None) != (v or None)}
    if (existing.extra_dejson if existing.extra else {}) != (c.extra or {}):
        changes["extra"] = json.dumps(c.extra) if c.extra else None
    return changes


def check_secrets_backend(b: Bootstrap) -> list[str]:
    """conn_ids marked ``from_secrets_backend`` that Airflow resolves; raises if one does not."""
    from airflow.models.connection import Connection

    resolved, problems = [], []
    for c in b.connections:
        if not c.from_secrets_backend:
            continue
        try:
            Connection.get_connection_from_secrets(c.conn_id)
        except Exception as exc:
            problems.append(
                Problem(
                    f"connection {c.conn_id}",
                    None,
                    "marked from_secrets_backend but Airflow does not resolve it"
                    f" ({type(exc).__name__}); check AIRFLOW__SECRETS__BACKEND and its kwargs",
                )
            )
        else:
            resolved.append(c.conn_id)
    if problems:
        raise BootstrapError(b.source, problems)
    return resolved


def apply(b: Bootstrap, *, overwrite_variables: bool = False) -> Summary:
    """Upsert into Airflow's metadata database (needs its environment); idempotent."""
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    summary = Summary(notes=list(b.notes))
    for conn_id in check_secrets_backend(b):  # before writing: a missing one stops the run
        summary.add("connections", "resolved", conn_id)
    with create_session() as session:
        for c in b.connections:
            if c.from_secrets_backend:
                continue
            if os.environ.get(f"AIRFLOW_CONN_{c.conn_id.upper()}"):
                summary.notes.append(
                    f"AIRFLOW_CONN_{c.conn_id.upper()} is set: it shadows connection {c.conn_id}"
                )
            existing = session.scalar(select(Connection).where(Connection.conn_id == c.conn_id))
            if existing is None:
                session.add(
                    Connection(
                        conn_id=c.conn_id,
                        conn_type=c.conn_type,
                        description=c.description,
                        host=c.host,
                        schema=c.schema,
                        login=c.login,
                        port=c.port,
                        password=c.password,
                        extra=json.dumps(c.extra) if c.extra else None,
                    )
                )
                summary.add("connections", "created", c.conn_id)
                continue
            changes = _conn_changes(existing, c)
            for name, value in changes.items():
                setattr(existing, name, value)
            summary.add("connections", "updated" if changes else "unchanged", c.conn_id)
        for v in b.variables:
            existing = session.scalar(select(Variable).where(Variable.key == v.key))
            if existing is not None:
                same = existing.val == v.value and (existing.description or None) == (
                    v.description or None
                )
                if same or not overwrite_variables:
                    summary.add("variables", "unchanged" if same else "kept", v.key)
                    continue
            Variable.set(v.key, v.value, description=v.description, session=session)
            summary.add("variables", "created" if existing is None else "updated", v.key)
        for p in b.pools:
            existing = Pool.get_pool(p.name, session=session)
            if existing is not None and (
                existing.slots,
                existing.description or "",
                bool(existing.include_deferred),
            ) == (p.slots, p.description, p.include_deferred):
                summary.add("pools", "unchanged", p.name)
                continue
            Pool.create_or_update_pool(
                p.name, p.slots, p.description, p.include_deferred, session=session
            )
            summary.add("pools", "created" if existing is None else "updated", p.name)
    return summary
