"""LI-COR SmartFlux ``.ghg`` files, read into a ``Table`` of TOA5-style rows.

A ``.ghg`` file is a zip of two members named like the archive:

* ``<name>.data``: tab separated; header lines ``Key:\\tvalue`` (Model, SN, Instrument, File
  Type, Software Version, Timestamp, Timezone), then the column line ``DATAH\\tSeconds\\t
  Nanoseconds\\t...`` and one ``DATA\\t...`` line per sample. Seconds/Nanoseconds are Unix
  time (UTC). LF line ends; SmartFlux writes no line end after the last row.
* ``<name>.metadata``: INI (``;GHG_METADATA`` first), ``[Timing] acquisition_frequency``,
  ``[Station] station_name / logger_id``, ...

SmartFlux 2+ archives can also hold ``<name>-biomet.data`` / ``-biomet.metadata`` (the
biomet table); those members are a separate table and are not read here.

Timestamps are converted to the station's local STANDARD time as ETC wants it: UTC plus a
fixed ``utc_offset_hours`` (no daylight saving). The ``Timezone:`` line of the file (for
example ``Europe/Berlin``) is deliberately ignored; it stays in ``Header.raw``. Samples are
instantaneous and the file is named by the start of its period, so ``stamping="start"``.

Each DATA row is rendered as a TOA5 data line, ``"2016-12-11 20:00:00.05",1481482800,
50000000,...,"2016-12-11","20:00:00:050",0.0819958,...``: every original column in DATAH
order, padding spaces stripped, numbers unquoted and everything else quoted (``""``
doubled), rows joined with CRLF. The work is vectorized (numpy over the bytes of the .data
member, pyarrow to tell numbers from text); there is no Python loop over rows or values.
"""

from __future__ import annotations

import configparser
import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from stationflow.formats.table import Header, Table, UnreadableFragment
from stationflow.formats.timestamps import NS, format_toa5_packed

# A number as TOA5 writes it unquoted; anything else is quoted (Date, Time, nan, ...).
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_MAX_HEADER_LINES = 64  # lines before DATAH (SmartFlux writes 7)
_MAX_MEMBER_BYTES = 1 << 30  # a 30 min 20 Hz .data is ~13 MB; refuse zip bombs
_MAX_LISTED = 20  # bad rows named one by one (as toa5 does); the rest are counted
_SECONDS_DIGITS = 10
_SECONDS_MAX = 9_000_000_000  # year 2255: ns since 1970 stay well inside int64
_NANOS_DIGITS = 9
_MAX_INTERVAL_NS = 86_400 * NS  # an acquisition_frequency below 1/day is no rate

_OK, _EMPTY, _NOT_DATA, _COLUMNS, _TIME, _CR = range(6)


