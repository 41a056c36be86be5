"""Modbus polling of Campbell loggers: read the Public variables, spool them as a TOA5 table.

A CR1000X running ``ModbusServer()`` maps its Public variables to holding (and input)
registers, two per float: Var(n) at protocol address 2(n-1). Word order is CDAB by default
on the CR1000X, ABCD on the others; the inventory names it per logger and per register.

One poll is one connection (Modbus/TCP, or RTU frames through a serial server's TCP port),
the registers read in as few requests as possible, with a bounded timeout and bounded
retries; it never returns a made-up value: any failure raises ``PollFailed`` and the slot
stays a visible hole. Rows go to a day file of the spool
(``<spool>/modbus/<station>/<logger>/<table>_<YYYY-MM-DD>.dat``, local standard time), a
valid TOA5 file appended row by row (append, flush, fsync); closed days are landed.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes

from stationflow.collect.landing import land, safe_name
from stationflow.config import Logger, ModbusCollect, ModbusRegister, Station
from stationflow.formats.timestamps import format_toa5, to_ns
from stationflow.state.audit import RunIds, audit

STEP = "collect.modbus"
MAX_REQUEST = 125  # registers per read request (the Modbus limit for FC 03/04)
MAX_GAP = 8  # unused registers read through rather than sending one more request
DEFAULT_MODEL = "CR1000X"
PROGRAM = "stationflow-modbus"
NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DT = ModbusTcpClient.DATATYPE
_DATATYPES = {
    "float32": _DT.FLOAT32,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
}
INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
}
_CRLF = b"\r\n"
_TAIL = 4096  # bytes read from the end of a spool file at once


class PollFailed(Exception):
    """A poll that did not give every value: nothing is written for its slot."""

    def __init__(self, host: str, port: int, unit: int, address: int | None, reason: str):
        self.host, self.port, self.unit, self.address, self.reason = (
            host,
            port,
            unit,
            address,
            reason,
        )
        at = f", address {address}" if address is not None else ""
        super().__init__(f"{host}:{port} unit {unit}{at}: {reason}")


# ------------------------------------------------------------------------------- codec


def _word_order(order: str) -> Literal["big", "little"]:
    if order not in ("ABCD", "CDAB"):
        raise ValueError(f"word order must be ABCD or CDAB, got {order!r}")
    return "big" if order == "ABCD" else "little"


def _tidy(x: float) -> float:
    """Drop binary noise past 15 significant digits (0.01 * 123 -> 1.23)."""
    return float(f"{x:.15g}") if math.isfinite(x) else x


def decode(registers: Sequence[int], reg: ModbusRegister, default_word_order: str) -> float:
    """The engineering value (raw * scale + offset) of one variable from its registers.

    A float32 is returned as the shortest decimal that is the same float32 (12.5, 0.1: what
    the logger shows), a NaN stays NaN. ``reg.word_order`` overrides the logger's.
    """
    if len(registers) != reg.count:
        raise ValueError(f"{reg.name}: {len(registers)} registers, expected {reg.count}")
    order = _word_order(reg.word_order or default_word_order)
    raw = ModbusTcpClient.convert_from_registers(
        list(registers), _DATATYPES[reg.data_type], word_order=order
    )
    value = float(str(np.float32(raw))) if reg.data_type == "float32" else float(raw)
    if reg.scale == 1 and reg.offset == 0:
        return value
    return _tidy(value * reg.scale + reg.offset)


def encode(value: float, reg: ModbusRegister, word_order: str) -> list[int]:
    """Registers holding ``value`` (inverse of ``decode``); ``reg.word_order`` wins."""
    order = _word_order(reg.word_order or word_order)
    raw = (value - reg.offset) / reg.scale
    if reg.data_type == "float32":
        try:
            return ModbusTcpClient.convert_to_registers(float(raw), _DT.FLOAT32, word_order=order)
        except (OverflowError, ValueError) as exc:  # struct: beyond float32
            raise ValueError(f"{reg.name}: {value!r} does not fit a float32") from exc
    lo, hi = INT_RANGES[reg.data_type]
    if not math.isfinite(raw) or not lo <= round(raw) <= hi:
        raise ValueError(f"{reg.name}: {value!r} does not fit a {reg.data_type}")
    return ModbusTcpClient.convert_to_registers(
        round(raw), _DATATYPES[reg.data_type], word_order=order
    )


# ------------------------------------------------------------------------------- polling


@dataclass(frozen=True)
class Request:
    """One read: ``count`` registers of one type from ``address``, covering ``registers``."""

    type: Literal["holding", "input"]
    address: int
    count: int
    registers: tuple[ModbusRegister, ...]


def plan_requests(
    registers: Sequence[ModbusRegister], *, max_count: int = MAX_REQUEST, max_gap: int = MAX_GAP
) -> list[Request]:
    """As few reads as possible: registers of one type, contiguous or at most ``max_gap``
    unused registers apart, grouped into requests of at most ``max_count`` registers."""
    out: list[Request] = []
    for kind in ("holding", "input"):
        group: list[ModbusRegister] = []
        start = end = 0
        for reg in sorted((r for r in registers if r.type == kind), key=lambda r: r.address):
            reg_end = reg.address + reg.count
            if group and reg.address - end <= max_gap and max(end, reg_end) - start <= max_count:
                group.append(reg)
                end = max(end, reg_end)
                continue
            if group:
                out.append(Request(kind, start, end - start, tuple(group)))
            group, start, end = [reg], reg.address, reg_end
        if group:
            out.append(Request(kind, start, end - start, tuple(group)))
    return out


class _Client(ModbusTcpClient):
    """The sync client, keeping why a connection failed (pymodbus only logs it)."""

    last_error: OSError | None = None

    def connect(self) -> bool:
        if self.socket:
            return True
        try:
            self.socket = socket.create_connection(
                (self.comm_params.host, self.comm_params.port),
                timeout=self.comm_params.timeout_connect,
            )
        except OSError as exc:
            self.last_error, self.socket = exc, None
        return self.socket is not None


def _exception_name(code: Any) -> str:
    try:
        return ExcCodes(code).name
    except ValueError:
        return "unknown"


def poll(cfg: ModbusCollect, host: str, port: int) -> dict[str, float]:
    """Read every register of ``cfg`` from ``host:port`` in one connection.

    Each request waits ``cfg.timeout_s`` for an answer and is sent again ``cfg.retries``
    times (so is the connection attempt); the connection is always closed. Any failure
    raises PollFailed naming host:port, unit and address. Values come in ``cfg`` order.
    """
    unit = cfg.unit_id
    framer = FramerType.RTU if cfg.transport == "rtu_over_tcp" else FramerType.SOCKET
    client = _Client(host, port=port, framer=framer, timeout=cfg.timeout_s, retries=cfg.retries)
    try:
        for attempt in range(cfg.retries + 1):
            if client.connect():
                break
            if attempt < cfg.retries:
                time.sleep(min(0.5, cfg.timeout_s / 2))
        else:
            err = client.last_error
            why = (err.strerror or str(err)) if err is not None else "no socket"
            raise PollFailed(
                host, port, unit, None, f"cannot connect after {cfg.retries + 1} attempts: {why}"
            )
        raw: dict[str, float] = {}
        for req in plan_requests(cfg.registers):
            regs = _read(client, req, cfg, host, port)
            for reg in req.registers:
                at = reg.address - req.address
                raw[reg.name] = decode(regs[at : at + reg.count], reg, cfg.word_order)
        return {reg.name: raw[reg.name] for reg in cfg.registers}
    finally:
        client.close()


def _read(client: _Client, req: Request, cfg: ModbusCollect, host: str, port: int) -> list[int]:
    what = f"{req.count} {req.type} registers from {req.address}"
    read = client.read_holding_registers if req.type == "holding" else client.read_input_registers
    try:
        rr = read(req.address, count=req.count, device_id=cfg.unit_id)
    except Exception as exc:  # ModbusIOException, ConnectionException, OSError, a bad frame
        reason = f"{what}: no valid answer (timeout {cfg.timeout_s:g} s, {cfg.retries} retries)"
        raise PollFailed(host, port, cfg.unit_id, req.address, f"{reason}: {exc}") from exc
    if rr.isError():
        code = getattr(rr, "exception_code", None)
        reason = f"{what}: Modbus exception {code} ({_exception_name(code)})"
        raise PollFailed(host, port, cfg.unit_id, req.address, reason)
    got = list(getattr(rr, "registers", None) or [])
    if len(got) != req.count:
        reason = f"{what}: {len(got)} registers in the answer"
        raise PollFailed(host, port, cfg.unit_id, req.address, reason)
    return got


# -------------------------------------------------------------------------- poll slots


def slot_ns(now_utc: datetime, interval_ms: int, utc_offset_hours: float) -> int:
    """The timestamp a poll at ``now_utc`` writes: local standard time (ns) floored to
    the interval, as logger tables stamp the END of an interval (10:00:07 -> 10:00:00)."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be an aware datetime")
    utc_ns = (now_utc - _EPOCH) // timedelta(microseconds=1) * 1000
    local = utc_ns + round(utc_offset_hours * 3600) * NS
    step = interval_ms * 1_000_000
    return local - local % step


