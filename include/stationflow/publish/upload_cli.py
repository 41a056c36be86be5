"""``stationflow upload``: send ETC files to the ICOS Carbon Portal by hand.

The password is never an argument (it would show in ``ps`` and shell histories): it comes
from the Airflow Connection (``--conn``) or from the environment variable ``--password-env``
names. One JSON line per file on stdout; exit 0 when every file was accepted or skipped,
1 when any was refused or failed, 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DESCRIPTION = """\
PUT each FILE to the portal's /upload/etc/<md5>/<name>, as the station (HTTP Basic auth,
TLS verified). A refusal (400/403/404) is reported at once; server errors and timeouts are
retried with backoff; an MD5 mismatch is retried once after re-reading the file.
With the ledger (default), a file known there (same name and SHA-256 as an output_file) is
skipped if this endpoint already accepted it, and every attempt is recorded; a file not in
the ledger is uploaded without an upload row (its JSON line says so).
Exit 0: all accepted or skipped; 1: some refused or failed; 2: usage or configuration."""


def add_upload_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``upload`` to a ``stationflow`` sub-command set (``parser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "upload",
        allow_abbrev=False,  # `--password X` must not pass for `--password-env X`
        help="upload ETC files to the ICOS Carbon Portal (one JSON line per file)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--station", required=True, help="ICOS station id, e.g. FR-Lam")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--conn", metavar="CONN_ID", help="Airflow Connection of the endpoint")
    where.add_argument("--url", help="endpoint base URL, e.g. https://data.icos-cp.eu")
    p.add_argument("--user", help="with --url: the login (default: the station id)")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="with --url: the environment variable holding the station's password",
    )
    p.add_argument(
        "--allow-http",
        action="store_true",
        help="permit plain http to a host other than loopback (the password travels in clear)",
    )
    p.add_argument("--no-ledger", action="store_true", help="do not use the state database")
    p.add_argument("--retries", type=int, default=4, help="retries of 5xx/timeouts (default 4)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay, seconds")
    p.add_argument("--timeout", type=float, default=300.0, help="read timeout, seconds")
    p.add_argument("files", nargs="+", metavar="FILE", help="ETC-named files to upload")
    p.set_defaults(func=run_upload)
    return p


def _fail(message: str) -> int:
    print(f"stationflow upload: error: {message}", file=sys.stderr)
    return 2


def _line(r: Any, path: Path) -> str:
    return json.dumps(
        {
            "name": r.name,
            "path": str(path),
            "md5": r.md5 or None,
            "status": r.status,
            "http_status": r.http_status,
            "receipt": r.receipt,
            "message": r.message,
            "attempts": r.attempts,
            "output_file_id": r.output_file_id,
        }
    )


def run_upload(args: argparse.Namespace) -> int:
    """The handler: resolve the endpoint, upload every file, print what happened."""
    from stationflow.errors import PermanentError
    from stationflow.publish.icos_etc import (
        Endpoint,
        endpoint_from_connection,
        normalize_base_url,
        upload_paths,
    )

    allow_http = bool(args.allow_http)
    try:
        if args.conn:
            if args.user or args.password_env:
                return _fail("--user and --password-env go with --url; --conn has its own")
            ep, conn_allows = endpoint_from_connection(args.conn)
            allow_http = allow_http or conn_allows
        else:
            if not args.password_env:
                return _fail("--url needs --password-env VAR (the password is never an argument)")
            if not _ENV_NAME.fullmatch(args.password_env):  # never echo what may be a secret
                return _fail("--password-env takes the NAME of an environment variable")
            password = os.environ.get(args.password_env)
            if not password:
                return _fail(f"environment variable {args.password_env} is not set or empty")
            url = normalize_base_url(args.url, allow_http=allow_http)
            ep = Endpoint(url, args.user or args.station, password)
    except (PermanentError, ValueError) as exc:
        return _fail(str(exc))
    if ep.login != args.station:
        return _fail(
            f"the login {ep.login!r} is not the station {args.station!r}: the portal takes a"
            " station's files from its own account only"
        )
    paths = [Path(f) for f in args.files]
    client = {
        "base_url": ep.base_url,
        "login": ep.login,
        "password": ep.password,
        "allow_http": allow_http,
        "retries": max(0, args.retries),
        "backoff": args.backoff,
        "timeout": (10.0, args.timeout),
    }
    if args.no_ledger:
        results = upload_paths(None, args.station, paths, **client)
    else:
        from stationflow.state.db import connect

        with connect() as conn:
            results = upload_paths(conn, args.station, paths, **client)
    for r, path in zip(results, paths, strict=True):
        print(_line(r, path), flush=True)
    return 0 if all(r.ok for r in results) else 1
