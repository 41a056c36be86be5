"""The lab's receiving FTP server, for stations that push their files (SmartFlux, cameras).

One account per ``ftp_push`` Connection of the inventory (login and password come from the
Airflow Connection, never from stations.yaml), each jailed to its own folder
``<spool>/ftp_push/<station>/<login>/``. What a station may do there is ``elwm``:

- ``e`` change folder, ``l`` list (LIST, NLST, MLSD, SIZE, MDTM), ``w`` store (STOR),
  ``m`` make folders;
- no ``r`` (nothing is read back), no ``a`` (APPE), no ``d`` (DELE, RMD), no ``f`` (RNFR,
  RNTO), no ``M``/``T`` (SITE CHMOD, MFMT); STOU is refused (a file keeps its own name).

Every path a command names is checked against the raw argument before pyftpdlib
normalises it: a path that climbs out of the jail (``../../x``, ``CWD ..`` at the top) is
refused, and a STOR name whose parts are not safe (``landing.safe_name``: only
``[A-Za-z0-9._-]``, no leading dot) or whose folder does not exist (``/etc/x``) gets a 553.

An upload is written as ``.<name>.part`` next to its final name: only a complete transfer
is renamed to ``<name>`` and handed to ``on_received``; an interrupted one stays a hidden
partial, is never landed, and is started over when the station sends the file again
(a STOR truncates it; REST + STOR on the same name continues it). A file already there
under that name is never overwritten: identical bytes are simply received again, other
bytes are kept as ``<stem>.<n><suffix>``. Note that FTP stream mode cannot tell an upload
the client closed early from a complete one; such a file lands and, if it is a truncated
.ghg, is quarantined by the landing as unreadable (nothing is lost).
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hmac
import logging
import os
import posixpath
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import _ERRNOS_DISCONNECTED, _ERRNOS_RETRY, IOLoop, _RetryError
from pyftpdlib.servers import FTPServer, ThreadedFTPServer

from stationflow.collect.ftp_pull import default_table, is_table
from stationflow.collect.landing import Landed, land, safe_name
from stationflow.config import FtpPushCollect, Inventory
from stationflow.connections import MissingConnection, get_connection
from stationflow.errors import PermanentError
from stationflow.state.audit import audit
from stationflow.state.db import connect

PERMISSIONS = "elwm"  # list, change folder, store, make folders: nothing else
STEP = "collect.ftp_push"
log = logging.getLogger("stationflow.collect.ftp_push")

# commands whose argument is a path (CDUP has none but means "..")
_PATH_COMMANDS = frozenset(
    {
        *("CWD", "XCWD", "CDUP", "XCUP", "LIST", "NLST", "MLSD", "MLST", "SIZE", "MDTM"),
        *("STAT", "STOR", "APPE", "MKD", "XMKD", "RMD", "XRMD", "DELE", "RNFR", "RNTO"),
        *("RETR", "MFMT"),
    }
)
_STORE_COMMANDS = frozenset({"STOR", "APPE"})
_MKDIR_COMMANDS = frozenset({"MKD", "XMKD"})


@dataclass(frozen=True)
class Account:
    """One station's login on the receiving server."""

    station: str
    logger_ids: tuple[str, ...]
    login: str
    password: str = field(repr=False)
    folder: Path | None = None  # the jail; default <spool>/ftp_push/<station>/<login>


ReceivedCallback = Callable[[Account, Path], Any]
# (account or None before login, level, message): refused commands, failed logins,
# interrupted uploads, files that could not be landed
ProblemCallback = Callable[[Account | None, str, str], None]


def jail_of(account: Account, spool: Path) -> Path:
    return account.folder or spool / "ftp_push" / safe_name(account.station) / account.login


# ------------------------------------------------------------------ accounts


