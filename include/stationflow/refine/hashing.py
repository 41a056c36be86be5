"""An output file written, md5-summed and sha256-summed beside the work, not after it.

hashlib and file writes release the GIL on large buffers, so each consumer runs in its own
thread while the caller prepares the next chunk: on two cores hashing and writing cost
little extra wall time. Chunks are handed over in order through bounded queues.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

Chunk = bytes | memoryview


class _Consumer(threading.Thread):
    def __init__(self, name: str, apply: Callable[[Chunk], object], bound: int):
        super().__init__(daemon=True, name=name)
        self.apply = apply
        self.chunks: queue.Queue[Chunk | None] = queue.Queue(maxsize=bound)
        self.error: BaseException | None = None

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.apply(chunk)
                except BaseException as exc:  # reported to the caller by finish()
                    self.error = exc


class _Pipeline:
    """Feed every chunk to each consumer, in order; ``finish`` joins and re-raises."""

    def __init__(self, consumers: dict[str, Callable[[Chunk], object]], bound: int):
        self._threads = [_Consumer(n, f, bound) for n, f in consumers.items()]
        for t in self._threads:
            t.start()

    def update(self, chunk: Chunk) -> None:
        for t in self._threads:
            t.chunks.put(chunk)

    def finish(self) -> None:
        for t in self._threads:
            t.chunks.put(None)
        for t in self._threads:
            t.join()
        for t in self._threads:
            if t.error is not None:
                raise t.error


class HashingWriter:
    """Writes to ``out`` and keeps md5 + sha256 of it; the work happens in three threads."""

    def __init__(self, out: BinaryIO, expected_size: int = 0):
        self.size, self._out, self._reserved = 0, out, 0
        if expected_size > 0 and hasattr(out, "fileno"):
            # ext4 allocates blocks while writing; reserving them first makes big files
            # several times faster to write. close() trims what was not used.
            with contextlib.suppress(OSError):
                os.posix_fallocate(out.fileno(), 0, expected_size)
                self._reserved = expected_size
        self._md5 = hashlib.md5(usedforsecurity=False)  # the ETC protocol's checksum
        self._sha = hashlib.sha256()
        self._pipe = _Pipeline(
            {"write": out.write, "md5": self._md5.update, "sha256": self._sha.update}, bound=3
        )

    def write(self, chunk: Chunk) -> None:
        self._pipe.update(chunk)
        self.size += len(chunk)

    def close(self) -> dict[str, str]:
        """Wait for every chunk to be written and hashed; raises a write error here."""
        self._pipe.finish()
        if self._reserved > self.size:
            self._out.flush()
            os.ftruncate(self._out.fileno(), self.size)
        return {"md5": self._md5.hexdigest(), "sha256": self._sha.hexdigest()}
