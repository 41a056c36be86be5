"""The one-file bootstrap of Connections, Variables and pools, without Airflow's database."""

from __future__ import annotations

import re

import pytest
import yaml

from stationflow.bootstrap import (
    SECRET_NAME,
    BootstrapError,
    expand,
    inventory_connection_ids,
    load_bootstrap,
    parse_bootstrap,
    plan_lines,
)
from stationflow.cli import main
from stationflow.config import load_inventory
from stationflow.pools import required_pools
from stationflow.settings import PROJECT_ROOT

SETTINGS = PROJECT_ROOT / "config" / "airflow_settings.yaml"
_PLACEHOLDER = re.compile(r"\$\{(\w+)(:-[^}]*)?\}")


def committed_env(value: str = "") -> dict[str, str]:
    """A value for every placeholder of the committed file that has no default."""
    lines = SETTINGS.read_text(encoding="utf-8").splitlines()
    text = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))
    found = [m[1] for m in _PLACEHOLDER.finditer(text) if not m[2]]
    return {name: value or f"s3cr3t-{name.lower()}" for name in found}


SMALL = """\
airflow:
  connections:
    - conn_id: portal
      conn_type: http
      conn_host: ${PORTAL_HOST:-portal.example.org}
      conn_port: ${PORTAL_PORT:-443}
      conn_login: FR-Lam
      conn_password: ${PORTAL_PASSWORD}
      conn_extra:
        token: ${PORTAL_TOKEN}
        path: /upload/$$literal
  variables:
    - variable_name: retention
      variable_value: ${RETENTION:-90}
  pools:
    - {pool_name: link_fr_lam, pool_slot: 5, pool_description: wider link}
"""


# ---------------------------------------------------------------- placeholders


def test_expand_takes_values_defaults_and_escapes():
    env = {"A": "1", "EMPTY": ""}
    assert expand("x${A}y", env) == ("x1y", [])
    assert expand("${B:-dflt}", env) == ("dflt", [])
    assert expand("${EMPTY:-dflt}", env) == ("dflt", [])  # like the shell's :-
    assert expand("${A:-dflt}", env) == ("1", [])
    assert expand("$${A} costs $$5", env) == ("${A} costs $5", [])
    assert expand("${B}/${C}", env) == ("/", ["B", "C"])


def test_placeholders_are_expanded_into_the_specs():
    env = {"PORTAL_PASSWORD": "pw-1", "PORTAL_TOKEN": "tk-1", "PORTAL_PORT": "8443"}
    b = parse_bootstrap(SMALL, "s.yaml", env)
    (c,) = b.connections
    assert (c.host, c.port, c.login, c.password) == ("portal.example.org", 8443, "FR-Lam", "pw-1")
    assert c.extra == {"token": "tk-1", "path": "/upload/$literal"}
    assert c.secret_vars == ("PORTAL_PASSWORD", "PORTAL_TOKEN")
    assert [(v.key, v.value) for v in b.variables] == [("retention", "90")]
    assert [(p.name, p.slots, p.source) for p in b.pools] == [("link_fr_lam", 5, "file")]
    assert "pw-1" not in repr(c) and "tk-1" not in repr(c)


def test_a_missing_variable_names_the_file_the_entry_and_the_variable():
    with pytest.raises(BootstrapError) as err:
        parse_bootstrap(SMALL, "deploy/settings.yaml", {"PORTAL_TOKEN": "t"})
    text = str(err.value)
    assert (
        "deploy/settings.yaml:8: airflow.connections[0].conn_password (conn_id portal):"
        " environment variable PORTAL_PASSWORD is not set"
    ) in text
    assert "PORTAL_TOKEN" not in text  # it is set
    assert len(err.value.problems) == 1


def test_an_empty_secret_is_refused():
    with pytest.raises(BootstrapError, match="environment variable PORTAL_PASSWORD is empty"):
        parse_bootstrap(SMALL, "s.yaml", {"PORTAL_PASSWORD": "", "PORTAL_TOKEN": "t"})


def test_a_bad_port_after_expansion_is_an_error():
    env = {"PORTAL_PASSWORD": "p", "PORTAL_TOKEN": "t", "PORTAL_PORT": "https"}
    with pytest.raises(BootstrapError, match=r"conn_port \(conn_id portal\): port 'https'"):
        parse_bootstrap(SMALL, "s.yaml", env)


# ---------------------------------------------------------------- literal secrets


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conn_password", "hunter2"),
        ("conn_password", "${PW:-hunter2}"),  # a default would be a literal secret
        ("conn_password", "pre-${PW}"),
        ("conn_extra", {"api_key": "abc"}),
        ("conn_extra", {"headers": {"X-Secret": "abc"}}),
        ("conn_extra", {"token": "${TOKEN:-abc}"}),
    ],
)
def test_a_literal_secret_is_refused(field, value):
    data = {"airflow": {"connections": [{"conn_id": "c1", "conn_type": "http", field: value}]}}
    text = yaml.safe_dump(data)
    with pytest.raises(BootstrapError) as err:
        parse_bootstrap(text, "s.yaml", {"PW": "x", "TOKEN": "y"})
    message = str(err.value)
    assert f"airflow.connections[0].{field}" in message and "(conn_id c1)" in message
    assert "secrets never go into git" in message
    assert "hunter2" not in message and "abc" not in message