def accounts_from_inventory(inventory: Inventory) -> list[Account]:
    """One account per distinct ``ftp_push`` connection id, credentials from the Connection."""
    users: dict[str, list[tuple[str, str]]] = {}
    for st in inventory.stations:
        for lg in st.loggers:
            if isinstance(lg.collect, FtpPushCollect):
                users.setdefault(lg.collect.connection_id, []).append((st.id, lg.id))
    accounts: list[Account] = []
    for conn_id, uses in users.items():
        stations = sorted({s for s, _ in uses})
        if len(stations) > 1:
            raise PermanentError(
                f"ftp_push connection {conn_id!r} is used by stations {stations}:"
                " each station needs its own account (its own Connection)"
            )
        c = get_connection(conn_id)
        if not c.login or not c.password:
            raise MissingConnection(
                f"Airflow Connection {conn_id!r} needs a login and a password (the account"
                f" {stations[0]} pushes with)"
            )
        if safe_name(c.login) != c.login:
            raise PermanentError(
                f"Airflow Connection {conn_id!r}: login {c.login!r} must be made of"
                " [A-Za-z0-9._-] and not start with a dot (it names the account's folder)"
            )
        accounts.append(
            Account(
                station=stations[0],
                logger_ids=tuple(lg for _, lg in uses),
                login=c.login,
                password=c.password,
            )
        )
    logins = [a.login for a in accounts]
    twice = sorted({x for x in logins if logins.count(x) > 1})
    if twice:
        raise PermanentError(f"ftp_push logins used by more than one Connection: {twice}")
    return accounts


# ------------------------------------------------------------------ the server


class _Authorizer(DummyAuthorizer):
    """Virtual users only (no anonymous), passwords compared in constant time."""

    def validate_authentication(self, username, password, handler):
        user = self.user_table.get(username)
        given = (password or "").encode("utf-8", "surrogateescape")
        if user is None or not hmac.compare_digest(user["pwd"].encode("utf-8"), given):
            raise AuthenticationFailed("Authentication failed.")


class _JailFS(AbstractedFS):
    """pyftpdlib's filesystem without its process-wide os.chdir (threads share a cwd)."""

    def chdir(self, path):
        if not os.path.isdir(path):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        self.cwd = self.fs2ftp(path)


def _escapes(cwd: str, arg: str) -> bool:
    """Whether the raw FTP path ``arg`` (relative to ``cwd``) climbs above the jail's top."""
    path = arg if arg.startswith("/") else f"{cwd.rstrip('/')}/{arg}"
    depth = 0
    for part in path.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return True
    return False


def _unsafe(arg: str) -> str | None:
    """Why a client-chosen path (STOR, MKD) is refused; None when every part is safe."""
    parts = arg.strip("/").split("/") if arg.strip("/") else []
    if not parts:
        return "no file name"
    for part in parts:
        if part != safe_name(part):
            return (
                f"name {part!r} not allowed: use only letters, digits, '.', '_' and '-',"
                " not starting with a dot"
            )
    return None


class _PushDTP(DTPHandler):
    """pyftpdlib's data channel, except that a connection RESET is not an end of file.

    pyftpdlib takes a reset upload connection (the station lost its link) for a complete
    transfer; here only a clean end of file is, and a reset is an incomplete upload.
    (Uses pyftpdlib's private errno sets, as its own ``recv`` does; pinned version.)
    """

    def recv(self, buffer_size):
        if not self.receive:
            return super().recv(buffer_size)
        try:
            data = self.socket.recv(buffer_size)
        except OSError as err:
            if err.errno in _ERRNOS_RETRY:
                raise _RetryError from err
            if err.errno not in _ERRNOS_DISCONNECTED:
                raise
            self._resp = (f"426 Connection lost ({err.strerror}); transfer aborted.", log.info)
            self.transfer_finished = False
            self.close()  # -> on_incomplete_file_received
            return b""
        if not data:
            self.handle_close()  # a clean end of file: the transfer is complete
        return data


@dataclass(frozen=True)
class _Config:
    accounts: dict[str, Account]
    on_received: ReceivedCallback
    on_problem: ProblemCallback | None


