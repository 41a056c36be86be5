"""Assemble ICOS ETC files by hand from the UI: merge fragments, fill gaps, write, record.

Trigger with the form (station, file type, logger and file numbers, day, fragment files).
The same as `stationflow assemble`: outputs, versions and lineage go to the ledger, every
step to the audit log; unreadable fragments are quarantined and fail the run (red in the UI).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id="icos_assemble",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["stationflow", "icos", "refine"],
    doc_md=__doc__,
    params={
        "station": Param("FR-Lam", type="string", pattern=r"^[A-Z]{2}-[A-Za-z][A-Za-z0-9]{2}$"),
        "file_type": Param("BM", type="string", enum=["EC", "BM", "ST", "SAHEAT", "PHEN"]),
        "logger": Param(1, type="integer", minimum=1, maximum=99),
        "file": Param(1, type="integer", minimum=1, maximum=99),
        "date": Param(type="string", format="date", description="the ETC day (local standard)"),
        "fragments": Param(type="string", description="fragment files: paths or globs"),
        "output_dir": Param("", type="string", description="default: STATIONFLOW_HOME/etc/<id>"),
    },
)
def icos_assemble():
    @task
    def assemble() -> list[dict]:
        from stationflow.refine.run import run_from_params
        from stationflow.state.audit import RunIds

        context = get_current_context()
        return run_from_params(dict(context["params"]), RunIds.from_context(context))

    assemble()


icos_assemble()