def test_a_secret_looking_variable_must_be_a_placeholder():
    text = "airflow:\n  variables:\n    - {variable_name: api_token, variable_value: abc}\n"
    with pytest.raises(
        BootstrapError, match=r"variables\[0\]\.variable_value \(variable api_token"
    ):
        parse_bootstrap(text, "s.yaml", {})
    ok = "airflow:\n  variables:\n    - {variable_name: api_token, variable_value: '${T}'}\n"
    (v,) = parse_bootstrap(ok, "s.yaml", {"T": "abc"}).variables
    assert v.secret and v.value == "abc"


def test_secret_names():
    for name in ("password", "passwd", "token", "api_key", "apikey", "client_secret", "key"):
        assert SECRET_NAME.search(name), name
    for name in ("path", "base_path", "timeout", "from_email", "monkey", "keyboard"):
        assert not SECRET_NAME.search(name), name


def test_shape_errors_are_listed_with_lines():
    text = """\
airflow:
  connections:
    - conn_id: a
      conn_host: h
    - conn_id: b
      from_secrets_backend: true
      conn_host: h
    - {conn_id: a, conn_type: http}
  pools:
    - {pool_name: p, pool_slot: -2}
"""
    with pytest.raises(BootstrapError) as err:
        parse_bootstrap(text, "s.yaml", {})
    message = str(err.value)
    assert "s.yaml:3: airflow.connections[0] (conn_id a):" in message
    assert "conn_type is required" in message
    assert "only conn_id, the backend holds the rest" in message
    assert "s.yaml:10: airflow.pools[0].pool_slot (pool p)" in message


def test_duplicates_and_malformed_placeholders():
    text = """\
airflow:
  connections:
    - {conn_id: a, conn_type: http, conn_host: '${HOST'}
    - {conn_id: a, conn_type: http}
"""
    with pytest.raises(BootstrapError) as err:
        parse_bootstrap(text, "s.yaml", {})
    assert "malformed placeholder" in str(err.value)
    assert "duplicate conn_id 'a'" in str(err.value)


def test_secrets_backend_entries_carry_nothing():
    text = "airflow:\n  connections:\n    - {conn_id: vaulted, from_secrets_backend: true}\n"
    (c,) = parse_bootstrap(text, "s.yaml", {}).connections
    assert c.from_secrets_backend and c.password is None and c.conn_type is None


# ---------------------------------------------------------------- the committed file


def test_committed_settings_validate_and_cover_the_inventory():
    inv = load_inventory()
    b = load_bootstrap(SETTINGS, env=committed_env(), inventory=inv)
    defined = {c.conn_id for c in b.connections}
    assert set(inventory_connection_ids(inv)) <= defined, b.notes
    assert b.notes == []
    assert {p.name for p in b.pools} >= set(required_pools(inv))
    assert {v.key for v in b.variables} == {"stationflow_db_clean_retention_days"}
    (v,) = b.variables
    assert v.value == "90"
    with_secret = [c.conn_id for c in b.connections if c.password]
    assert "icos_etc_fr_lam" in with_secret and "whale_api" in with_secret


def test_committed_settings_hold_no_literal_secret():
    data = yaml.safe_load(SETTINGS.read_text(encoding="utf-8"))
    offenders = []

    def walk(value, where, secret):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}", secret or bool(SECRET_NAME.search(str(k))))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]", secret)
        elif secret and not (isinstance(value, str) and re.fullmatch(r"\$\{\w+\}", value)):
            offenders.append(where)

    walk(data, "", False)
    assert offenders == []
    # and the loader agrees: without the environment, every secret is reported missing
    with pytest.raises(BootstrapError) as err:
        load_bootstrap(SETTINGS, env={})
    assert {p.message.split()[2] for p in err.value.problems} == set(committed_env())


def test_dry_run_plan_names_variables_never_values(capsys, monkeypatch):
    env = committed_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    b = load_bootstrap(SETTINGS, env=env, inventory=load_inventory())
    text = "\n".join(plan_lines(b))
    assert "icos_etc_fr_lam (http)" in text and "$ICOS_ETC_FR_LAM_PASSWORD" in text
    assert "pool link_fr_lam: 2 slots (inventory)" in text
    for value in env.values():
        assert value not in text
    # the command line: --dry-run prints the same plan and reads no database
    assert main(["bootstrap", "--file", str(SETTINGS), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "dry run: nothing written" in out.out
    for value in env.values():
        assert value not in out.out + out.err


def test_cli_reports_a_missing_variable_with_exit_2(capsys, monkeypatch):
    for name in committed_env():
        monkeypatch.delenv(name, raising=False)
    assert main(["bootstrap", "--dry-run"]) == 2  # default: next to the inventory
    err = capsys.readouterr().err
    assert "airflow_settings.yaml:" in err and "ICOS_ETC_FR_LAM_PASSWORD is not set" in err
