"""A servo bus as one device (Feetech STS or Dynamixel Protocol 2.0): one channel pair per
joint — ``<joint>.position`` (sensor, radians) and ``<joint>.goal`` (actuator, radians).

transport (pyserial) → protocol (hardware/protocol/feetech.py, dynamixel.py) → this device.
A bus thread does one transaction per tick: a sync write of every goal (while armed), then a
sync read of every present position, replies gathered until a deadline sized from the bytes
on the wire — never longer — and a servo that did not answer asked once more if there is time.
The loop's ``poll`` only copies the latest published reading (no I/O on the tick's path); a
joint whose servo stopped answering is simply not updated, so its channel goes stale and the
loop fails safe. Per servo: answers missing, error bits (by name), checksum errors.

Positions convert with the joint's calibration: radians = (ticks − centre) · direction · 2π /
resolution (uncalibrated: centre = resolution / 2, direction +1); goals are clamped to the
servo's own position limits, read at open, and each clamp is counted.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..channels import ACTUATOR, SENSOR, Channel
from ..device import Device
from ..errors import DeviceError, HardwareError
from ..protocol import dynamixel as dx
from ..protocol import feetech as ft
from ..registers import load
from ..transport import SerialTransport

PROTOCOLS = {"feetech": ft, "dynamixel": dx}


@dataclass
class Joint:
    name: str
    servo_id: int
    centre: float                       # ticks at 0 rad
    direction: int = 1
    lo_ticks: int = 0                   # the servo's own limits (read at open)
    hi_ticks: int = 4095


@dataclass
class ServoStats:
    missing: int = 0                    # transactions it did not answer
    errors: dict = field(default_factory=dict)     # error name → count
    clamped: int = 0                    # goals beyond its limits


class ServoBusDevice(Device):
    reconnectable = True

    def __init__(self, name: str, port: str, vendor: str, model: str, joints: dict[str, int],
                 baudrate: int = 1_000_000, latency_s: float = 0.002, transport=None):
        super().__init__(name)
        if vendor not in PROTOCOLS:
            raise DeviceError(name, f"unknown servo bus {vendor!r}; expected one of {', '.join(PROTOCOLS)}")
        self.port, self.vendor, self.baudrate, self.latency_s = port, vendor, baudrate, latency_s
        self.proto, self.table = PROTOCOLS[vendor], load(vendor, model)
        res = self.table.resolution
        self.joints = [Joint(j, sid, res / 2, 1, 0, res - 1) for j, sid in joints.items()]
        self.ids = [j.servo_id for j in self.joints]
        self.servo_stats = {sid: ServoStats() for sid in self.ids}
        chans = []
        for j in self.joints:
            chans.append(Channel(f"{j.name}.position", SENSOR, (1,), -math.pi, math.pi, "rad"))
            chans.append(Channel(f"{j.name}.goal", ACTUATOR, (1,), -math.pi, math.pi, "rad"))
        self._set_channels(chans)
        self._transport, self._given_transport = transport, transport is not None
        self.parser = self.proto.Parser()
        self._lock = threading.Lock()           # the published reading and the pending goals
        self._bus = threading.Lock()            # one conversation on the wire at a time
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._ticks = np.zeros(len(self.joints), np.int64)        # the latest reading, per joint
        self._seen = np.zeros(len(self.joints), np.float64)       # when each joint was last read (monotonic)
        self._used = np.zeros(len(self.joints), np.float64)       # ... and what poll() took last
        self._goal = np.zeros(len(self.joints), np.int64)         # goals for the next transaction (ticks)
        self.armed = False
        self.transactions = 0
        self.late_bytes = 0                     # answers that came after their deadline (dropped)
        self.bus_error = ""

    # --- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        if self._transport is None or not self._given_transport:
            self._transport = SerialTransport(self.port, self.baudrate, name=self.name)
        try:
            self._check_servos()
        except HardwareError:
            self.close()
            raise
        self.armed, self._stop = False, False
        self.is_open = True
        self._thread = threading.Thread(target=self._run, name=f"bus-{self.name}", daemon=True)
        self._thread.start()

    def _check_servos(self) -> None:
        """Every joint's servo answers, is the model the board says, and tells its limits."""
        for j in self.joints:
            model = self._read(j.servo_id, "Model_Number")
            if model != self.table.model_number:
                raise DeviceError(self.name, f"servo {j.servo_id} ({j.name}) is model number {model}, "
                                  f"expected {self.table.model_number} ({self.table.model})")
            j.lo_ticks, j.hi_ticks = self._read(j.servo_id, "Min_Position_Limit"), self._read(j.servo_id, "Max_Position_Limit")

    def close(self) -> None:
        self._stop = True
        self._kick.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._transport is not None and not self._given_transport:
            self._transport.close()
            self._transport = None
        self.is_open = False

    def retarget(self, path: str) -> None:
        self.port = path

    def arm(self, timeout_s: float = 1.0) -> None:
        """Torque on, the first goal being where each joint is now: nothing moves."""
        self._require_open()
        start, deadline = self.transactions, time.monotonic() + timeout_s
        while self.transactions <= start and time.monotonic() < deadline:     # a reading taken after this call
            self._kick.set()
            time.sleep(0.002)
        unread = [j.name for k, j in enumerate(self.joints) if not self._seen[k]]
        if self.transactions <= start or unread:
            raise DeviceError(self.name, f"cannot arm: no position read from {', '.join(unread) or 'the bus'}")
        with self._lock:
            self._goal[:] = self._ticks
            for k, j in enumerate(self.joints):
                self.commands[f"{j.name}.goal"][0] = self._to_rad(j, int(self._ticks[k]))
        self._broadcast("Torque_Enable", 1)
        self.armed = True

    def disarm(self) -> None:
        self.armed = False
        self._broadcast("Torque_Enable", 0)

    # --- the loop's side: no bus I/O ------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        self._require_open()
        if self.bus_error:
            raise HardwareError(self.name, self.bus_error)
        with self._lock:
            fresh = np.nonzero(self._seen > self._used)[0]
            for k in fresh:
                j = self.joints[k]
                s = self.samples[f"{j.name}.position"]
                s.values[0] = self._to_rad(j, int(self._ticks[k]))
                s.t_host, s.t_device_us = float(self._seen[k]), int(self._seen[k] * 1e6)
                s.count += 1
                s.check(self.channels[f"{j.name}.position"])
            self._used[:] = self._seen
        return len(fresh)

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self._require_open()
        with self._lock:
            for k, j in enumerate(self.joints):
                self._goal[k] = self._to_ticks(j, float(self.commands[f"{j.name}.goal"][0]))
        self._kick.set()

    def stats(self) -> dict:
        out = {"transactions": self.transactions, "checksum_errors": self._checksum_errors(), "armed": int(self.armed),
               "late_bytes": self.late_bytes}
        for sid, st in self.servo_stats.items():
            out[f"servo{sid}_missing"] = st.missing
            out[f"servo{sid}_clamped"] = st.clamped
            for err, n in st.errors.items():
                out[f"servo{sid}_{err.replace(' ', '_')}"] = n
        return out

    # --- conversions -------------------------------------------------------------------------------
    def _to_rad(self, j: Joint, ticks: int) -> float:
        return (ticks - j.centre) * j.direction * 2 * math.pi / self.table.resolution

    def _to_ticks(self, j: Joint, rad: float) -> int:
        t = int(round(j.centre + rad * j.direction * self.table.resolution / (2 * math.pi)))
        if not j.lo_ticks <= t <= j.hi_ticks:
            self.servo_stats[j.servo_id].clamped += 1
            t = min(max(t, j.lo_ticks), j.hi_ticks)
        return t

    # --- the bus thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            self._kick.wait(0.05)            # a flush starts a transaction; without one, read at 20 Hz
            self._kick.clear()
            if self._stop:
                break
            try:
                with self._bus:
                    self._transaction()
            except HardwareError as e:       # unplugged: the loop learns it from poll()
                self.bus_error = str(e)
                return

    def _transaction(self) -> None:
        pos = self.table["Present_Position"]
        if self.armed:
            goal = self.table["Goal_Position"]
            with self._lock:
                data = {j.servo_id: goal.encode(int(self._goal[k]), self.table.endian) for k, j in enumerate(self.joints)}
            self._transport.write(self.proto.sync_write(goal.address, goal.size, data))
        got = self._gather(self.proto.sync_read(pos.address, pos.size, self.ids), set(self.ids))
        missing = set(self.ids) - set(got)
        if missing:                          # once more for those, if the deadline allows
            got.update(self._gather(self.proto.sync_read(pos.address, pos.size, sorted(missing)), missing))
        now = time.monotonic()
        with self._lock:
            for k, j in enumerate(self.joints):
                if j.servo_id in got:
                    self._ticks[k] = pos.decode(got[j.servo_id], self.table.endian)
                    self._seen[k] = now
                else:
                    self.servo_stats[j.servo_id].missing += 1
        self.transactions += 1

    def _deadline(self, n_bytes: int, slack_s: float = 0.002) -> float:
        """Time for ``n_bytes`` at the baud rate (10 bits a byte), the adapter's latency, a margin."""
        return time.monotonic() + n_bytes * 10 / self.baudrate + self.latency_s + slack_s

    def _gather(self, request: bytes, want: set[int], slack_s: float = 0.002) -> dict[int, bytes]:
        """Send ``request``; the status packets of ``want`` until they all came or the deadline.
        Answers that arrived after an earlier deadline are dropped first, never taken for new ones."""
        while self._transport.pending():
            self.late_bytes += len(self._transport.read_some(4096, 0))
        self.parser.buf.clear()
        self._transport.write(request)
        deadline = self._deadline(len(request) + len(want) * 16, slack_s)
        got: dict[int, bytes] = {}
        while want - set(got):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for p in self.parser.feed(self._transport.read_some(4096, left)):
                if p.servo_id in want:
                    self._note_error(p.servo_id, p.error)
                    got[p.servo_id] = p.data
        return got

    def _note_error(self, sid: int, error: int) -> None:
        if not error:
            return
        names = ft.errors(error) if self.vendor == "feetech" else [dx.describe_error(error)]
        for n in names:
            self.servo_stats[sid].errors[n] = self.servo_stats[sid].errors.get(n, 0) + 1

    def _checksum_errors(self) -> int:
        return self.parser.stats.checksum_errors

    # --- one servo at a time (open, arm) --------------------------------------------------------------
    def _read(self, sid: int, register: str) -> int:
        r = self.table[register]
        got = {}
        for _ in range(3):               # not on the tick's path: generous (a USB adapter's default latency
            with self._bus:              # timer is 16 ms), and asked again
                got = self._gather(self.proto.read(sid, r.address, r.size), {sid}, slack_s=0.05)
            if sid in got:
                break
        if sid not in got:
            raise DeviceError(self.name, f"servo {sid} on {self.port} did not answer (is it powered, "
                              f"is its id {sid}, is the bus at {self.baudrate} baud?)")
        return r.decode(got[sid], self.table.endian)

    def _broadcast(self, register: str, value: int) -> None:
        r = self.table[register]
        data = {sid: r.encode(value, self.table.endian) for sid in self.ids}
        with self._bus:
            self._transport.write(self.proto.sync_write(r.address, r.size, data))
