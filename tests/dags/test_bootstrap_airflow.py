"""`stationflow bootstrap` against the session's real Airflow metadata database."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stationflow.bootstrap import BootstrapError, apply, load_bootstrap
from stationflow.cli import main
from stationflow.config import load_inventory
from stationflow.pools import required_pools

pytestmark = pytest.mark.airflow

PASSWORD = "pw-Zq8-bootstrap-test"
TOKEN = "tk-Wm3-bootstrap-test"

SETTINGS = """\
airflow:
  connections:
    - conn_id: sf_test_portal
      conn_type: http
      conn_host: portal.example.org
      conn_schema: https
      conn_login: FR-Lam
      conn_password: ${SF_TEST_PORTAL_PASSWORD}
      conn_extra:
        token: ${SF_TEST_TOKEN}
        timeout: 30
    - conn_id: sf_test_modbus
      conn_type: generic
      conn_host: ${SF_TEST_MODBUS_HOST:-serial.example.internal}
      conn_port: 502
  variables:
    - variable_name: sf_test_retention
      variable_value: ${SF_TEST_RETENTION:-30}
      variable_description: test retention
  pools:
    - {pool_name: sf_test_pool, pool_slot: 4, pool_description: test pool}
    - {pool_name: link_fr_aur, pool_slot: 3, pool_description: FR-Aur wider link}
"""


@pytest.fixture
def airflow_state(airflow_db):
    """Remove what the tests add; pools that existed before get their old settings back."""
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    before = {p.pool: (p.slots, p.description, p.include_deferred) for p in Pool.get_pools()}
    yield
    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id.like("sf_test_%")))
        session.execute(delete(Variable).where(Variable.key.like("sf_test_%")))
        for pool in Pool.get_pools(session=session):
            if pool.pool not in before:
                session.delete(pool)
            elif (pool.slots, pool.description, pool.include_deferred) != before[pool.pool]:
                pool.slots, pool.description, pool.include_deferred = before[pool.pool]


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SF_TEST_PORTAL_PASSWORD", PASSWORD)
    monkeypatch.setenv("SF_TEST_TOKEN", TOKEN)
    monkeypatch.delenv("SF_TEST_RETENTION", raising=False)
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(SETTINGS, encoding="utf-8")
    return path


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text


def test_bootstrap_applies_once_and_then_changes_nothing(
    airflow_state, settings_file, capsys, caplog
):
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable

    caplog.set_level(logging.DEBUG)
    assert main(["bootstrap", "--file", str(settings_file)]) == 0
    first = capsys.readouterr()
    assert "connections: 2 created, 0 updated, 0 unchanged" in first.out
    assert "variables: 1 created" in first.out

    c = Connection.get_connection_from_secrets("sf_test_portal")
    assert (c.conn_type, c.host, c.schema, c.login) == (
        "http",
        "portal.example.org",
        "https",
        "FR-Lam",
    )
    assert c.password == PASSWORD
    assert c.extra_dejson == {"token": TOKEN, "timeout": 30}
    m = Connection.get_connection_from_secrets("sf_test_modbus")
    assert (m.host, m.port, m.password) == ("serial.example.internal", 502, None)
    assert Variable.get("sf_test_retention") == "30"
    pools = {p.pool: p for p in Pool.get_pools()}
    assert pools["sf_test_pool"].slots == 4
    assert pools["link_fr_aur"].slots == 3  # the file wins over the inventory's 2
    assert set(required_pools(load_inventory())) <= set(pools)  # the inventory's are added

    # second run: nothing to do
    assert main(["bootstrap", "--file", str(settings_file)]) == 0
    second = capsys.readouterr()
    assert "connections: 0 created, 0 updated, 2 unchanged" in second.out
    assert "variables: 0 created, 0 updated, 1 unchanged" in second.out
    assert "pools: 0 created, 0 updated" in second.out
    summary = apply(load_bootstrap(settings_file, inventory=load_inventory()))
    assert not summary.changed
    _no_secret(
        first.out, first.err, second.out, second.err, caplog.text, "\n".join(summary.lines())
    )


def test_variables_survive_ui_edits_and_secrets_rotate(airflow_state, settings_file, monkeypatch):
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable

    inv = load_inventory()
    apply(load_bootstrap(settings_file, inventory=inv))
    Variable.set("sf_test_retention", "45")  # an operator's edit in the UI
    monkeypatch.setenv("SF_TEST_PORTAL_PASSWORD", "rotated-" + PASSWORD)
    summary = apply(load_bootstrap(settings_file, inventory=inv))
    assert summary.outcomes["variables"] == {"kept": ["sf_test_retention"]}
    assert summary.outcomes["connections"]["updated"] == ["sf_test_portal"]
    assert Variable.get("sf_test_retention") == "45"
    assert (
        Connection.get_connection_from_secrets("sf_test_portal").password == "rotated-" + PASSWORD
    )
    assert "rotated" not in "\n".join(summary.lines())

    summary = apply(load_bootstrap(settings_file, inventory=inv), overwrite_variables=True)
    assert summary.outcomes["variables"] == {"updated": ["sf_test_retention"]}
    assert Variable.get("sf_test_retention") == "30"


def test_secrets_backend_connections_are_checked_before_anything_is_written(
    airflow_state, tmp_path, monkeypatch
):
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable

    path = tmp_path / "s.yaml"
    path.write_text(
        "airflow:\n"
        "  connections:\n"
        "    - {conn_id: sf_test_vaulted, from_secrets_backend: true}\n"
        "  variables:\n"
        "    - {variable_name: sf_test_flag, variable_value: 'on'}\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("AIRFLOW_CONN_SF_TEST_VAULTED", raising=False)
    with pytest.raises(BootstrapError, match="sf_test_vaulted: marked from_secrets_backend"):
        apply(load_bootstrap(path))
    assert Variable.get("sf_test_flag", default_var=None) is None  # nothing written

    # any source Airflow resolves counts: here an AIRFLOW_CONN_ variable (EnvironmentVariables)
    monkeypatch.setenv("AIRFLOW_CONN_SF_TEST_VAULTED", '{"conn_type": "http", "host": "vault"}')
    summary = apply(load_bootstrap(path))
    assert summary.outcomes["connections"] == {"resolved": ["sf_test_vaulted"]}
    assert Variable.get("sf_test_flag") == "on"
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:  # resolved, never copied into the metadata database
        stored = session.scalar(select(Connection).where(Connection.conn_id == "sf_test_vaulted"))
    assert stored is None
