"""Background services of the demo besides Airflow: the simulated network and the FTP push
server. Each runs as ``stationflow ...`` in its own session; its pid is recorded in
``<home>/run/<name>.json`` so it is stopped by pid, never by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from stationflow.settings import Settings

SERVICES = {
    "sim": ["sim", "serve"],
    "ftp-server": ["ftp-server"],
}


def _record(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.json"


def running(settings: Settings, name: str) -> psutil.Process | None:
    try:
        pid = json.loads(_record(settings, name).read_text())["pid"]
        proc = psutil.Process(pid)
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    cmd = " ".join(proc.cmdline()) if proc.is_running() else ""
    return proc if "stationflow" in cmd and " ".join(SERVICES[name]) in cmd else None


def start(settings: Settings, name: str, env: dict[str, str]) -> tuple[int, bool]:
    """(pid, started now); a running one is left as it is."""
    proc = running(settings, name)
    if proc is not None:
        return proc.pid, False
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with (settings.log_dir / f"{name}.log").open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "stationflow.cli", "-v", *SERVICES[name]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=settings.root,
        )
    _record(settings, name).write_text(json.dumps({"pid": popen.pid}))
    return popen.pid, True


def stop(settings: Settings, name: str, grace: float = 15) -> int | None:
    proc = running(settings, name)
    _record(settings, name).unlink(missing_ok=True)
    if proc is None:
        return None
    os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
    _, alive = psutil.wait_procs([proc], timeout=grace)
    for p in alive:
        p.kill()
    return proc.pid
