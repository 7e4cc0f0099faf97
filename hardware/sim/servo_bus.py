"""The servo side of a Feetech STS bus, simulated: N servos, each a control table in memory
(hardware/registers/feetech/<model>.toml) answering PING, READ, WRITE, SYNC_READ and
SYNC_WRITE like the real servos — so the vendor's own SDK talks to it unmodified — and moving
its Present_Position toward Goal_Position, while torque is on, no faster than its speed and
acceleration limits allow.

Faults to test against: a servo that never answers (``silent``), error bits it sets
(``error_bits``: 0x20 overload, 0x04 overheating, 0x01 voltage), and a reply latency.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..protocol import feetech as ft
from ..registers import Table, load

MAX_SPEED = 3400.0               # ticks/s: the STS3215's no-load speed at 12 V (≈ 0.222 s/60°)
MAX_ACCEL = 20000.0              # ticks/s²


@dataclass
class Servo:
    table: Table
    servo_id: int
    mem: bytearray = field(init=False)
    position: float = 2048.0     # ticks
    velocity: float = 0.0        # ticks/s
    error_bits: int = 0
    silent: bool = False

    def __post_init__(self):
        self.mem = bytearray(self.table.size)
        self.set("Model_Number", self.table.model_number)
        self.set("ID", self.servo_id)
        self.set("Min_Position_Limit", 0)
        self.set("Max_Position_Limit", self.table.resolution - 1)
        self.set("Present_Voltage", 120)            # 12.0 V
        self.set("Present_Temperature", 30)
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
            speed_cap = self.get("Goal_Velocity") or MAX_SPEED
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
        else:
            self.velocity = 0.0
        self.set("Present_Position", int(round(self.position)) % self.table.resolution)
        self.set("Present_Velocity", int(round(self.velocity)))
        self.set("Moving", int(self.velocity != 0.0))

    def write(self, address: int, data: bytes) -> bool:
        """False (instruction error) for a write into read-only registers."""
        end = address + len(data)
        if end > len(self.mem):
            return False
        for r in self.table.registers.values():
            if r.access == "r" and r.address < end and address < r.address + r.size:
                return False
        self.mem[address:end] = data
        return True


class ServoBus:
    def __init__(self, ids: list[int], model: str = "sts3215", latency_s: float = 0.0):
        self.table = load("feetech", model)
        self.servos = {i: Servo(self.table, i) for i in ids}
        self.latency_s = latency_s
        self.parser = ft.Parser()
        self.last_step = time.monotonic()
        self.instructions = 0

    def advance(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        dt, self.last_step = now - self.last_step, now
        for s in self.servos.values():
            s.step(min(dt, 0.05))

    def receive(self, data: bytes) -> bytes:
        """What the bus answers to ``data`` (the host's bytes): every status packet, in order."""
        out = bytearray()
        for p in self.parser.feed(data):
            self.instructions += 1
            out += self._answer(p)
        if out and self.latency_s:
            time.sleep(self.latency_s)
        return bytes(out)

    def _status(self, s: Servo, params: bytes = b"", error: int = 0) -> bytes:
        return b"" if s.silent else ft.packet(s.servo_id, error | s.error_bits, params)

    def _answer(self, p: ft.Packet) -> bytes:
        if p.code == ft.SYNC_WRITE and len(p.params) >= 2:
            address, length = p.params[0], p.params[1]
            rows = p.params[2:]
            for k in range(0, len(rows) - length, length + 1):
                s = self.servos.get(rows[k])
                if s is not None:
                    s.write(address, rows[k + 1:k + 1 + length])
            return b""
        if p.code == ft.SYNC_READ and len(p.params) >= 2:
            address, length = p.params[0], p.params[1]
            return b"".join(self._status(s, bytes(s.mem[address:address + length]))
                            for s in (self.servos.get(i) for i in p.params[2:]) if s is not None)
        s = self.servos.get(p.servo_id)
        if s is None:
            return b""                               # nobody there: silence, as on a real bus
        if p.code == ft.PING:
            return self._status(s)
        if p.code == ft.READ and len(p.params) == 2:
            address, length = p.params
            if address + length > len(s.mem):
                return self._status(s, error=0x40)
            return self._status(s, bytes(s.mem[address:address + length]))
        if p.code in (ft.WRITE, ft.REG_WRITE) and p.params:
            ok = s.write(p.params[0], p.params[1:])
            return self._status(s, error=0 if ok else 0x40)
        return self._status(s, error=0x40)           # an instruction it does not know
