"""The board's devices as the loop sees them: read every tick (poll, staleness, out-of-range
faults), flush the staged actuator values, and bring a lost device back on a helper thread.
A device that fails is marked lost — never raised into the tick — and the tick fails safe."""
from __future__ import annotations

import threading
import time

from nnos_hardware.channels import SENSOR
from nnos_hardware.errors import HardwareError

from ..timing import NS_PER_S, now_ns


class DeviceIO:
    def __init__(self, board, devices: dict, log, reconnect_s: float = 1.0, stopped=lambda: False):
        self.devices, self.log, self.reconnect_s = devices, log, reconnect_s
        self.stopped = stopped                      # the loop's own flag: reconnect threads end with it
        self.lost: set[str] = set()
        self.reconnecting: set[str] = set()
        self.closed = False
        self.retable(board)

    def retable(self, board) -> None:
        """(label, sample, stale limit in s, the channel's out-of-range fault threshold or 0) per
        sensor channel: what ``read`` checks every tick."""
        self.stale = [(f"{d.name}.{c.name}", self.devices[d.name].samples[c.name], d.stale_ms[c.name] / 1000.0,
                       c.fault_after if c.out_of_range == "failsafe" else 0)
                      for d in board.devices for c in d.channels if c.kind == SENSOR and d.name in self.devices]

    # --- every tick ------------------------------------------------------------------------
    def read(self) -> str | None:
        """Take in every device's readings; the first fault, or None."""
        fault = None
        for name, dev in self.devices.items():
            if name in self.lost:
                fault = fault or f"device {name} lost"
                continue
            try:
                dev.poll(0.0)
            except HardwareError as e:
                fault = f"device {name} lost: {e}"
                self.lose(name)
        return fault or self._sensor_fault()

    def _sensor_fault(self) -> str | None:
        now = now_ns() / NS_PER_S
        for label, sample, limit, fault_after in self.stale:
            if now - sample.t_host > limit:
                return f"sensor {label} stale (no reading for {min(now - sample.t_host, 999):.3f} s > {limit:.3f} s)" \
                    + self._detail(label)
            if fault_after and sample.bad_run >= fault_after:
                return (f"sensor {label} out of range ({sample.bad_value:.6g}; "
                        f"{sample.bad_run} reading{'s' if sample.bad_run > 1 else ''} in a row)")
        return None

    def flush(self) -> None:
        for name, dev in self.devices.items():
            if name in self.lost:
                continue
            try:
                dev.flush(_ref_timestamp(dev))
            except HardwareError as e:
                self.log(f"loop: device {name} lost while writing: {e}")
                self.lose(name)

    def _detail(self, label: str) -> str:
        """Which part of a stale channel stopped (a servo bus: which joints), if the device says."""
        dev, ch = label.split(".", 1)
        detail = self.devices[dev].stale_detail(ch)
        return f": {detail}" if detail else ""

    # --- losing and finding devices ----------------------------------------------------------
    def lose(self, name: str) -> None:
        """Failed or not there: faulted every tick until a reconnect brings it back."""
        self.lost.add(name)
        self.reconnect_later(name)

    def removed(self, name: str) -> None:
        """Unplugged (hotplug): lost, and its readings are stale from now on."""
        self.lost.add(name)
        for s in self.devices[name].samples.values():
            s.t_host = 0.0

    def appeared(self, name: str, path: str | None) -> None:
        """Plugged in (hotplug), perhaps at another path."""
        dev = self.devices[name]
        if path and dev.reconnectable:
            dev.retarget(path)
        if name in self.lost or not dev.is_open:
            self.lose(name)

    def reconnect_later(self, name: str) -> None:
        dev = self.devices[name]
        if name in self.reconnecting or not dev.reconnectable:
            return
        self.reconnecting.add(name)
        threading.Thread(target=self._reconnect, args=(name, dev), name=f"reconnect-{name}", daemon=True).start()

    def _reconnect(self, name: str, dev) -> None:
        """A helper thread: close and open again every ``reconnect_s`` until the device answers."""
        while not (self.closed or self.stopped()):
            try:
                dev.close()
            except HardwareError:
                pass
            try:
                dev.open()
                self.lost.discard(name)
                self.log(f"loop: device {name} is back")
                break
            except HardwareError:
                time.sleep(self.reconnect_s)
        self.reconnecting.discard(name)

    # --- reports and the end ---------------------------------------------------------------------
    def status(self) -> dict:
        now, out = now_ns() / NS_PER_S, {}
        for name, dev in self.devices.items():
            st = dev.stats() if dev.is_open else {}
            out[name] = {
                "open": dev.is_open, "lost": name in self.lost, "armed": dev.armed,
                **({"state": dev.state} if dev.armable else {}),      # configured | armed | disarmed
                "faults": {k: v for k, v in st.items() if isinstance(v, int)},
                "channels": {c: {"age_s": round(now - s.t_host, 4) if s.t_host else None, "readings": s.count,
                                 "out_of_range": s.out_of_range} for c, s in dev.samples.items()}}
        return out

    def close(self) -> None:
        """Close every device (the loop's wind_down has brought the actuators to their failsafe
        commands already: writing safe values here would skip the ramps)."""
        self.closed = True
        for dev in self.devices.values():
            try:
                dev.close()
            except HardwareError:
                pass


def _ref_timestamp(dev) -> int:
    for s in dev.samples.values():
        return s.t_device_us
    return 0
