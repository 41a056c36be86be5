"""A Campbell logger running ``ModbusServer()``, simulated with a real pymodbus server.

The server listens on loopback, in a background thread with its own event loop: Modbus/TCP
(``transport="tcp"``) or RTU frames over TCP, as a serial server (USR-DR301) in TCP-server
mode carries them (``transport="rtu_over_tcp"``). Its Public variables change over time:
every ``period`` seconds an updater writes new values, deterministic functions of the
time (a daily sinusoid per variable, in a realistic range for its unit, plus a small
pseudo-random wobble per update), encoded with the logger's word order.

Requests to another unit id get no answer over RTU (a silent bus) and a "gateway target
device failed to respond" exception over Modbus/TCP. ``power_off`` / ``power_on`` close
and reopen the listening socket (and drop the connections) on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from stationflow.collect.modbus import INT_RANGES, decode, encode
from stationflow.config import ModbusCollect, ModbusRegister

DAY_S = 86_400.0
_HOLDING_FC = (3, 6, 16, 22, 23)
_WAIT = 5.0  # seconds any call into the server thread may take

# unit -> (mean, daily amplitude, wobble per update)
_RANGES: dict[str, tuple[float, float, float]] = {
    "%": (28.0, 4.0, 0.2),
    "degc": (14.0, 7.0, 0.3),
    "w/m2": (15.0, 45.0, 3.0),
    "v": (12.9, 0.5, 0.02),
    "umol/mol": (420.0, 20.0, 1.5),
    "mmol/mol": (11.0, 3.0, 0.2),
    "l/min": (1.0, 0.05, 0.02),
    "hpa": (1005.0, 4.0, 0.1),
    "m/s": (3.0, 2.0, 0.4),
}
_DEFAULT_RANGE = (50.0, 20.0, 1.0)


def _wobble(name: str, tick: int) -> float:
    """A deterministic pseudo-random number in [-1, 1) for (variable, update)."""
    digest = hashlib.blake2b(f"{name}:{tick}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1


def signal(reg: ModbusRegister, t: float, tick: int) -> float:
    """The engineering value of ``reg`` at time ``t`` (seconds since the epoch)."""
    phase = int.from_bytes(hashlib.blake2b(reg.name.encode(), digest_size=2).digest(), "big")
    phase = phase / 65536 * 2 * math.pi
    if reg.data_type != "float32" and not reg.unit:  # a state: valve number, flag
        lo, hi = INT_RANGES[reg.data_type]
        return float(max(lo, min(hi, 1 + tick % 8)))
    mean, amp, wobble = _RANGES.get(reg.unit.strip().lower(), _DEFAULT_RANGE)
    value = (
        mean + amp * math.sin(2 * math.pi * t / DAY_S + phase) + wobble * _wobble(reg.name, tick)
    )
    if reg.data_type != "float32":  # what the integer register can hold, in engineering units
        lo, hi = INT_RANGES[reg.data_type]
        raw = max(lo, min(hi, round((value - reg.offset) / reg.scale)))
        value = raw * reg.scale + reg.offset
    return value


class SimLogger:
    """A simulated logger's Modbus server; use as a context manager or start()/stop()."""

    def __init__(
        self,
        registers: Sequence[ModbusRegister],
        *,
        unit_id: int = 1,
        word_order: Literal["ABCD", "CDAB"] = "CDAB",
        transport: Literal["tcp", "rtu_over_tcp"] = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        period: float | None = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        """``period=None``: no updater, the values of the start time stay (see update())."""
        if not registers:
            raise ValueError("a logger needs at least one register")
        if period is not None and period <= 0:
            raise ValueError("period must be positive (or None)")
        self.registers = list(registers)
        self.unit_id = unit_id
        self.word_order = word_order
        self.transport = transport
        self.host = host
        self.port = port
        self.period = period
        self.clock = clock
        self._sizes = {
            kind: max((r.address + r.count for r in self.registers if r.type == kind), default=0)
            for kind in ("holding", "input")
        }
        self._images: dict[str, list[int]] = {k: [0] * n for k, n in self._sizes.items()}
        self._values: dict[str, float] = {}
        self._overrides: dict[str, float] = {}
        self._generation = 0
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None
        self._updater: asyncio.Task | None = None

    @classmethod
    def from_config(cls, cfg: ModbusCollect, **kwargs) -> SimLogger:
        """A logger answering as ``cfg`` expects (unit id, word order, transport)."""
        kwargs.setdefault("unit_id", cfg.unit_id)
        kwargs.setdefault("word_order", cfg.word_order)
        kwargs.setdefault("transport", cfg.transport)
        return cls(cfg.registers, **kwargs)

    # ------------------------------------------------------------------ life cycle

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> SimLogger:
        """Start the loop thread and the server; returns once the port accepts connections."""
        if self._loop is not None:
            raise RuntimeError("already started")
        self.update()  # the first values, before anyone can read
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, name=f"sim-modbus-{id(self):x}", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._listen())
            if self.period is not None:
                self._call(self._start_updater())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the server and end the loop thread (bounded: never hangs)."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown(cancel_all=True))
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_WAIT)
        if thread is None or not thread.is_alive():
            loop.close()
        self._loop = self._thread = None
        self._server = self._updater = None

    def power_off(self) -> None:
        """The logger loses power: the port refuses connections, open ones are dropped."""
        self._call(self._shutdown(cancel_all=False))

    def power_on(self) -> None:
        """Power is back: listen again on the same port."""
        if self._server is None:
            self._call(self._listen())

    def __enter__(self) -> SimLogger:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --------------------------------------------------------------------- values

    def values(self) -> dict[str, float]:
        """The current engineering values, as a reader decodes them from the registers."""
        return dict(self._values)

    @property
    def generation(self) -> int:
        """How many times the values were written."""
        return self._generation

    def update(self, at: float | None = None) -> dict[str, float]:
        """Write the values of time ``at`` (default: now) into the registers."""
        t = self.clock() if at is None else at
        tick = math.floor(t / self.period) if self.period else 0
        images = {k: [0] * n for k, n in self._sizes.items()}
        values = {}
        for reg in self.registers:
            value = self._overrides.get(reg.name)
            if value is None:
                value = signal(reg, t, tick)
            regs = encode(value, reg, self.word_order)
            images[reg.type][reg.address : reg.address + reg.count] = regs
            values[reg.name] = decode(regs, reg, self.word_order)
        with self._changed:  # readers see either the old or the new images, whole
            self._images, self._values = images, values
            self._generation += 1
            self._changed.notify_all()
        return dict(values)

    def set_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """Pin variables to fixed values (NaN included) from now on; None unpins one."""
        unknown = set(values) - {r.name for r in self.registers}
        if unknown:
            raise KeyError(f"no register {sorted(unknown)}")
        for name, value in values.items():
            if value is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = value
        return self.update()

    def wait_update(self, timeout: float = _WAIT) -> bool:
        """Block until the updater writes new values; False if none came in ``timeout``."""
        with self._changed:
            seen = self._generation
            return self._changed.wait_for(lambda: self._generation > seen, timeout)

    # -------------------------------------------------------------- server thread

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro):
        if self._loop is None or self._loop.is_closed():
            coro.close()
            raise RuntimeError("the simulated logger is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_WAIT)

    def _devices(self) -> list[SimDevice]:
        def regs(kind: str) -> list[SimData]:
            count = max(self._sizes[kind], 1)
            return [SimData(0, count=count, values=0, datatype=DataType.REGISTERS)]

        def bits() -> list[SimData]:
            return [SimData(0, values=False, datatype=DataType.BITS)]

        ours = SimDevice(
            self.unit_id,
            simdata=(bits(), bits(), regs("holding"), regs("input")),
            action=self._action,
        )
        if self.unit_id == 0:
            return [ours]
        others = SimDevice(  # id 0: every other unit id
            0, simdata=(bits(), bits(), regs("holding"), regs("input")), action=self._other_unit
        )
        return [ours, others]

    async def _action(self, function_code, start_address, address, count, current, set_values):
        """Serve reads from the current images; Public variables are read-only here."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        image = self._images["holding" if function_code in _HOLDING_FC else "input"]
        current[: len(image)] = image  # the block starts at address 0
        return None

    async def _other_unit(self, *args) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Over RTU a device answers its own address only: drop the other units' answers."""
        if sending and self.transport == "rtu_over_tcp" and data and data[0] != self.unit_id:
            return b""
        return data

    async def _listen(self) -> None:
        framer = FramerType.RTU if self.transport == "rtu_over_tcp" else FramerType.SOCKET
        server = ModbusTcpServer(
            self._devices(),
            framer=framer,
            address=(self.host, self.port),
            trace_packet=self._trace_packet,
        )
        await server.serve_forever(background=True)
        self.port = server.transport.sockets[0].getsockname()[1]
        self._server = server

    async def _shutdown(self, *, cancel_all: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            for _ in range(3):  # let connections already at the door in first (an accept
                await asyncio.sleep(0)  # racing the close leaves a socket behind)
            await server.shutdown()
        if cancel_all:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1)

    async def _start_updater(self) -> None:
        self._updater = asyncio.get_running_loop().create_task(self._update_forever())

    async def _update_forever(self) -> None:
        assert self.period is not None
        while True:
            t = self.clock()
            await asyncio.sleep(self.period - t % self.period)  # to the next tick
            self.update()