def _local_date(ns: int) -> date:
    return (datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)).date()


def _stamp(ns: int) -> str:
    return format_toa5(np.array([ns], dtype=np.int64), quoted=False)[0].decode()


# ---------------------------------------------------------------------- spool tables


def spool_folder(spool: Path, station: str, logger: str) -> Path:
    return Path(spool) / "modbus" / safe_name(station) / safe_name(logger)


def spool_path(spool: Path, station: str, logger: str, table: str, ts_ns: int) -> Path:
    """``<spool>/modbus/<station>/<logger>/<table>_<YYYY-MM-DD>.dat`` of a row's day."""
    day = _local_date(ts_ns).isoformat()
    return spool_folder(spool, station, logger) / f"{safe_name(table)}_{day}.dat"


def _q(values: Sequence[str]) -> bytes:
    return ",".join('"' + v.replace('"', '""') + '"' for v in values).encode()


def toa5_header(
    station: str, model: str | None, table: str, registers: Sequence[ModbusRegister]
) -> bytes:
    """The four header lines (CRLF-terminated) of a polled table."""
    env = ("TOA5", station, model or DEFAULT_MODEL, "", "", PROGRAM, "", table)
    names = ("TIMESTAMP", "RECORD", *(r.name for r in registers))
    units = ("TS", "RN", *(r.unit for r in registers))
    kinds = ("", "", *("Smp" for _ in registers))
    return _CRLF.join([_q(env), _q(names), _q(units), _q(kinds)]) + _CRLF


