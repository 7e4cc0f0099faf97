"""A servo bus as one device (Feetech STS or Dynamixel Protocol 2.0): a ``position`` sensor and
a ``goal`` actuator with one element per joint, in radians (and optionally ``ticks``, the raw
present positions in the register's own integer type).

transport (pyserial) → protocol (feetech.py, dynamixel.py; servo_link.py: requests and the
answers gathered by deadline) → this device. A bus thread does one transaction per tick: a
sync write of every goal (while armed) and a sync read of every present position (Dynamixel:
FAST_SYNC_READ when the board asks for it) in one write. The loop's ``poll`` only copies
the latest published reading (no I/O on the tick's path); a joint whose servo stopped answering
is not updated, so ``position`` goes stale and the loop fails safe. Per servo: answers missing,
error bits (by name), goals clamped; on the bus: checksum errors, answers from unexpected ids.

Lifecycle (as ros2_control's): configured (open, torque as it was) → armed (torque on, the
first goal the present position: nothing moves) → disarmed (torque off). Arming needs a
calibration of every joint (hardware/calibration.py) and a recent reading of every joint.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..calibration import JointCalibration
from ..channels import ACTUATOR, SENSOR, Channel
from ..device import Device
from ..errors import DeviceError, HardwareError
from ..protocol.servo_link import PROTOCOLS, ServoLink
from ..registers import load
CHANNELS = ("position", "goal", "ticks")
SHARED = ("Present_Position", "Goal_Position", "Torque_Enable")   # one address for all: one sync read/write
TAU = 2 * math.pi


@dataclass
class Joint:
    name: str
    servo_id: int
    table: object                       # the servo's register table
    lo_ticks: int = 0                   # the servo's own limits (read at open)
    hi_ticks: int = 4095


def ticks_dtype(table) -> np.dtype:
    r = table["Present_Position"]
    bits = 8 * r.size
    return np.dtype(f"int{bits}" if (r.signed or r.sign_bit is not None) else f"uint{bits}")


def default_channels(joints: list[str], dtype: np.dtype) -> list[Channel]:
    names = tuple(joints)
    n = (len(joints),)
    return [Channel("position", SENSOR, n, -math.pi, math.pi, "rad", names=names),
            Channel("goal", ACTUATOR, n, -math.pi, math.pi, "rad", names=names, failsafe="hold"),
            Channel("ticks", SENSOR, n, float(np.iinfo(dtype).min), float(np.iinfo(dtype).max), "ticks",
                    names=names, dtype=dtype, out_of_range="clamp")]


class ServoBusDevice(Device):
    reconnectable = True
    armable = True

    def __init__(self, name: str, port: str, vendor: str, models: str | list[str], joints: dict[str, int],
                 baudrate: int = 1_000_000, latency_s: float = 0.002, channels: list[Channel] | None = None,
                 fast_sync_read: bool = False, transport=None, spin_us: float = 200.0):
        super().__init__(name)
        if vendor not in PROTOCOLS:
            raise DeviceError(name, f"unknown servo bus {vendor!r}; expected one of {', '.join(PROTOCOLS)}")
        models = [models] * len(joints) if isinstance(models, str) else list(models)
        tables = [load(vendor, m) for m in models]
        self.table = tables[0]
        for t in tables[1:]:
            if any((t[r].address, t[r].size) != (self.table[r].address, self.table[r].size) for r in SHARED) \
                    or t.resolution != self.table.resolution:
                raise DeviceError(name, f"{t.model} and {self.table.model} keep {', '.join(SHARED)} at different "
                                  "addresses or resolutions: one sync read cannot serve both")
        self.port, self.vendor = port, vendor
        res = self.table.resolution
        self.joints = [Joint(j, sid, t, 0, res - 1) for (j, sid), t in zip(joints.items(), tables)]
        self.ids = [j.servo_id for j in self.joints]
        self.link = ServoLink(name, vendor, self.table, self.ids, baudrate, latency_s, spin_us / 1e6, fast_sync_read,
                              transport)
        self.servo_stats = self.link.stats
        self.cal: dict[str, JointCalibration] = {}
        self._set_channels(self._channels(channels))
        self._lock = threading.Lock()           # the published reading and the pending goals
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False
        n = len(self.joints)
        self._ticks = np.zeros(n, np.int64)         # the latest reading, per joint
        self._seen = np.zeros(n, np.float64)        # when each joint was last read (monotonic)
        self._used = np.zeros(n, np.float64)        # ... and what poll() took last
        self._goal = np.zeros(n, np.int64)          # goals for the next transaction (ticks)
        self._fresh = np.zeros(n, bool)             # poll's scratch: joints read since the last poll
        self._pos_sample, self._raw_sample = self.samples.get("position"), self.samples.get("ticks")
        self._torque_want: int | None = None        # a torque change for the bus thread to send
        self._torque_sent = 0
        self.state = "configured"
        self.transactions = 0
        self.bus_error = ""

    @property
    def armed(self) -> bool:
        return self.state == "armed"

    def _channels(self, given: list[Channel] | None) -> list[Channel]:
        """The board's declared channels (checked against the joints), else the defaults."""
        dflt = {c.name: c for c in default_channels([j.name for j in self.joints], ticks_dtype(self.table))}
        if given is None:
            return [dflt["position"], dflt["goal"]]
        for c in given:
            d = dflt.get(c.name)
            if d is None or c.kind != d.kind or c.shape != d.shape or c.dtype != d.dtype:
                want = d and f"a {d.kind} of {d.dtype}{list(d.shape)}"
                raise DeviceError(self.name, f"channel {c.name!r}: a servo bus has {', '.join(CHANNELS)} "
                                  f"({want or 'no such channel'}), the board declares a {c.kind} of {c.dtype}{list(c.shape)}")
        return list(given)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def latency_note(self) -> str:
        return self.link.latency_note

    def open(self) -> None:
        self.link.open(self.port)
        try:
            self._check_servos()
        except HardwareError:
            self.close()
            raise
        self.state, self._stop, self._torque_want = "configured", False, None
        self._seen[:] = 0
        self.is_open = True
        self._thread = threading.Thread(target=self._run, name=f"bus-{self.name}", daemon=True)
        self._thread.start()

    def _check_servos(self) -> None:
        """Every joint's servo answers, is the model the board says, and tells its limits."""
        for j in self.joints:
            model = self.link.read(j.servo_id, "Model_Number")
            if model != j.table.model_number:
                raise DeviceError(self.name, f"servo {j.servo_id} ({j.name}) is model number {model}, "
                                  f"expected {j.table.model_number} ({j.table.model})")
            j.lo_ticks = self.link.read(j.servo_id, "Min_Position_Limit")
            j.hi_ticks = self.link.read(j.servo_id, "Max_Position_Limit")

    def close(self) -> None:
        """Torque off if this device switched it on, then the bus thread and the port."""
        self._stop = True
        self._kick.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self.link.is_open and self._torque_sent:
            try:
                self.link.send(self.link.sync_write("Torque_Enable", dict.fromkeys(self.ids, 0)))
                self._torque_sent = 0
            except HardwareError:
                pass
        self.link.close()
        self.is_open = False
        self.state = "configured"

    def retarget(self, path: str) -> None:
        self.port = path

    def set_calibration(self, cal: dict[str, JointCalibration]) -> None:
        if self.armed:
            raise DeviceError(self.name, "cannot change the calibration while armed: disarm first")
        self.cal = dict(cal)

    def arm(self, max_age_s: float = 0.5) -> None:
        """Torque on, the first goal being where each joint is now: nothing moves. Refused
        without a calibration, a recent reading of every joint, or with a joint outside its
        calibrated range (arming would pull it in: move it by hand first)."""
        self._require_open()
        lacking = [j.name for j in self.joints if j.name not in self.cal]
        if lacking:
            raise DeviceError(self.name, f"cannot arm: no calibration for joint{'s' * (len(lacking) > 1)} "
                              f"{', '.join(lacking)} (nnos calibrate BOARD, or PUT /v1/calibration)")
        now = time.monotonic()
        with self._lock:
            old = [j.name for k, j in enumerate(self.joints) if now - self._seen[k] > max_age_s]
            if old:
                raise DeviceError(self.name, f"cannot arm: no position read in the last {max_age_s:g} s from "
                                  f"{', '.join(old)}")
            outside = [f"{j.name} at tick {int(self._ticks[k])} (calibrated {self.cal[j.name].min}..{self.cal[j.name].max})"
                       for k, j in enumerate(self.joints)
                       if not self.cal[j.name].min <= self._ticks[k] <= self.cal[j.name].max]
            if outside:
                raise DeviceError(self.name, f"cannot arm: {'; '.join(outside)} — outside its range, arming would "
                                  "move it: bring it inside by hand")
            self._goal[:] = self._ticks
            goal = self.commands.get("goal")
            if goal is not None:
                for k, j in enumerate(self.joints):
                    goal[k] = self._to_rad(j, int(self._ticks[k]))
            self._torque_want = 1
            self.state = "armed"
        self._kick.set()

    def disarm(self) -> None:
        """Torque off (sent by the bus thread within a transaction; close() sends it too)."""
        with self._lock:
            if self.state == "armed" or self._torque_sent:
                self._torque_want = 0
            self.state = "disarmed" if self.state == "armed" else self.state
        self._kick.set()

    # --- the loop's side: no bus I/O ------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        self._require_open()
        if self.bus_error:
            raise HardwareError(self.name, self.bus_error)
        pos, raw = self._pos_sample, self._raw_sample
        with self._lock:
            np.greater(self._seen, self._used, out=self._fresh)      # no array allocated per tick
            fresh = int(self._fresh.sum())
            if not fresh:
                return 0
            for k, j in enumerate(self.joints):
                if self._fresh[k]:
                    t = int(self._ticks[k])
                    if pos is not None:
                        pos.values[k] = self._to_rad(j, t)
                    if raw is not None:
                        raw.values[k] = t
            oldest = float(self._seen.min())           # a joint that stopped answering ages the channel
            np.copyto(self._used, self._seen)
        for name, s in (("position", pos), ("ticks", raw)):
            if s is not None:
                s.t_host, s.t_device_us = oldest, int(oldest * 1e6)
                s.count += 1
                s.check(self.channels[name])
        return fresh

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self._require_open()
        goal = self.commands.get("goal")
        if goal is not None and self.armed:
            with self._lock:
                for k, j in enumerate(self.joints):
                    self._goal[k] = self._to_ticks(j, float(goal[k]))
        self._kick.set()

    def raw_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """The latest raw ticks per joint and when each was read (monotonic; 0: never)."""
        with self._lock:
            return self._ticks.copy(), self._seen.copy()

    def stale_detail(self, channel: str) -> str:
        """Which joints a stale ``position`` waits for."""
        now = time.monotonic()
        old = [f"{j.name} (servo {j.servo_id}, {now - self._seen[k]:.2f} s)" if self._seen[k] else
               f"{j.name} (servo {j.servo_id}, never)" for k, j in enumerate(self.joints) if now - self._seen[k] > 0.1]
        return f"not answering: {', '.join(old)}" if old else ""

    def stats(self) -> dict:
        out = {"transactions": self.transactions, "checksum_errors": self.link.parser.stats.checksum_errors,
               "armed": int(self.armed), "late_bytes": self.link.late_bytes, "stray_answers": self.link.stray}
        for j in self.joints:
            st = self.servo_stats[j.servo_id]
            out[f"{j.name}_missing"] = st.missing
            out[f"{j.name}_clamped"] = st.clamped
            for err, n in st.errors.items():
                out[f"{j.name}_{err.replace(' ', '_').replace('(', '').replace(')', '')}"] = n
        return out

    # --- conversions -------------------------------------------------------------------------------
    def _to_rad(self, j: Joint, ticks: int) -> float:
        c = self.cal.get(j.name)
        if c is None:                                 # uncalibrated: the servo's centre is 0 rad
            return (ticks - self.table.resolution / 2) * TAU / self.table.resolution
        return c.to_rad(ticks, self.table.resolution)

    def _to_ticks(self, j: Joint, rad: float) -> int:
        c = self.cal.get(j.name)
        homing, direction = (c.homing, c.direction) if c else (self.table.resolution / 2, 1)
        lo, hi = (max(c.min, j.lo_ticks), min(c.max, j.hi_ticks)) if c else (j.lo_ticks, j.hi_ticks)
        t = int(round(homing + rad * direction * self.table.resolution / TAU))
        if not lo <= t <= hi:
            self.servo_stats[j.servo_id].clamped += 1
            t = min(max(t, lo), hi)
        return t

    # --- the bus thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        """The bus thread: SCHED_OTHER even in a real-time loop process, so the loop (SCHED_FIFO,
        same CPU) preempts it whenever it wakes — the bus never delays a tick, and the thread may
        spin briefly for an answer."""
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))     # this thread only
        except (OSError, AttributeError):
            pass
        while not self._stop:
            self._kick.wait(0.05)            # a flush starts a transaction; without one, read at 20 Hz
            self._kick.clear()
            if self._stop:
                break
            try:
                with self.link.lock:
                    self._transaction()
            except HardwareError as e:       # unplugged: the loop learns it from poll()
                self.bus_error = str(e)
                return

    def _transaction(self) -> None:
        """Goals (armed), a torque change (arming), the read: one write on the wire — a sync write
        has no answer, so the read request can follow it at once."""
        with self._lock:
            torque, self._torque_want = self._torque_want, None
            goals = {j.servo_id: int(self._goal[k]) for k, j in enumerate(self.joints)} if self.armed else None
        before = self.link.sync_write("Goal_Position", goals) if goals else b""   # first: torque comes on holding
        if torque is not None:                                                        # the present position
            before += self.link.sync_write("Torque_Enable", dict.fromkeys(self.ids, torque))
        got = self.link.read_positions(before)
        if torque is not None:
            self._torque_sent = torque
        pos, now = self.table["Present_Position"], time.monotonic()
        with self._lock:
            for k, j in enumerate(self.joints):
                if j.servo_id in got:
                    self._ticks[k] = pos.decode(got[j.servo_id], self.table.endian)
                    self._seen[k] = now
        self.transactions += 1