def read_ghg(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    utc_offset_hours: float,
    source: str | None = None,
) -> Table:
    """Read one ``.ghg`` archive.

    ``utc_offset_hours``: the station's standard-time offset (ETC: UTC+1 for Central Europe
    all year). ``Table.lines`` and issue lines are 1-based line numbers in the ``.data``
    member. Raises ``UnreadableFragment`` when the archive as a whole is unusable (empty,
    not a zip, corrupt, not exactly one .data and one .metadata member, no DATAH line, no
    Seconds/Nanoseconds columns, unparsable metadata); rows that cannot be used are skipped
    and each is reported as an issue.
    """
    if not math.isfinite(utc_offset_hours) or abs(utc_offset_hours) > 14:
        raise ValueError(f"utc_offset_hours must be within [-14, 14], not {utc_offset_hours!r}")
    offset_ns = round(utc_offset_hours * 3600 * NS)
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        blob = bytes(path_or_bytes)
        src = source or "<bytes>"
    else:
        src = source or os.fspath(path_or_bytes)
        blob = Path(path_or_bytes).read_bytes()

    data, metadata = _members(blob, src)
    pending: list[tuple[Literal["warning", "error"], int | None, str]] = []
    meta = _metadata(metadata, src)
    interval_ns = _declared_interval(meta, pending)
    head = _data_header(data, src)

    header = Header(
        format="GHG",
        environment=(
            meta.get("Station", "station_name", fallback="")
            or meta.get("Site", "site_name", fallback=""),
            head.info.get("Model", ""),
            head.info.get("SN", ""),
            head.info.get("Software Version", "")
            or meta.get("Station", "logger_sw_version", fallback=""),
            "",
            "",
            meta.get("Station", "logger_id", fallback="") or head.info.get("Instrument", ""),
        ),
        fields=("TIMESTAMP", *head.fields),
        units=("TS",) + ("",) * len(head.fields),
        processing=("",) * (len(head.fields) + 1),
        stamping="start",
        declared_interval_ns=interval_ns,
        raw=data[: head.body_start] + metadata,
    )

    body = data[head.body_start :]
    unterminated = bool(body) and not body.endswith(b"\n")
    body = _trim(body)
    if unterminated:
        body += b"\n"
    i_sec, i_ns = head.fields.index("Seconds"), head.fields.index("Nanoseconds")
    scan = _scan(body, len(head.fields), i_sec, i_ns)
    first_line = head.datah_line + 1
    if not scan.ok.all():
        _report(scan, body, first_line, len(head.fields), unterminated, pending)
        keep = np.flatnonzero(scan.ok)
        if len(keep) == 0:
            raise UnreadableFragment(src, "no readable DATA row", line=first_line)
        body = b"".join(
            body[s : e + 1]
            for s, e in zip(scan.ls[keep].tolist(), scan.nl[keep].tolist(), strict=True)
        )
        line_index = keep
        scan = _scan(body, len(head.fields), i_sec, i_ns)
    else:
        line_index = np.arange(len(scan.nl), dtype=np.int64)

    ts = scan.sec * NS + scan.nsec + offset_ns
    rendered, starts, ends = _render(body, scan, ts, head.fields, (i_sec, i_ns))
    table = Table(
        source=src,
        header=header,
        data=rendered,
        starts=starts,
        ends=ends,
        ts=ts,
        lines=(line_index + first_line).astype(np.int64),
        crlf=True,
    )
    for level, line, message in pending:
        table.issue(level, line, message)
    _check_clock(table)
    return table


# --- the archive -------------------------------------------------------------------------


def _members(blob: bytes, src: str) -> tuple[bytes, bytes]:
    """The .data and .metadata members' bytes."""
    if not blob:
        raise UnreadableFragment(src, "empty file (0 bytes)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        if blob.startswith(b"PK\x03\x04"):  # a zip, cut short or damaged (partial copy?)
            raise UnreadableFragment(src, f"truncated or corrupt zip archive ({exc})") from exc
        raise UnreadableFragment(
            src, f"not a zip archive ({exc}); a .ghg file is a zip of .data and .metadata"
        ) from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]

        def pick(suffix: str) -> zipfile.ZipInfo:
            found = [
                i
                for i in infos
                if i.filename.lower().endswith(suffix)
                and not i.filename.lower().endswith("-biomet" + suffix)
            ]
            if len(found) != 1:
                names = ", ".join(i.filename for i in infos) or "none"
                raise UnreadableFragment(
                    src, f"expected one {suffix} member, found {len(found)} (members: {names})"
                )
            if found[0].file_size > _MAX_MEMBER_BYTES:
                raise UnreadableFragment(
                    src, f"{found[0].filename} is {found[0].file_size} bytes uncompressed"
                )
            return found[0]

        data_info, meta_info = pick(".data"), pick(".metadata")
        try:
            return zf.read(data_info), zf.read(meta_info)
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            NotImplementedError,  # unknown compression method
            RuntimeError,  # encrypted member
            ValueError,
        ) as exc:
            raise UnreadableFragment(src, f"corrupt zip archive: {exc}") from exc


def _metadata(metadata: bytes, src: str) -> configparser.ConfigParser:
    text = metadata.decode("utf-8", errors="replace").lstrip("\ufeff")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise UnreadableFragment(src, f"unreadable .metadata member: {exc}") from exc
    return parser


def _declared_interval(meta: configparser.ConfigParser, pending: list) -> int | None:
    value = meta.get("Timing", "acquisition_frequency", fallback=None)
    try:
        hz = float(value) if value is not None else math.nan
    except ValueError:
        hz = math.nan
    interval = NS / hz if math.isfinite(hz) and hz > 0 else math.nan
    if not 1 <= interval <= _MAX_INTERVAL_NS:  # NaN too; 1e-320 Hz made round(inf) crash
        pending.append(
            ("warning", None, f"metadata: no usable [Timing] acquisition_frequency ({value!r})")
        )
        return None
    return round(interval)


