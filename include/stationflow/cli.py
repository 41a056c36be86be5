"""The ``stationflow`` command: databases, inventory, the demo, and Airflow with our settings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stationflow.settings import load_settings

EPILOG = """\
environment:
  STATIONFLOW_HOME      data folder (embedded PostgreSQL, landing area, outputs); default .local/
  STATIONFLOW_CONFIG    station inventory; default config/stations.yaml
  STATIONFLOW_DB_URL    use this PostgreSQL for the state instead of the embedded server
  AIRFLOW__DATABASE__SQL_ALCHEMY_CONN   Airflow's metadata database (default: embedded)
  STATIONFLOW_AIRFLOW_PORT              port of the Airflow UI/API in the demo; default 8080

examples:
  stationflow db up                 start the embedded PostgreSQL, create and migrate
  stationflow config check          validate config/stations.yaml
  stationflow demo                  bring up the whole system and print where to look
  stationflow airflow dags list     any airflow command, with this project's environment
"""


def _db_up(args: argparse.Namespace) -> int:
    from stationflow.state.db import airflow_db_url, state_db_url
    from stationflow.state.migrate import migrate

    settings = load_settings()
    url = state_db_url(settings)
    applied = migrate(url, settings.sql_dir)
    for m in applied:
        print(f"applied {m.path.name}")
    print(f"state database up to date ({len(applied)} migration(s) applied now)")
    if args.airflow:
        import subprocess

        from stationflow.airflow_env import airflow_environment

        airflow_db_url(settings)
        subprocess.run(["airflow", "db", "migrate"], env=airflow_environment(settings), check=True)
        print("airflow metadata database up to date")
    return 0


def _db_url(args: argparse.Namespace) -> int:
    from stationflow.state.db import airflow_db_url, state_db_url

    settings = load_settings()
    print(airflow_db_url(settings) if args.airflow else state_db_url(settings))
    return 0


def _db_status(args: argparse.Namespace) -> int:
    from stationflow.state.db import state_db_url
    from stationflow.state.migrate import status

    settings = load_settings()
    pending = 0
    for s in status(state_db_url(settings), settings.sql_dir):
        when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else "PENDING"
        pending += s.applied_at is None
        print(f"{s.migration.path.name:40s} {when}")
    return 1 if pending else 0


def _db_stop(args: argparse.Namespace) -> int:
    from stationflow.state import embedded

    settings = load_settings()
    print("stopped" if embedded.stop(settings.pgdata) else "embedded PostgreSQL was not running")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from stationflow.config import ConfigError, load_inventory

    try:
        inv = load_inventory(args.path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    for st in inv.stations:
        files = ", ".join(f"{f.type} L{f.logger_number:02d}_F{f.file_number:02d}" for f in st.files)
        print(f"station {st.id}: UTC{st.utc_offset_hours:+g}, {len(st.loggers)} loggers; {files}")
    for net in inv.sensor_networks:
        print(f"network {net.id}: {len(net.devices)} devices, {len(net.indicators)} indicators")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stationflow import demo

    settings = load_settings()
    info = demo.start(settings, timeout=args.timeout)
    print(f"Airflow UI:  {info.url}")
    print(f"user:        {info.user}")
    print(f"password:    {info.password or '(see AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS)'}")
    print(f"DAGs:        {', '.join(info.dag_ids) or '(none parsed yet)'}")
    if info.sample_run:
        print(
            f"first run:   icos_assemble {info.sample_run} (the real LoggerNet sample ->"
            f" {settings.home / 'etc' / 'FR-Lam'})"
        )
    runs = info.runs or {}
    if "icos_collect" in runs:
        print(
            f"collection:  icos_poll every minute, icos_collect every 10 min (first run"
            f" {runs['icos_collect']}) -> {settings.home / 'landing'}"
        )
    if "smartem_harvest" in runs:
        print(
            f"harvest:     smartem_harvest every hour (first run {runs['smartem_harvest']}):"
            " Whale API + influxd -> smartem_raw.timeseries"
        )
        print(
            "refine:      smartem_refine on every harvest (the raw Asset) ->"
            " smartem_refined.timeseries; smartem_last every 10 min ->"
            " smartem_rt.v_last_measurements"
        )
        for conn_id, url in demo.publish_targets(settings).items():
            print(f"publish:     smartem_publish on every refine -> {conn_id} {url}")
    for dag_id, run_ids in (info.backfills or {}).items():
        what = "ETC days" if dag_id.startswith("icos_daily_") else "half-hours"
        print(f"backfill:    {dag_id} {len(run_ids)} {what}: {' '.join(run_ids)}")
    if info.password:
        print(
            f"completeness: {info.url}/plugin/completeness (files per station and day, hours"
            " per sensor network; also under Completeness in the UI menu)"
        )
    for name, pid in (info.services or {}).items():
        print(f"{name + ':':<12} pid {pid}, log {settings.log_dir / (name + '.log')}")
    print(f"log:         {info.log}")
    print("stop with:   make stop")
    for err in info.import_errors:
        print(f"IMPORT ERROR {err}", file=sys.stderr)
    return 1 if info.import_errors else 0


def _stop(args: argparse.Namespace) -> int:
    from stationflow import demo

    stopped = demo.stop(load_settings())
    print("\n".join(f"stopped {s}" for s in stopped) or "nothing started by the demo is running")
    return 0


def _sim(args: argparse.Namespace) -> int:
    from stationflow.config import load_inventory
    from stationflow.settings import load_settings as settings_now

    settings = settings_now()
    if args.sim_command == "serve":  # the background process itself (airflow environment)
        from stationflow.sim.network import serve

        serve(load_inventory(), settings.home)
        return 0
    if args.sim_command == "setup":  # the Connections and pools the network needs
        from stationflow.pools import ensure_pools
        from stationflow.sim.network import ensure_connections

        inv = load_inventory()
        made = ensure_connections(inv) + ensure_pools(inv)
        print("\n".join(f"created {m}" for m in made) or "connections and pools in place")
        return 0
    from stationflow import demo

    if args.sim_command == "up":
        pids = demo.start_network(settings)
        print("\n".join(f"{name}: pid {pid}" for name, pid in pids.items()))
    else:
        stopped = demo.stop_network(settings)
        print("\n".join(f"stopped {s}" for s in stopped) or "no simulator was running")
    return 0


OUTPUT_FIELDS = ("device_id", "name", "unit", "day", "hour", "time", "value", "value_min",
                 "value_max", "sample_count", "lon", "lat")  # fmt: skip


def _refine_records(args: argparse.Namespace) -> int:
    import orjson

    from stationflow.refine.records.refiner import Calibration, refine
    from stationflow.refine.records.samples import records_from_rows

    try:
        rows = orjson.loads(Path(args.input).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        print(f"stationflow: error: {args.input}: {e}", file=sys.stderr)
        return 2
    records = records_from_rows(rows, args.input)
    indicators = [i.strip() for i in args.indicators.split(",")] if args.indicators else None
    calibration = Calibration()
    if args.network:
        from stationflow.config import load_inventory
        from stationflow.refine.records.tasks import ase_calibration, calibration_for

        net = load_inventory().network(args.network)
        indicators = indicators or net.indicators
        calibration = Calibration(ase=ase_calibration(net))
        if args.db_models:
            from stationflow.state.db import connect

            with connect() as conn:
                calibration = calibration_for(conn, net)
    result = refine(records, indicators, calibration)
    out = [{k: r.as_dict()[k] for k in OUTPUT_FIELDS} for r in result.rows]
    Path(args.output).write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    for _rec, why in result.rejected:
        print(f"rejected: {why}", file=sys.stderr)
    for what, n in sorted(result.bad_sample_totals().items()):
        print(f"skipped samples: {what}: {n}", file=sys.stderr)
    for uid, name, value in result.out_of_range:
        print(f"out of range: {uid} {name} = {value:g}", file=sys.stderr)
    for name, why in sorted(result.skipped.items()):
        print(f"not computed: {name}: {why}", file=sys.stderr)
    print(
        f"{len(out)} refined values from {len(records)} raw hours -> {args.output}", file=sys.stderr
    )
    return 1 if result.rejected or result.bad_samples else 0


def _ftp_server(args: argparse.Namespace) -> int:
    from stationflow.collect.ftp_push import run_push_server
    from stationflow.config import load_inventory
    from stationflow.sim.network import plan

    settings = load_settings()
    inv = load_inventory()
    port = args.port or plan(inv).push_port
    passive = None
    if args.passive_ports:
        lo, _, hi = args.passive_ports.partition("-")
        passive = range(int(lo), int(hi or lo) + 1)
    print(f"FTP push server on {args.host}:{port}, landing in {settings.landing_dir}", flush=True)
    run_push_server(
        inv, args.host, port, settings.spool_dir, settings.landing_dir, passive_ports=passive
    )
    return 0


def _pools(args: argparse.Namespace) -> int:
    from stationflow.config import load_inventory
    from stationflow.pools import ensure_pools

    made = ensure_pools(load_inventory())
    print("\n".join(f"created pool {m}" for m in made) or "every pool the inventory needs exists")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from stationflow.bootstrap import BootstrapError, apply, load_bootstrap, plan_lines
    from stationflow.config import ConfigError, load_inventory

    try:
        b = load_bootstrap(args.file, inventory=load_inventory())
    except ConfigError as exc:  # the settings file's (a BootstrapError) or the inventory's
        print(exc, file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(plan_lines(b)))
        print("dry run: nothing written")
        return 0
    try:
        summary = apply(b, overwrite_variables=args.overwrite_variables)
    except BootstrapError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"bootstrap from {b.source}")
    print("\n".join(summary.lines()))
    return 0


def _airflow(args: argparse.Namespace) -> int:
    from stationflow.airflow_env import airflow_environment, venv_bin

    env = airflow_environment(load_settings())
    argv = [str(venv_bin() / "airflow"), *args.args]
    os.execve(argv[0], argv, env)  # replaces this process: exit code and signals pass through
    return 127  # pragma: no cover


def _columns_map(path: str | None) -> dict[str, str] | None:
    """A YAML mapping or a two-column CSV: logger column -> ICOS variable name."""
    if not path:
        return None
    import csv
    from pathlib import Path

    import yaml

    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".csv"):
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
        mapping = {r[0].strip(): r[1].strip() for r in rows}
    else:
        mapping = yaml.safe_load(text)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"{path}: expected a mapping of logger column -> ICOS variable name")
    return {str(k): v for k, v in mapping.items()}


def _assemble(args: argparse.Namespace) -> int:
    import json
    from datetime import date
    from pathlib import Path

    from stationflow.refine.run import assemble_and_record, make_request

    try:
        req = make_request(
            args.station,
            args.type,
            args.logger,
            args.file,
            date.fromisoformat(args.date),
            Path(args.output_dir),
            utc_offset=args.utc_offset,
            interval_s=None if args.interval == "auto" else float(args.interval),
            missing=args.missing,
            layout=args.layout,
            columns_map=_columns_map(args.columns_map),
            extension=args.extension,
            new_columns=args.new_columns,
            quarantine_dir=Path(args.quarantine_dir) if args.quarantine_dir else None,
        )
    except ValueError as exc:
        print(f"stationflow: error: {exc}", file=sys.stderr)
        return 2
    result = assemble_and_record(req, [Path(p) for p in args.fragments], ledger=not args.no_ledger)
    for o in result.outputs:
        print(json.dumps(o.report))
    for issue in result.issues:
        print(f"{issue.level}: {issue}", file=sys.stderr)
    if not result.outputs:
        print("stationflow: no output: no usable row for that day", file=sys.stderr)
    return 1 if result.has_errors or not result.outputs else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stationflow",
        description="Environmental-station data from the field to the archives, with Airflow 3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser(
        "db",
        help="the PostgreSQL state database",
        description=(
            "The state database (ledger, audit log, sync-tracking). Without STATIONFLOW_DB_URL it"
            " lives in the embedded PostgreSQL under STATIONFLOW_HOME/pg, started on demand."
        ),
    )
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser(
        "up",
        help="start (embedded), create and migrate the state database",
        description="Start the embedded server if needed, create the databases"
        " and apply pending sql/NNN_*.sql migrations, each exactly once.",
    )
    up.add_argument(
        "--airflow",
        action="store_true",
        help="also run `airflow db migrate` on Airflow's metadata database",
    )
    up.set_defaults(func=_db_up)
    url = dbsub.add_parser("url", help="print the state database URL (starts it if embedded)")
    url.add_argument("--airflow", action="store_true", help="print Airflow's metadata DB URL")
    url.set_defaults(func=_db_url)
    dbsub.add_parser(
        "status", help="list migrations, applied or pending (exit 1 if pending)"
    ).set_defaults(func=_db_status)
    dbsub.add_parser("stop", help="stop the embedded PostgreSQL server").set_defaults(func=_db_stop)

    cfg = sub.add_parser("config", help="the station inventory")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    chk = cfgsub.add_parser(
        "check",
        help="validate stations.yaml; every problem with its line",
        description="Validate the inventory and print a summary (exit 2 if"
        " it is wrong, listing each problem as file:line: path: message).",
    )
    chk.add_argument("path", nargs="?", help="inventory file (default: STATIONFLOW_CONFIG)")
    chk.set_defaults(func=_config_check)

    asm = sub.add_parser(
        "assemble",
        help="merge fragments, fill gaps, write the ETC file(s) of one day",
        description="Merge the fragments of one logger table (any order, overlaps, duplicates),"
        " detect the sampling interval, fill every missing timestamp of the ETC day (or of each"
        " EC/PHEN half-hour) with the missing code and write the ETC-named file(s). Prints one"
        " JSON report per file; unreadable fragments are moved to the quarantine folder."
        " Defaults come from the inventory when the station and file are in it."
        " Exit 0: all good; 1: written, but some input was bad (see stderr); 2: usage.",
    )
    asm.add_argument("--station", required=True, help="ICOS station id, e.g. FR-Lam")
    asm.add_argument("--type", required=True, choices=["EC", "BM", "ST", "SAHEAT", "PHEN"])
    asm.add_argument("--logger", required=True, type=int, help="ETC logger number (L..)")
    asm.add_argument("--file", required=True, type=int, help="ETC file number (F..)")
    asm.add_argument("--date", required=True, help="the ETC day, YYYY-MM-DD (local standard)")
    asm.add_argument("--utc-offset", type=float, help="hours; default: the station's")
    asm.add_argument("--interval", default="auto", help="'auto' (detect) or SECONDS")
    asm.add_argument("--missing", type=float, help="missing-value code (default -9999)")
    asm.add_argument("--layout", choices=["toa5", "etc"], help="default: the file's or toa5")
    asm.add_argument("--columns-map", help="YAML or CSV: logger column -> ICOS name (etc)")
    asm.add_argument("--extension", choices=["csv", "dat", "txt"], help="daily files' ext.")
    asm.add_argument(
        "--new-columns",
        choices=["report", "next-file"],
        default="report",
        help="a fragment with another column set: report it, or write it under"
        " the next file number",
    )
    asm.add_argument("--output-dir", required=True, help="where the ETC files are written")
    asm.add_argument("--quarantine-dir", help="default: OUTPUT_DIR/quarantine")
    asm.add_argument("--no-ledger", action="store_true", help="do not record in the state DB")
    asm.add_argument("fragments", nargs="+", help="fragment files (TOA5, TOB1, .ghg)")
    asm.set_defaults(func=_assemble)

    rr = sub.add_parser(
        "refine-records",
        help="refine raw Smart Emission hours (a JSON list of raw rows) into hourly values",
        description="Validate, convert, calibrate and aggregate raw sensor hours (rows of"
        " smartem_raw.timeseries as JSON: device_id, day, hour, data, device_type) into hourly"
        " indicator values, written as a JSON list. Bad samples are skipped and counted,"
        " bad records rejected (both on stderr). Exit 0: all good; 1: written, but some"
        " input was bad; 2: the input could not be read.",
    )
    rr.add_argument("--input", required=True, help="RAW.json: a list of raw-table rows")
    rr.add_argument("--output", required=True, help="REFINED.json: the refined rows")
    rr.add_argument("--indicators", help="comma-separated (default: the network's or all)")
    rr.add_argument("--network", help="take indicators and AirSensEUR models from the inventory")
    rr.add_argument(
        "--db-models",
        action="store_true",
        help="with --network: apply the newest calibration models in the state DB",
    )
    rr.set_defaults(func=_refine_records)

    dm = sub.add_parser(
        "demo",
        help="start PostgreSQL and Airflow, print the UI address",
        description="Bring up the demo: embedded PostgreSQL, both databases"
        " migrated, `airflow standalone` in the background. Safe to run again;"
        " prints the UI address and the admin password.",
    )
    dm.add_argument("--timeout", type=float, default=300, help="seconds to wait for Airflow")
    dm.set_defaults(func=_demo)
    sub.add_parser("stop", help="stop what `stationflow demo` started (by pid)").set_defaults(
        func=_stop
    )

    sim = sub.add_parser(
        "sim",
        help="the simulated station network (loggers, SmartFlux, relays)",
        description="Every remote peer of the inventory on loopback: LoggerNet folders,"
        " Modbus loggers (TCP and RTU behind a serial server), SmartFlux FTP servers, stations"
        " pushing files, devices and their relays. `up` also creates the Airflow Connections"
        " and pools they need (passwords generated once, kept only in Airflow).",
    )
    simsub = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    simsub.add_parser("up", help="start it in the background (and the FTP push server)")
    simsub.add_parser("down", help="stop what `sim up` started")
    simsub.add_parser("serve", help="run it in the foreground")
    simsub.add_parser("setup", help="create the Connections and pools only")
    sim.set_defaults(func=_sim)

    ftp = sub.add_parser(
        "ftp-server",
        help="receive files pushed by stations (one jailed account per station)",
        description="An FTP server for stations that push (SmartFlux, cameras): one account"
        " per ftp_push Connection of the inventory, each jailed to its own folder; every"
        " complete upload is landed and registered.",
    )
    ftp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ftp.add_argument("--port", type=int, help="default: the demo network's push port")
    ftp.add_argument("--passive-ports", help="passive data ports, e.g. 30000-30009 (behind NAT)")
    ftp.set_defaults(func=_ftp_server)

    from stationflow.publish.upload_cli import add_upload_parser

    add_upload_parser(sub)

    sub.add_parser(
        "pools",
        help="create the Airflow pools the inventory needs (station links, serial ports)",
    ).set_defaults(func=_pools)

    boot = sub.add_parser(
        "bootstrap",
        help="create/update Airflow Connections, Variables and pools from one file",
        description="Apply config/airflow_settings.yaml (next to the inventory; astro layout):"
        " connections upserted, variables created when missing (kept otherwise), pools"
        " upserted together with the pools the inventory needs. Secrets are ${VAR} placeholders"
        " expanded from the environment; a literal secret in the file is refused. Idempotent;"
        " prints what was created, updated or left unchanged, never a value. Exit 2: the file"
        " is wrong or a variable is missing.",
    )
    boot.add_argument("--file", help="settings file (default: airflow_settings.yaml next to"
                      " STATIONFLOW_CONFIG)")  # fmt: skip
    boot.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, expand and print the plan; no database is read or written",
    )
    boot.add_argument(
        "--overwrite-variables",
        action="store_true",
        help="set variables that exist with another value too (default: keep UI edits)",
    )
    boot.set_defaults(func=_bootstrap)

    af = sub.add_parser(
        "airflow",
        help="run an airflow command with this project's environment",
        description="e.g. `stationflow airflow backfill create --dag-id D"
        " --from-date 2026-11-01 --to-date 2026-11-03`",
    )
    af.add_argument("args", nargs=argparse.REMAINDER, help="arguments for `airflow`")
    af.set_defaults(func=_airflow)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except Exception as exc:  # one clear line for people; the traceback with -v
        if args.verbose:
            raise
        print(f"stationflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
