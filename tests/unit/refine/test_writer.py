"""The write path's machinery: the lent-buffer ring and in-place NAN rewriting."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import date

import pytest

from stationflow.refine import etc_writer
from stationflow.refine.assemble import Request, assemble
from stationflow.refine.hashing import HashingWriter
from tests.toa5_builder import series, toa5


class SlowFile(io.BytesIO):
    """A sink slower than its producer, so the queues fill and the ring comes round."""

    def write(self, chunk) -> int:
        time.sleep(0.002)
        return super().write(bytes(chunk))


def test_lent_buffers_are_never_overwritten_while_in_use():
    sink = SlowFile()
    w = HashingWriter(sink)
    expected = []
    for k in range(60):
        piece = bytes([65 + k % 26]) * (5000 - k)  # shrinking: every buffer is reused
        buf = w.buffer(len(piece))
        buf[: len(piece)] = piece
        w.write(memoryview(buf)[: len(piece)])
        expected.append(piece)
    digests = w.close()
    data = b"".join(expected)
    assert sink.getvalue() == data
    assert digests == {
        "md5": hashlib.md5(data).hexdigest(),  # noqa: S324
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("missing", [-9999, -99999, -9999.5])
def test_not_a_number_tokens_whatever_the_path(tmp_path, eol, missing):
    rows = series("2026-11-20 00:30:00", 1800, 48)
    rows = [r.rsplit(b",", 1)[0] + b',"NAN"' if i % 3 == 0 else r for i, r in enumerate(rows)]
    rows[4] = rows[4].rsplit(b",", 1)[0] + b',"INF"'
    rows[5] = rows[5].rsplit(b",", 1)[0] + b',"-INF"'  # 6 bytes: never rewritten in place
    (tmp_path / "a.dat").write_bytes(toa5(rows, eol=eol))
    req = Request("FR-Lam", "BM", 1, 1, date(2026, 11, 20), tmp_path / "out", missing=missing)
    out = assemble(req, [tmp_path / "a.dat"]).outputs[0].path.read_bytes()
    code = etc_writer.missing_text(missing)
    assert b"NAN" not in out and b"INF" not in out
    body = out.split(b"\r\n")[4:-1]
    assert body == [r.rsplit(b",", 1)[0] + b"," + code if r.endswith(b'"') else r for r in rows]
    assert b"\n" not in out.replace(b"\r\n", b"")


def test_many_tokens_fall_back_to_one_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(etc_writer, "MAX_IN_PLACE", 3)
    rows = [r.rsplit(b",", 1)[0] + b',"NAN"' for r in series("2026-11-20 00:30:00", 1800, 48)]
    (tmp_path / "a.dat").write_bytes(toa5(rows))
    req = Request("FR-Lam", "BM", 1, 1, date(2026, 11, 20), tmp_path / "out")
    out = assemble(req, [tmp_path / "a.dat"]).outputs[0].path.read_bytes()
    assert out.count(b",-9999\r\n") == 48 and b"NAN" not in out