@dataclass(frozen=True)
class _DataHeader:
    info: dict[str, str]  # "Model" -> "LI-7200 ...", ...
    fields: tuple[str, ...]  # DATAH columns without the DATAH label
    datah_line: int  # 1-based
    body_start: int  # offset of the first byte after the DATAH line


def _data_header(data: bytes, src: str) -> _DataHeader:
    info: dict[str, str] = {}
    pos, line_no = 0, 0
    while pos < len(data) and line_no < _MAX_HEADER_LINES:
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].rstrip(b"\r")
        line_no += 1
        if line == b"DATAH" or line.startswith(b"DATAH\t"):
            fields = tuple(t.strip() for t in line.decode("utf-8", errors="replace").split("\t"))
            fields = fields[1:]
            missing = [f for f in ("Seconds", "Nanoseconds") if f not in fields]
            if missing:
                raise UnreadableFragment(
                    src, f"DATAH line has no {'/'.join(missing)} column", line=line_no
                )
            return _DataHeader(info, fields, line_no, min(end + 1, len(data)))
        if line.startswith(b"DATA\t"):
            break
        key, sep, value = line.decode("utf-8", errors="replace").partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
        pos = end + 1
    if not data:
        raise UnreadableFragment(src, "empty .data member")
    raise UnreadableFragment(src, "no DATAH column line in the .data member", line=line_no)


# --- the rows ----------------------------------------------------------------------------


def _trim(body: bytes) -> bytes:
    """CRLF -> LF; strip spaces around tab-separated values (SmartFlux pads CHK: ``\\t 28``).

    Only the (few) spaces are looked at: a run of spaces is padding when a tab, a line end
    or the end of the body is next to it; spaces inside a value are kept.
    """
    if b"\r\n" in body:
        body = body.replace(b"\r\n", b"\n")
    a = np.frombuffer(body, dtype=np.uint8)
    spaces = np.flatnonzero(a == ord(" "))
    if len(spaces) == 0:
        return body
    new_run = np.ones(len(spaces), dtype=bool)
    new_run[1:] = np.diff(spaces) != 1
    run = np.cumsum(new_run) - 1  # run number of each space
    first = spaces[new_run]
    last = spaces[np.r_[np.flatnonzero(new_run)[1:] - 1, len(spaces) - 1]]
    before = np.where(first > 0, a[np.maximum(first - 1, 0)], ord("\n"))
    after = np.where(last < len(a) - 1, a[np.minimum(last + 1, len(a) - 1)], ord("\n"))
    pad = (before == ord("\t")) | (before == ord("\n"))
    pad |= (after == ord("\t")) | (after == ord("\n"))
    if not pad.any():
        return body
    keep = np.ones(len(a), dtype=bool)
    keep[spaces[pad[run]]] = False
    return a[keep].tobytes()


@dataclass(frozen=True)
class _Scan:
    """Where every line and tab of an LF-terminated body is, and which lines are usable."""

    a: np.ndarray  # the body as uint8
    nl: np.ndarray  # offset of each line's LF
    ls: np.ndarray  # offset of each line's first byte
    tabs: np.ndarray  # offsets of all tabs
    first_tab: np.ndarray  # index into tabs of each line's first tab
    ntabs: np.ndarray  # tabs per line
    code: np.ndarray  # _OK, _EMPTY, ... per line
    sec: np.ndarray  # Seconds of the usable lines
    nsec: np.ndarray  # Nanoseconds of the usable lines

    @property
    def ok(self) -> np.ndarray:
        return self.code == _OK


