"""Where the project keeps its files and which databases it uses, read from the environment.

Every process (CLI, Airflow scheduler, task runners, tests) resolves the same answers
from the same variables, so nothing needs to be passed around by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The checkout (or image folder) holding dags/, sql/, config/: include/stationflow/settings.py
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    root: Path
    home: Path
    config_path: Path
    state_db_url: str | None
    airflow_db_url: str | None
    airflow_port: int

    @property
    def pgdata(self) -> Path:
        return self.home / "pg"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def landing_dir(self) -> Path:
        """Immutable copies of every collected fragment: <station>/<logger>/<table>/."""
        return self.home / "landing"

    @property
    def spool_dir(self) -> Path:
        """Files still being made here: polled tables, FTP uploads, partial downloads."""
        return self.home / "spool"

    @property
    def sql_dir(self) -> Path:
        return self.root / "sql"

    @property
    def dags_dir(self) -> Path:
        return self.root / "dags"

    @property
    def plugins_dir(self) -> Path:
        return self.root / "plugins"

    @property
    def uses_embedded_db(self) -> bool:
        """True when at least one of the two databases lives in the embedded server."""
        return self.state_db_url is None or self.airflow_db_url is None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read STATIONFLOW_* (and the Airflow DB override) from ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    root = Path(env.get("STATIONFLOW_ROOT") or PROJECT_ROOT).resolve()
    home = Path(env.get("STATIONFLOW_HOME") or root / ".local").resolve()
    config = Path(env.get("STATIONFLOW_CONFIG") or root / "config" / "stations.yaml")
    port = env.get("STATIONFLOW_AIRFLOW_PORT", "8080")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"STATIONFLOW_AIRFLOW_PORT must be a TCP port number, got {port!r}")
    return Settings(
        root=root,
        home=home,
        config_path=config,
        state_db_url=env.get("STATIONFLOW_DB_URL") or None,
        airflow_db_url=env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or None,
        airflow_port=int(port),
    )