def format_value(value: float) -> bytes:
    """A value as Campbell writes it: shortest text, ``"NAN"`` / ``"INF"`` quoted."""
    if math.isnan(value):
        return b'"NAN"'
    if math.isinf(value):
        return b'"INF"' if value > 0 else b'"-INF"'
    if value == int(value) and abs(value) < 1e15:
        return str(int(value)).encode()
    return repr(float(value)).encode()


class SpoolCorrupt(Exception):
    """A spool file whose last row cannot be read: it is left as it is."""


def _tail_line_start(fd: int, size: int, floor: int) -> int:
    """Offset where the last line of ``[floor, size)`` starts (the file ends with CRLF)."""
    pos = size - 2  # the final CRLF
    while pos > floor:
        lo = max(floor, pos - _TAIL)
        chunk = os.pread(fd, pos - lo, lo)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1
        pos = lo
    return floor


def _repair(fd: int, size: int, floor: int) -> int:
    """Cut a row left half-written by a crash: truncate back to the last CRLF (at the
    latest the one ending the header, at ``floor``). Returns the new size."""
    if size <= floor or os.pread(fd, 2, size - 2) == _CRLF:
        return size
    cut, end = floor, size
    while end > floor - 2:
        lo = max(floor - 2, end - _TAIL)
        at = os.pread(fd, end - lo, lo).rfind(_CRLF)
        if at >= 0:
            cut = lo + at + 2
            break
        if lo == floor - 2:
            break
        end = lo + 1  # overlap one byte: a CRLF across two reads
    os.ftruncate(fd, cut)
    os.fsync(fd)
    return cut