def _scan(body: bytes, nfields: int, i_sec: int, i_ns: int) -> _Scan:
    a = np.frombuffer(body, dtype=np.uint8)
    nl = np.flatnonzero(a == 10)
    ls = np.zeros(len(nl), dtype=np.int64)
    ls[1:] = nl[:-1] + 1
    tabs = np.flatnonzero(a == 9)
    tabs_to_end = np.searchsorted(tabs, nl)
    first_tab = np.zeros(len(nl), dtype=np.int64)
    first_tab[1:] = tabs_to_end[:-1]
    ntabs = tabs_to_end - first_tab
    length = nl - ls

    is_data = length >= 5
    for k, ch in enumerate(b"DATA\t"):
        is_data &= a[np.minimum(ls + k, max(len(a) - 1, 0))] == ch
    code = np.full(len(nl), _OK, dtype=np.int8)
    code[~is_data] = _NOT_DATA
    code[length == 0] = _EMPTY
    code[is_data & (ntabs != nfields)] = _COLUMNS
    if b"\r" in body:  # a lone CR inside a row (CRLF is already LF): CSV parsers split there
        code[np.searchsorted(nl, np.flatnonzero(a == ord("\r")))] = _CR

    rows = np.flatnonzero(code == _OK)
    sec, sec_ok = _uint(a, tabs, first_tab[rows], nl[rows], i_sec, nfields, _SECONDS_DIGITS)
    nsec, ns_ok = _uint(a, tabs, first_tab[rows], nl[rows], i_ns, nfields, _NANOS_DIGITS)
    bad = ~(sec_ok & ns_ok & (sec <= _SECONDS_MAX))
    code[rows[bad]] = _TIME
    good = ~bad
    return _Scan(a, nl, ls, tabs, first_tab, ntabs, code, sec[good], nsec[good])


