"""A device's TCP port (a logger's PakBus or HTTP port) standing in for its reachability.

The listener accepts connections and closes them at once: a health check only needs the
TCP handshake to succeed. ``power_off()`` closes the listener (connections are refused),
``power_on()`` listens again on the same port, ``power_cycle(boot_seconds)`` does both
with the boot time in between, the way a relay's power cut does to a real logger.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

_POLL_S = 0.05  # how often the accept loop notices power_off()


class TcpDevice:
    """A TCP listener on loopback that accepts and closes connections.

    ``port=0`` picks a free port on the first ``start()``; the same port is reused by every
    later ``power_on()``. Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._port = port
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._timer: threading.Timer | None = None
        self.connections = 0  # connections accepted since creation

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("TcpDevice has no port yet: start() it first")
        return self._port

    @property
    def powered(self) -> bool:
        return self._sock is not None

    def start(self) -> TcpDevice:
        self.power_on()
        return self

    def stop(self) -> None:
        """Power off for good: cancel a pending power-on and close the listener."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.power_off()

    def power_on(self) -> None:
        with self._lock:
            if self._sock is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self._port))
                sock.listen(16)
            except OSError:
                sock.close()
                raise
            self._port = sock.getsockname()[1]
            self._sock = sock
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._serve,
                args=(sock, self._stop),
                name=f"tcp-device-{self._port}",
                daemon=True,
            )
            self._thread.start()

    def power_off(self) -> None:
        """Close the listener; when this returns, connections to the port are refused."""
        with self._lock:
            sock, thread, self._sock, self._thread = self._sock, self._thread, None, None
            if sock is None:
                return
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        sock.close()

    def power_cycle(self, boot_seconds: float = 0.0) -> None:
        """Off now, on again after ``boot_seconds`` (in a timer thread)."""
        self.power_off()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(boot_seconds, self._boot)
            self._timer.daemon = True
            self._timer.start()

    def _boot(self) -> None:
        with self._lock:
            self._timer = None
        self.power_on()

    def _serve(self, sock: socket.socket, stop: threading.Event) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while not stop.is_set():
                if not sel.select(_POLL_S):
                    continue
                with contextlib.suppress(OSError):
                    client, _ = sock.accept()
                    client.close()
                    self.connections += 1

    def __enter__(self) -> TcpDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "on" if self.powered else "off"
        return f"TcpDevice({self.host}:{self._port or '?'}, {state})"
