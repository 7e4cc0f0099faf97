"""The servo side of a Feetech STS or a Dynamixel Protocol 2.0 bus, simulated: N servos, each
a control table in memory (hardware/registers/<vendor>/<model>.toml) answering PING, READ,
WRITE, SYNC_READ and SYNC_WRITE like the real servos — so the vendors' own SDKs talk to it
unmodified — and moving Present_Position toward Goal_Position, while torque is on, no faster
than its speed and acceleration limits allow.

Faults to test against: a servo that never answers (``silent``), error bits it sets
(``error_bits``: Feetech 0x20 overload, 0x04 overheating, 0x01 voltage; Dynamixel: the alert
bit, with the cause in Hardware_Error_Status), and a reply latency.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..protocol import dynamixel as dx
from ..protocol import feetech as ft
from ..registers import Table, load

MAX_SPEED = 3400.0               # ticks/s: the STS3215's no-load speed at 12 V (≈ 0.222 s/60°)
MAX_ACCEL = 20000.0              # ticks/s²


@dataclass
class Servo:
    table: Table
    servo_id: int
    mem: bytearray = field(init=False)
    read_only: bytearray = field(init=False)
    position: float = -1.0       # ticks (-1: the middle of its turn)
    velocity: float = 0.0        # ticks/s
    error_bits: int = 0
    silent: bool = False
    answer_as: int | None = None     # a servo that answers with another id (a mis-set or clashing id)
    hand: float = 0.0                # torque off: a hand moves it ± this many ticks around its start
    phase: float = 0.0

    def __post_init__(self):
        self.mem = bytearray(self.table.size)
        if self.position < 0:
            self.position = self.table.resolution / 2
        self.read_only = bytearray(self.table.size)          # 1 where a read-only register lies
        for r in self.table.registers.values():
            if r.access == "r":
                self.read_only[r.address:r.address + r.size] = b"\x01" * r.size
        self.set("Model_Number", self.table.model_number)
        self.set("ID", self.servo_id)
        self.set("Min_Position_Limit", 0)
        self.set("Max_Position_Limit", self.table.resolution - 1)
        for name, value in (("Present_Voltage", 120), ("Present_Input_Voltage", 120),    # 12.0 V
                            ("Present_Temperature", 30), ("Firmware_Version", 46)):
            if name in self.table.registers:
                self.set(name, value)
        self.set("Goal_Position", int(self.position))
        self.set("Present_Position", int(self.position))

    def get(self, name: str) -> int:
        r = self.table[name]
        return r.decode(self.mem[r.address:r.address + r.size], self.table.endian)

    def set(self, name: str, value: int) -> None:
        r = self.table[name]
        self.mem[r.address:r.address + r.size] = r.encode(value, self.table.endian)

    def step(self, dt: float) -> None:
        """Track the goal (torque on) within the speed and acceleration limits; coast to a stop
        with torque off."""
        if self.get("Torque_Enable"):
            lo, hi = self.get("Min_Position_Limit"), self.get("Max_Position_Limit")
            goal = min(max(self.get("Goal_Position"), lo), hi)
            speed_cap = self.get(self.table.speed_register) * self.table.velocity_unit or MAX_SPEED
            err = goal - self.position
            stop_dist = self.velocity ** 2 / (2 * MAX_ACCEL)
            want = min(speed_cap, MAX_SPEED) * (1 if err > 0 else -1) if abs(err) > stop_dist else 0.0
            dv = max(-MAX_ACCEL * dt, min(MAX_ACCEL * dt, want - self.velocity))
            self.velocity += dv
            moved = self.velocity * dt
            if abs(moved) >= abs(err) and (err == 0 or (moved > 0) == (err > 0)):
                self.position, self.velocity = float(goal), 0.0
            else:
                self.position += moved
        elif self.hand:
            t = time.monotonic()
            centre = self.table.resolution / 2
            was = self.position
            self.position = centre + self.hand * math.sin(2 * math.pi * 0.5 * t + self.phase)
            self.velocity = max(-MAX_SPEED, min(MAX_SPEED, (self.position - was) / dt)) if dt else 0.0
        else:
            self.velocity = 0.0
        self.set("Present_Position", int(round(self.position)))
        self.set("Present_Velocity", int(round(self.velocity / self.table.velocity_unit)))
        self.set("Moving", int(self.velocity != 0.0))

    def write(self, address: int, data: bytes) -> bool:
        """False (instruction error) for a write into read-only registers."""
        end = address + len(data)
        if end > len(self.mem) or any(self.read_only[address:end]):
            return False
        self.mem[address:end] = data
        return True


class FeetechWire:
    """Feetech STS framing: 1-byte addresses and lengths, a status packet per answer."""
    vendor = "feetech"
    PING, READ, WRITE, REG_WRITE, SYNC_READ, SYNC_WRITE = ft.PING, ft.READ, ft.WRITE, ft.REG_WRITE, ft.SYNC_READ, ft.SYNC_WRITE
    ADDR = 1
    INSTRUCTION_ERROR = ACCESS_ERROR = 0x40
    FAST_SYNC_READ = None

    def __init__(self):
        self.parser = ft.Parser()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        return [(p.servo_id, p.code, p.params) for p in self.parser.feed(data)]

    def status(self, sid: int, error: int, data: bytes = b"") -> bytes:
        return ft.packet(sid, error, data)

    def ping_data(self, servo) -> bytes:
        return b""


class DynamixelWire:
    """Dynamixel Protocol 2.0 framing: 2-byte addresses and lengths, byte stuffing, CRC-16; a
    ping answers with the model number and firmware version."""
    vendor = "dynamixel"
    PING, READ, WRITE, REG_WRITE, SYNC_READ, SYNC_WRITE = dx.PING, dx.READ, dx.WRITE, dx.REG_WRITE, dx.SYNC_READ, dx.SYNC_WRITE
    ADDR = 2
    INSTRUCTION_ERROR, ACCESS_ERROR = 2, 7
    FAST_SYNC_READ = dx.FAST_SYNC_READ

    def __init__(self):
        self.parser = dx.Parser()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        return [(p.servo_id, p.instruction, p.params) for p in self.parser.feed(data) if p.instruction != dx.STATUS]

    def status(self, sid: int, error: int, data: bytes = b"") -> bytes:
        return dx.status(sid, error, data)

    def ping_data(self, servo) -> bytes:
        return servo.table.model_number.to_bytes(2, "little") + bytes((servo.get("Firmware_Version"),))

    def fast_status(self, rows: list[tuple[int, int, bytes]]) -> bytes:
        return dx.fast_status(rows)


WIRES = {"feetech": FeetechWire, "dynamixel": DynamixelWire}


class ServoBus:
    """``model``: one register table for every servo, or a list with one per servo (a Koch arm
    mixes XL430s and XL330s). ``trace``: a file that gets one line per goal or torque write
    (monotonic time, register, {id: value}) — what a logic analyser on the bus would show."""

    def __init__(self, ids: list[int], model: str | list[str] = "sts3215", latency_s: float = 0.0,
                 vendor: str = "feetech", trace=None):
        models = [model] * len(ids) if isinstance(model, str) else list(model)
        if len(models) != len(ids):
            raise ValueError(f"{len(ids)} servos but {len(models)} models")
        tables = {m: load(vendor, m) for m in set(models)}
        self.table = tables[models[0]]
        self.wire = WIRES[vendor]()
        self.servos = {i: Servo(tables[m], i) for i, m in zip(ids, models)}
        for k, s in enumerate(self.servos.values()):
            s.phase = 1.3 * k
        self.latency_s = latency_s
        self.last_step = time.monotonic()
        self.instructions = 0
        self.trace = trace
        self._watch = {self.table["Goal_Position"].address: "Goal_Position",
                       self.table["Torque_Enable"].address: "Torque_Enable"}

    def advance(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        dt, self.last_step = now - self.last_step, now
        for s in self.servos.values():
            s.step(min(dt, 0.05))

    def receive(self, data: bytes) -> bytes:
        """What the bus answers to ``data`` (the host's bytes): every status packet, in order."""
        out = bytearray()
        for sid, code, params in self.wire.feed(data):
            self.instructions += 1
            out += self._answer(sid, code, params)
        if out and self.latency_s:
            time.sleep(self.latency_s)
        return bytes(out)

    def _status(self, s: Servo, params: bytes = b"", error: int = 0) -> bytes:
        sid = s.servo_id if s.answer_as is None else s.answer_as
        return b"" if s.silent else self.wire.status(sid, error | s.error_bits, params)

    def _traced(self, address: int, values: dict[int, int]) -> None:
        name = self._watch.get(address)
        if self.trace is not None and name and values:
            self.trace.write(f"{time.monotonic():.6f} {name} " + " ".join(f"{k}={v}" for k, v in values.items()) + "\n")
            self.trace.flush()

    def _fields(self, params: bytes) -> tuple[int, int, bytes]:
        """(address, length, the rest) of a READ/SYNC_READ/SYNC_WRITE's params."""
        n = self.wire.ADDR
        return int.from_bytes(params[:n], "little"), int.from_bytes(params[n:2 * n], "little"), params[2 * n:]

    def _answer(self, sid: int, code: int, params: bytes) -> bytes:
        w = self.wire
        if code == w.SYNC_WRITE and len(params) >= 2 * w.ADDR:
            address, length, rows = self._fields(params)
            wrote = {}
            for k in range(0, len(rows) - length, length + 1):
                s = self.servos.get(rows[k])
                if s is not None and s.write(address, rows[k + 1:k + 1 + length]):
                    wrote[s.servo_id] = s.get(self._watch[address]) if address in self._watch else 0
            self._traced(address, wrote)
            return b""
        if code == w.FAST_SYNC_READ and len(params) >= 2 * w.ADDR:
            address, length, ids = self._fields(params)
            asked = [self.servos.get(i) for i in ids]
            if any(s is None or s.silent for s in asked):
                return b""                           # the chain breaks at the first servo that is not there
            return w.fast_status([(s.servo_id if s.answer_as is None else s.answer_as, s.error_bits,
                                   bytes(s.mem[address:address + length])) for s in asked])
        if code == w.SYNC_READ and len(params) >= 2 * w.ADDR:
            address, length, ids = self._fields(params)
            return b"".join(self._status(s, bytes(s.mem[address:address + length]))
                            for s in (self.servos.get(i) for i in ids) if s is not None)
        s = self.servos.get(sid)
        if s is None:
            return b""                               # nobody there: silence, as on a real bus
        if code == w.PING:
            return self._status(s, w.ping_data(s))
        if code == w.READ and len(params) == 2 * w.ADDR:
            address, length, _ = self._fields(params)
            if address + length > len(s.mem):
                return self._status(s, error=w.INSTRUCTION_ERROR)
            return self._status(s, bytes(s.mem[address:address + length]))
        if code in (w.WRITE, w.REG_WRITE) and len(params) > w.ADDR:
            address = int.from_bytes(params[:w.ADDR], "little")
            ok = s.write(address, params[w.ADDR:])
            if ok and address in self._watch:
                self._traced(address, {sid: s.get(self._watch[address])})
            return self._status(s, error=0 if ok else w.ACCESS_ERROR)
        return self._status(s, error=w.INSTRUCTION_ERROR)      # an instruction it does not know