class _PushHandler(FTPHandler):
    config: _Config  # set on the per-server subclass
    abstracted_fs = _JailFS
    dtp_handler = _PushDTP
    banner = "stationflow FTP receiver ready."
    permit_foreign_addresses = False
    permit_privileged_ports = False

    def __init__(self, conn, server, ioloop=None):
        self._receiving: dict[str, str] = {}  # .part path -> final path
        super().__init__(conn, server, ioloop=ioloop)

    # --- helpers

    @property
    def account(self) -> Account | None:
        return self.config.accounts.get(self.username) if self.authenticated else None

    def _problem(self, level: str, message: str) -> None:
        who = self.account
        text = f"{who.station}/{who.login}: {message}" if who else message
        log.log(logging.getLevelName(level), "ftp push %s: %s", self.remote_ip, text)
        if self.config.on_problem is not None:
            try:
                self.config.on_problem(who, level, f"{text} (from {self.remote_ip})")
            except Exception:
                log.exception("ftp push: could not record a problem")

    def _refusal(self, cmd: str, arg: str) -> tuple[int, str] | None:
        if cmd == "STOU":
            return 502, "STOU not accepted: store each file under its own name."
        if cmd in ("CDUP", "XCUP"):
            arg = ".."
        if cmd not in _PATH_COMMANDS or not arg:
            return None
        if cmd in ("LIST", "NLST", "STAT") and arg.startswith("-"):
            return None  # ls options ("-la")
        code = 553 if cmd in _STORE_COMMANDS else 550
        if "\x00" in arg or _escapes(self.fs.cwd, arg):
            return code, "Path leaves your folder."
        if cmd in _STORE_COMMANDS or cmd in _MKDIR_COMMANDS:
            why = _unsafe(arg)
            if why:
                return code, why[0].upper() + why[1:] + "."
        if cmd in _STORE_COMMANDS:
            parent = os.path.dirname(self.fs.ftp2fs(arg))
            if not os.path.isdir(parent):
                return 553, f"No such folder {posixpath.dirname(self.fs.ftpnorm(arg))!r}."
        return None

    # --- pyftpdlib hooks

    def pre_process_command(self, line, cmd, arg):
        if self.authenticated and self.fs is not None:
            refused = self._refusal(cmd, arg)
            if refused is not None:
                code, msg = refused
                self.logline(f"<- {line}")
                self.respond(f"{code} {msg}")
                self.log_cmd(cmd, arg, code, msg)
                self._problem("WARNING", f"{cmd} {arg!r} refused: {msg}")
                return
        super().pre_process_command(line, cmd, arg)

    def ftp_STOR(self, file, mode="w"):
        folder, name = os.path.split(file)
        part = os.path.join(folder, f".{name}.part")  # a client cannot name a dot file
        self._receiving[part] = file
        result = super().ftp_STOR(part, mode=mode)
        if result is None:
            self._receiving.pop(part, None)
        return result

    def on_login_failed(self, username, password):
        self._problem("WARNING", f"login refused for user {username!r}")

    def on_incomplete_file_received(self, file):
        final = self._receiving.pop(file, None)
        size = os.path.getsize(file) if os.path.exists(file) else 0
        name = os.path.basename(final or file)
        self._problem(
            "WARNING",
            f"upload of {name} interrupted after {size} bytes: kept as a partial"
            " (not landed; the station has to send it again)",
        )

    def on_file_received(self, file):
        final = self._receiving.pop(file, None)
        if final is None:  # pragma: no cover - every STOR goes through ftp_STOR
            return
        account = self.account
        try:
            final = _settle(file, final)
        except OSError as exc:
            self._problem("ERROR", f"{os.path.basename(final)}: received but not kept: {exc}")
            return
        if account is None:  # pragma: no cover - a transfer needs a login
            return
        try:
            self.config.on_received(account, Path(final))
        except Exception as exc:
            log.exception("ftp push: landing %s failed", final)
            self._problem(
                "ERROR",
                f"{os.path.basename(final)}: received but not landed ({exc}); the file stays"
                " in the account's folder",
            )


def _settle(part: str, final: str) -> str:
    """Give a complete upload its name; never overwrite different bytes already there."""
    if os.path.exists(final):
        if os.path.isfile(final) and filecmp.cmp(part, final, shallow=False):
            os.unlink(part)  # the same file again (a station retrying)
            return final
        stem, suffix = os.path.splitext(final)
        n = 2
        while os.path.exists(f"{stem}.{n}{suffix}"):
            n += 1
        final = f"{stem}.{n}{suffix}"
    os.replace(part, final)
    return final


class _PushServer(ThreadedFTPServer):
    """One thread per connection (landing blocks), with its own stop flag and lock."""

    poll_timeout = 0.2  # how soon connection threads notice close_all()
    max_cons = 64
    max_cons_per_ip = 8

    def __init__(self, *args, **kwargs):
        self._exit = threading.Event()
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)