def _last_row(fd: int, path: Path, size: int, floor: int) -> tuple[int | None, int | None]:
    """(timestamp ns, RECORD) of the file's last row; (None, None) without rows."""
    if size <= floor:
        return None, None
    start = _tail_line_start(fd, size, floor)
    line = os.pread(fd, size - start, start).rstrip(b"\r\n")
    try:
        stamp, record = line.split(b",", 2)[:2]
        return to_ns(stamp.strip(b'"').decode()), int(record)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpoolCorrupt(f"{path}: last row unreadable: {line[:60]!r}") from exc


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rotate(path: Path) -> Path:
    """Set a file with another header aside (``<stem>-<n>.dat``): its columns changed."""
    n = 1
    while (target := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    os.replace(path, target)
    _fsync_dir(path.parent)
    return target


def append_row(path: Path, header: bytes, ts_ns: int, values: Sequence[float]) -> bool:
    """Append one row to a spool table (header first in a new file); idempotent.

    A row whose timestamp is not after the file's last one is not written (False). RECORD
    follows the last row's (0 in a new file). A row cut short by a crash is removed first;
    a file with another header (the register list changed) is set aside as ``-<n>``.
    Append, flush and fsync; an exclusive lock keeps two writers apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ncols = header.split(_CRLF, 2)[1].count(b",") - 1
    if len(values) != ncols:
        raise ValueError(f"{path.name}: {len(values)} values for {ncols} columns")
    while True:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:
                continue  # set aside by another writer meanwhile: open the new file
            size = os.fstat(fd).st_size
            head = os.pread(fd, len(header), 0)
            if head != header:
                if size >= len(header) or not header.startswith(head):
                    _rotate(path)
                    continue
                os.ftruncate(fd, 0)  # a header cut short by a crash: write it again
                os.write(fd, header)
                os.fsync(fd)
                size = len(header)
            size = _repair(fd, size, len(header))
            last_ts, last_record = _last_row(fd, path, size, len(header))
            if last_ts is not None and ts_ns <= last_ts:
                return False
            record = 0 if last_record is None else last_record + 1
            stamp = format_toa5(np.array([ts_ns], dtype=np.int64))[0]
            row = b",".join([stamp, str(record).encode(), *map(format_value, values)]) + _CRLF
            os.write(fd, row)
            os.fsync(fd)
            if created:
                _fsync_dir(path.parent)
            return True
        finally:
            os.close(fd)


def write_poll(
    spool: Path,
    *,
    station: str,
    logger: str,
    model: str | None,
    table: str,
    registers: Sequence[ModbusRegister],
    ts_ns: int,
    values: Mapping[str, float],
) -> tuple[Path, bool]:
    """Append a polled row to its day file of the spool; (path, written)."""
    path = spool_path(spool, station, logger, table, ts_ns)
    header = toa5_header(station, model, table, registers)
    written = append_row(path, header, ts_ns, [values[r.name] for r in registers])
    return path, written


def closed_files(spool: Path, station: str, logger: str, table: str, today: date) -> list[Path]:
    """Spool files of a table that no poll writes to any more: days before ``today`` and
    files set aside after a header change; oldest first."""
    pattern = re.compile(rf"^{re.escape(safe_name(table))}_(\d{{4}}-\d{{2}}-\d{{2}})(-\d+)?\.dat$")
    folder = spool_folder(spool, station, logger)
    found = []
    for p in folder.glob("*.dat") if folder.is_dir() else []:
        m = pattern.match(p.name)
        if not m:
            continue
        try:
            day = date.fromisoformat(m.group(1))
        except ValueError:
            continue
        if day < today or m.group(2):
            found.append(p)
    return sorted(found)


# ------------------------------------------------------------------------ one poll task


def poll_logger(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    *,
    now: datetime,
    spool: Path,
    landing: Path,
    endpoint: tuple[str, int],
    ids: RunIds | None = None,
    raise_on_failure: bool = False,
) -> dict[str, Any]:
    """Poll a logger once, append the row of the current slot and land closed day files.

    ``now`` is the clock (aware), not a logical date: the values are the logger's current
    ones. The audit row (INFO, or WARNING naming host:port and the error: the slot stays a
    hole) and each landing are committed. With ``raise_on_failure`` a failed poll raises
    PollFailed after that commit (so the task fails); otherwise the summary says why.
    """
    cfg = logger.collect
    if not isinstance(cfg, ModbusCollect):
        raise TypeError(f"{station.id}/{logger.id} is not collected over Modbus")
    host, port = endpoint
    slot = slot_ns(now, cfg.poll_interval_ms, station.utc_offset_hours)
    stamp = _stamp(slot)
    where = f"{logger.id}/{cfg.table}"
    summary: dict[str, Any] = {
        "logger": logger.id,
        "table": cfg.table,
        "slot": stamp,
        "slot_ns": slot,
        "written": False,
        "values": 0,
        "path": None,
        "failed": None,
        "landed": [],
    }
    failure: PollFailed | None = None
    try:
        values = poll(cfg, host, port)
    except PollFailed as exc:
        failure = exc
        summary["failed"] = str(exc)
        audit(
            conn,
            STEP,
            f"{where}: poll of {host}:{port} failed, no row for {stamp}: {exc.reason}",
            level="WARNING",
            station=station.id,
            details={
                "logger": logger.id,
                "table": cfg.table,
                "endpoint": f"{host}:{port}",
                "unit": cfg.unit_id,
                "address": exc.address,
                "slot": stamp,
                "error": str(exc),
            },
            ids=ids,
        )
    else:
        try:
            path, written = write_poll(
                spool,
                station=station.id,
                logger=logger.id,
                model=logger.model,
                table=cfg.table,
                registers=cfg.registers,
                ts_ns=slot,
                values=values,
            )
        except (OSError, SpoolCorrupt) as exc:  # the values are lost: say so, then fail
            audit(
                conn,
                STEP,
                f"{where}: {len(values)} values polled for {stamp} but not spooled: {exc}",
                level="ERROR",
                station=station.id,
                details={"logger": logger.id, "table": cfg.table, "slot": stamp, "error": str(exc)},
                ids=ids,
            )
            conn.commit()
            raise
        summary.update(written=written, values=len(values), path=str(path))
        again = "" if written else " (slot already in the spool: not written again)"
        audit(
            conn,
            STEP,
            f"{where}: {len(values)} values from {host}:{port} for {stamp}{again}",
            station=station.id,
            details={
                "logger": logger.id,
                "table": cfg.table,
                "endpoint": f"{host}:{port}",
                "slot": stamp,
                "values": len(values),
                "written": written,
                "path": str(path),
            },
            ids=ids,
        )
    conn.commit()

    summary["landed"] += land_closed_days(
        conn, station, logger, now=now, spool=spool, landing=landing, ids=ids
    )

    if failure is not None and raise_on_failure:
        raise failure
    return summary


def land_closed_days(
    conn: psycopg.Connection,
    station: Station,
    logger: Logger,
    *,
    now: datetime,
    spool: Path,
    landing: Path,
    ids: RunIds | None = None,
) -> list[str]:
    """Land every spool day file of the logger's table whose local day is over, once."""
    cfg = logger.collect
    today = _local_date(slot_ns(now, 1, station.utc_offset_hours))
    source = f"modbus:{logger.id}/{cfg.table}"
    landed_paths = []
    for path in closed_files(spool, station.id, logger.id, cfg.table, today):
        if _landed_before(conn, station.id, source, path):
            continue
        landed = land(
            conn,
            path,
            landing=landing,
            station=station.id,
            logger=logger.id,
            table=cfg.table,
            source=source,
            utc_offset_hours=station.utc_offset_hours,
            ids=ids,
        )
        conn.commit()
        landed_paths.append(str(landed.path))
    return landed_paths


def _landed_before(conn: psycopg.Connection, station: str, source: str, path: Path) -> bool:
    """These bytes of a closed spool file are in the ledger (files only grow: same size)."""
    row = conn.execute(
        "SELECT 1 FROM stationflow.fragment WHERE station = %s AND source = %s"
        " AND source_path = %s AND size = %s LIMIT 1",
        (station, source, str(path), path.stat().st_size),
    ).fetchone()
    return row is not None
