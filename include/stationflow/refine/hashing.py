"""md5 + sha256 computed beside the work, not after it.

hashlib releases the GIL on large buffers, so each digest runs in its own thread while the
caller goes on reading, merging or writing: on two cores the hashes cost almost no wall time.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import BinaryIO


class _Digest(threading.Thread):
    def __init__(self, name: str, bound: int):
        super().__init__(daemon=True, name=f"hash-{name}")
        self.hash = hashlib.new(name, usedforsecurity=False)
        self.chunks: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=bound)

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.hash.update(chunk)


class BackgroundHashes:
    """Feed chunks in order; ``hexdigests()`` waits for the threads and returns the digests."""

    def __init__(self, names: tuple[str, ...] = ("md5", "sha256"), bound: int = 2):
        # bound: chunks waiting per digest; 0 = no bound (for views of bytes already held)
        self._threads = {n: _Digest(n, bound) for n in names}
        for t in self._threads.values():
            t.start()

    def update(self, chunk: bytes) -> None:
        for t in self._threads.values():
            t.chunks.put(chunk)

    def hexdigests(self) -> dict[str, str]:
        for t in self._threads.values():
            t.chunks.put(None)
        for t in self._threads.values():
            t.join()
        return {n: t.hash.hexdigest() for n, t in self._threads.items()}


def sha256_bytes_async(data: bytes) -> BackgroundHashes:
    """Start hashing ``data`` (sha256) in the background; read it with ``.hexdigests()``."""
    h = BackgroundHashes(("sha256",), bound=0)
    view = memoryview(data)
    for a in range(0, len(data), 1 << 22):
        h.update(view[a : a + (1 << 22)])
    return h


class HashingWriter:
    """A binary sink that keeps the md5 and sha256 of everything written to it."""

    def __init__(self, out: BinaryIO):
        self.out, self.size = out, 0
        self._hashes = BackgroundHashes()

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self._hashes.update(chunk)
        self.size += len(chunk)

    def close(self) -> dict[str, str]:
        return self._hashes.hexdigests()