def build_server(
    accounts: list[Account],
    *,
    host: str,
    port: int,
    spool: Path,
    on_received: ReceivedCallback,
    passive_ports: Iterable[int] | None = None,
    on_problem: ProblemCallback | None = None,
) -> FTPServer:
    """A receiving FTP server (not started: ``serve_forever()`` or ``ServerThread``).

    ``on_received(account, path)`` is called, in the connection's own thread, with every
    complete upload; ``on_problem(account, level, message)`` with every refused command,
    failed login, interrupted upload and failed ``on_received``.
    """
    authorizer = _Authorizer()
    by_login: dict[str, Account] = {}
    for account in accounts:
        if safe_name(account.login) != account.login:
            raise ValueError(f"login {account.login!r} is not a safe folder name")
        if account.login in by_login:
            raise ValueError(f"login {account.login!r} twice")
        folder = jail_of(account, spool)
        folder.mkdir(parents=True, exist_ok=True)
        account = replace(account, folder=folder)
        by_login[account.login] = account
        authorizer.add_user(account.login, account.password, str(folder), perm=PERMISSIONS)
    handler = type(
        "PushHandler",
        (_PushHandler,),
        {
            "authorizer": authorizer,
            "config": _Config(by_login, on_received, on_problem),
            "passive_ports": list(passive_ports) if passive_ports else None,
        },
    )
    return _PushServer((host, port), handler, ioloop=IOLoop())


class ServerThread(threading.Thread):
    """Serve a pyftpdlib server from a background thread until ``stop()``."""

    def __init__(self, server: FTPServer, poll_s: float = 0.05):
        host, port = server.address
        super().__init__(name=f"ftpd-{host}:{port}", daemon=True)
        self.server = server
        self._poll_s = poll_s
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.server.serve_forever(timeout=self._poll_s, blocking=False, handle_exit=False)
        finally:
            self.server.close_all()

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self.join(timeout)


# ------------------------------------------------------------------ landing


def land_received(
    conn_factory: Callable[[], psycopg.Connection], landing: Path, inventory: Inventory
) -> Callable[[Account, Path], Landed]:
    """A callback landing each received file in its own transaction.

    The logger is chosen by the file kind among the account's loggers: ``.ghg`` -> the
    smartflux logger, ``.jpg`` -> the camera, anything else -> the account's first logger.
    """

    def received(account: Account, path: Path) -> Landed:
        station = inventory.station(account.station)
        loggers = [station.logger(i) for i in account.logger_ids]
        suffix = path.suffix.lower()
        kind = {".ghg": "smartflux", ".jpg": "camera", ".jpeg": "camera"}.get(suffix)
        logger = next((lg for lg in loggers if lg.kind == kind), loggers[0])
        table = getattr(logger.collect, "table", None) or default_table(path.name)
        with conn_factory() as conn:
            with conn.transaction():
                landed = land(
                    conn,
                    path,
                    landing=landing,
                    station=station.id,
                    logger=logger.id,
                    table=table,
                    source=f"ftp_push:{account.station}/{account.login}",
                    utc_offset_hours=station.utc_offset_hours,
                    source_path=str(path),
                    expect_table=is_table(path.name),
                )
                audit(
                    conn,
                    STEP,
                    f"{account.login} pushed {path.name} ({landed.size} bytes) for"
                    f" {logger.id}{'' if landed.new else ': these bytes were landed before'}",
                    station=station.id,
                    details={
                        "login": account.login,
                        "logger": logger.id,
                        "file": str(path),
                        "fragment_id": landed.fragment_id,
                        "sha256": landed.sha256,
                        "new": landed.new,
                    },
                )
            conn.commit()
        return landed

    return received


def problem_auditor(conn_factory: Callable[[], psycopg.Connection]) -> ProblemCallback:
    """An ``on_problem`` callback writing each problem to the audit log."""

    def problem(account: Account | None, level: str, message: str) -> None:
        with conn_factory() as conn:
            audit(conn, STEP, message, level=level, station=account.station if account else None)
            conn.commit()

    return problem


def run_push_server(
    inventory: Inventory,
    host: str,
    port: int,
    spool: Path,
    landing: Path,
    *,
    passive_ports: Iterable[int] | None = None,
) -> None:
    """``stationflow ftp-server``: receive every pushing station's files until interrupted."""
    accounts = accounts_from_inventory(inventory)
    if not accounts:
        raise PermanentError("no logger of the inventory is collected with method ftp_push")
    server = build_server(
        accounts,
        host=host,
        port=port,
        spool=spool,
        on_received=land_received(connect, landing, inventory),
        on_problem=problem_auditor(connect),
        passive_ports=passive_ports,
    )
    for a in accounts:
        log.info("ftp push: %s/%s -> %s", a.station, a.login, jail_of(a, spool))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
