"""ICOS ETC file names: ``<CC-Sss>_<TYPE>_<TIME>_L<nn>_F<nn>.<ext>`` (REFERENCE section 1).

EC and PHEN files carry the END of their half-hour as ``YYYYMMDDHHMM`` (midnight is ``0000``
of the next day); BM, ST and SAHEAT carry the day as ``YYYYMMDD``. The same rules are
enforced by the upload simulator, so what we write is what the portal accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

NAME = re.compile(r"^(.{6})_([A-Z]{2,6})_(\d+)_L(\d+)_F(\d+)\.(\w{3})$")
STATION = re.compile(r"^[A-Z]{2}-[A-Za-z][A-Za-z0-9]{2}$")
TYPES = ("EC", "BM", "ST", "SAHEAT", "PHEN")
HALF_HOURLY = ("EC", "PHEN")
EXTENSIONS = ("csv", "zip", "bin", "dat", "txt", "jpg")


class EtcNameError(ValueError):
    pass


@dataclass(frozen=True)
class EtcName:
    station: str
    type: str
    time: datetime  # the day (00:00) or the END of the half-hour, local standard time
    logger: int
    file: int
    extension: str

    def __post_init__(self) -> None:
        if not STATION.match(self.station):
            raise EtcNameError(f"station id {self.station!r} is not like FR-Lam")
        if self.type not in TYPES:
            raise EtcNameError(f"file type {self.type!r} is not one of {', '.join(TYPES)}")
        if not (0 <= self.logger <= 99 and 0 <= self.file <= 99):
            raise EtcNameError("logger and file numbers are written with two digits")
        if self.extension not in EXTENSIONS:
            raise EtcNameError(f"extension {self.extension!r} is not one of {EXTENSIONS}")
        if self.type in HALF_HOURLY and (self.time.minute % 30 or self.time.second):
            raise EtcNameError(f"{self.type} files end on a half-hour, not {self.time:%H:%M:%S}")
        if self.type not in HALF_HOURLY and self.time != datetime.combine(
            self.time, datetime.min.time()
        ):
            raise EtcNameError(f"{self.type} files are named by their day")

    @property
    def time_text(self) -> str:
        fmt = "%Y%m%d%H%M" if self.type in HALF_HOURLY else "%Y%m%d"
        return self.time.strftime(fmt)

    def __str__(self) -> str:
        return (
            f"{self.station}_{self.type}_{self.time_text}"
            f"_L{self.logger:02d}_F{self.file:02d}.{self.extension}"
        )

    @property
    def stem(self) -> str:
        return str(self).rsplit(".", 1)[0]

    @classmethod
    def daily(cls, station: str, type_: str, day: date, logger: int, file: int, ext: str):
        return cls(station, type_, datetime.combine(day, datetime.min.time()), logger, file, ext)


def parse(name: str) -> EtcName:
    """Parse and validate a file name as the portal does; EtcNameError says why not."""
    m = NAME.match(name)
    if not m:
        raise EtcNameError(f"{name!r} does not match <CC-Sss>_<TYPE>_<TIME>_L<nn>_F<nn>.<ext>")
    station, type_, stamp, logger, file, ext = m.groups()
    if type_ not in TYPES:
        raise EtcNameError(f"{name!r}: unknown file type {type_!r}")
    if len(logger) != 2 or len(file) != 2:
        raise EtcNameError(f"{name!r}: logger and file numbers need two digits")
    want = 12 if type_ in HALF_HOURLY else 8
    if len(stamp) != want:
        raise EtcNameError(
            f"{name!r}: {type_} files carry {'YYYYMMDDHHMM' if want == 12 else 'YYYYMMDD'}"
        )
    try:
        when = datetime.strptime(stamp, "%Y%m%d%H%M" if want == 12 else "%Y%m%d")
    except ValueError as exc:
        raise EtcNameError(f"{name!r}: {stamp} is not a valid time") from exc
    return EtcName(station, type_, when, int(logger), int(file), ext)
