"""Every DAG imports cleanly and follows the project's policy."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS, dag_files


def test_there_are_dags_and_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found in dags/"


def test_every_dag_file_defines_a_dag(dagbag):
    files_with_dags = {Path(d.fileloc).name for d in dagbag.dags.values()}
    assert {p.name for p in dag_files()} <= files_with_dags


def test_policy(dagbag):
    problems = []
    for dag_id, dag in dagbag.dags.items():
        if "stationflow" not in dag.tags:
            problems.append(f"{dag_id}: tags must include 'stationflow' (has {dag.tags})")
        if not dag.doc_md:
            problems.append(f"{dag_id}: needs doc_md (what it does, for the UI)")
        for task in dag.tasks:
            if task.owner in ("", "airflow"):
                problems.append(f"{dag_id}.{task.task_id}: owner {task.owner!r}")
            if task.retries < 2 and "No retries" not in (task.doc_md or ""):
                problems.append(
                    f"{dag_id}.{task.task_id}: retries {task.retries} < 2"
                    " (or a docstring saying 'No retries: <why>')"
                )
    assert problems == []


def _dag_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("dag", "DAG"):
                yield node


def test_catchup_is_explicit_in_every_dag_definition():
    missing = []
    for path in dag_files():
        calls = list(_dag_calls(ast.parse(path.read_text(), str(path))))
        assert calls, f"{path.name}: no dag()/DAG() call found"
        missing += [
            f"{path.name}:{c.lineno}" for c in calls if "catchup" not in {k.arg for k in c.keywords}
        ]
    assert missing == [], "catchup must be set explicitly (True or False)"


def test_dag_files_do_no_work_at_parse_time():
    """Top-level code in a DAG file runs on every parse: only imports, defs and the DAG."""
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Expr, ast.Assign, ast.If)
    for path in dag_files():
        for node in ast.parse(path.read_text()).body:
            assert isinstance(node, allowed), f"{path.name}:{node.lineno}: {type(node).__name__}"


@pytest.mark.airflow
def test_parse_cost_report(airflow_db, capsys):
    """Airflow's own DagBag report: each DAG file's parse time, printed for the record."""
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(DAGS))
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [str(airflow), "dags", "report", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # log lines share stdout with the report: the report is the line holding a JSON array
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("[{")]
    report = json.loads(line)
    by_file = {Path(r["file"]).name: r for r in report}
    with capsys.disabled():
        print("\nDAG file parse cost (airflow dags report):")
        for name, r in sorted(by_file.items()):
            print(f"  {name:40s} {r['duration']:>16s}  dags={r['dag_num']} tasks={r['task_num']}")
    for path in dag_files():
        assert path.name in by_file, f"{path.name} missing from the parse report"
        assert int(by_file[path.name]["dag_num"]) >= 1