def _field_bounds(
    tabs: np.ndarray, first_tab: np.ndarray, nl: np.ndarray, f: int, nfields: int
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of field ``f`` (0-based after the DATA label) of lines that
    have exactly ``nfields`` tabs."""
    start = tabs[first_tab + f] + 1
    end = tabs[first_tab + f + 1] if f + 1 < nfields else nl
    return start, end


def _uint(a, tabs, first_tab, nl, f: int, nfields: int, digits: int):
    """Field ``f`` of each line as a non-negative integer of at most ``digits`` digits."""
    n = len(first_tab)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    start, end = _field_bounds(tabs, first_tab, nl, f, nfields)
    width = end - start
    ok = (width >= 1) & (width <= digits)
    value = np.zeros(n, dtype=np.int64)
    last = len(a) - 1
    for k in range(digits):
        inside = k < width
        c = a[np.minimum(start + k, last)].astype(np.int64) - ord("0")
        ok &= ~inside | ((c >= 0) & (c <= 9))
        value = np.where(inside, value * 10 + c, value)
    return np.where(ok, value, 0), ok


def _report(
    scan: _Scan,
    body: bytes,
    first_line: int,
    nfields: int,
    unterminated: bool,
    pending: list,
) -> None:
    """One issue per unusable line (up to a limit, then a summary)."""
    bad = np.flatnonzero(~scan.ok)
    last = len(scan.nl) - 1
    details = []
    for i in bad.tolist():
        line = first_line + i
        code = int(scan.code[i])
        snippet = body[scan.ls[i] : min(scan.nl[i], scan.ls[i] + 60)].decode("utf-8", "replace")
        if unterminated and i == last and code in (_COLUMNS, _TIME, _NOT_DATA):
            details.append(
                ("warning", line, f"truncated last row (no line end): {snippet!r}; skipped")
            )
        elif code == _CR:
            details.append(("error", line, f"carriage return inside the row {snippet!r}; skipped"))
        elif code == _EMPTY:
            details.append(("warning", line, "empty line; skipped"))
        elif code == _NOT_DATA:
            details.append(("error", line, f"not a DATA row: {snippet!r}; skipped"))
        elif code == _COLUMNS:
            details.append(
                (
                    "error",
                    line,
                    f"row has {int(scan.ntabs[i])} values, DATAH names {nfields}; skipped",
                )
            )
        else:
            details.append(
                ("error", line, f"unreadable Seconds/Nanoseconds in {snippet!r}; row skipped")
            )
    pending.extend(details[:_MAX_LISTED])
    rest = details[_MAX_LISTED:]
    if rest:
        level = "error" if any(d[0] == "error" for d in rest) else "warning"
        pending.append(
            (
                level,
                rest[0][1],
                f"and {len(rest)} more unusable rows skipped (up to line {rest[-1][1]})",
            )
        )


def _check_clock(table: Table) -> None:
    """Warn where the time stamps went backwards or repeated inside the file."""
    if len(table.ts) < 2:
        return
    back = np.flatnonzero(np.diff(table.ts) <= 0) + 1
    for i in back[:_MAX_LISTED].tolist():
        prev, cur = (table.row(k)[1 : table.row(k).index(b'"', 1)].decode() for k in (i - 1, i))
        table.issue(
            "warning", int(table.lines[i]), f"clock went back or repeated: {cur} after {prev}"
        )
    if len(back) > _MAX_LISTED:
        table.issue(
            "warning",
            int(table.lines[back[_MAX_LISTED]]),
            f"and {len(back) - _MAX_LISTED} more rows out of time order",
        )


def _render(
    body: bytes,
    scan: _Scan,
    ts: np.ndarray,
    fields: tuple[str, ...],
    integer_fields: tuple[int, ...],
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """TOA5 lines (CRLF) from an LF-terminated body of well-formed DATA lines.

    Done in place of the body's bytes: the timestamp overwrites "DATA" (its remaining bytes
    are inserted before the first tab), tabs become commas, quotes are inserted around text
    values (and before any quote inside them), a CR before each LF; one ``np.insert``.
    """
    n, nfields = len(scan.nl), len(fields)
    if n == 0:
        return b"", np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    nl, ls, tabs, first_tab = scan.nl, scan.ls, scan.tabs, scan.first_tab
    out = scan.a.copy()
    out[tabs] = ord(",")

    ts_bytes, ts_offsets = format_toa5_packed(ts)  # every stamp is at least 21 bytes long
    ts_start, ts_len = ts_offsets[:-1], np.diff(ts_offsets)
    head = (ts_start[:, None] + np.arange(4)).ravel()
    out[(ls[:, None] + np.arange(4)).ravel()] = ts_bytes[head]
    tail = np.ones(len(ts_bytes), dtype=bool)
    tail[head] = False
    positions = [np.repeat(ls + 4, ts_len - 4)]
    values = [ts_bytes[tail]]

    quote = ord('"')
    added = ts_len - 4  # bytes added to each row (besides the CR)
    opens, closes = [], []
    for f, mask in _text_fields(body, n, nfields, integer_fields):
        rows = np.flatnonzero(mask)
        start, end = _field_bounds(tabs, first_tab[rows], nl[rows], f, nfields)
        opens.append(start)
        closes.append(end)
        added[rows] += 2
    positions += opens + closes
    values += [np.full(len(p), quote, dtype=np.uint8) for p in opens + closes]
    if b'"' in body:  # only inside text values, which are quoted: double it
        dq = np.flatnonzero(scan.a == quote)
        positions.append(dq)
        values.append(np.full(len(dq), quote, dtype=np.uint8))
        added += np.bincount(np.searchsorted(nl, dq), minlength=n)
    positions.append(nl)  # CR before each LF
    values.append(np.full(n, ord("\r"), dtype=np.uint8))
    # np.insert keeps the order of equal positions: a closing quote goes before the CR
    out = np.insert(out, np.concatenate(positions), np.concatenate(values))

    content = (nl - ls) + added  # without CRLF
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(content[:-1] + 2, out=starts[1:])
    ends = starts + content
    if ends[-1] + 2 != len(out):  # pragma: no cover - an internal inconsistency
        raise AssertionError("ghg: rendered length does not match the row offsets")
    return out.tobytes(), starts, ends


def _text_fields(body: bytes, n: int, nfields: int, integer_fields: tuple[int, ...]):
    """(field, rows-to-quote mask) for every field holding a value that is not a number."""
    names = [f"c{i}" for i in range(nfields + 1)]  # c0 is the DATA label
    wanted = [names[f + 1] for f in range(nfields) if f not in integer_fields]
    if not wanted:
        return
    table = pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=names),
        parse_options=pacsv.ParseOptions(
            delimiter="\t",
            quote_char=False,
            double_quote=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        ),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted,
            column_types=dict.fromkeys(wanted, pa.string()),
            strings_can_be_null=False,
            check_utf8=False,
        ),
    )
    if table.num_rows != n:  # pragma: no cover - _scan and the CSV parser disagree
        raise AssertionError(f"ghg: {table.num_rows} CSV rows for {n} DATA lines")
    for name in wanted:
        column = table.column(name)
        try:
            as_float = pc.cast(column, pa.float64())
        except pa.ArrowInvalid:  # some value is not a number at all: test each
            mask = ~np.asarray(pc.match_substring_regex(column, _NUMBER).to_numpy(), dtype=bool)
        else:  # every value parses; "nan"/"inf" are text all the same
            finite = pc.is_finite(as_float)
            if pc.all(finite).as_py():
                continue
            mask = ~np.asarray(finite.to_numpy(), dtype=bool)
        if mask.any():
            yield int(name[1:]) - 1, mask
