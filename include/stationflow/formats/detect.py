"""Open any supported logger file by what its bytes say, not by its name."""

from __future__ import annotations

import mmap

from stationflow.formats.table import Table, UnreadableFragment


def read_any(data: bytes | mmap.mmap, source: str, *, utc_offset_hours: float) -> Table:
    """TOA5, TOB1 or LI-COR .ghg from the file's bytes; UnreadableFragment for anything else."""
    if not len(data):
        raise UnreadableFragment(source, "empty file")
    head = data[:8]
    if head.startswith(b'"TOA5"'):
        from stationflow.formats.toa5 import read_toa5

        return read_toa5(data, source)
    if head.startswith(b'"TOB1"'):
        from stationflow.formats.tob1 import read_tob1

        return read_tob1(data, source)
    if head.startswith(b"PK\x03\x04"):
        from stationflow.formats.ghg import read_ghg

        return read_ghg(data, utc_offset_hours=utc_offset_hours, source=source)
    raise UnreadableFragment(source, f"unknown format (starts with {head!r})", 1)
