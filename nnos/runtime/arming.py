"""Arms on the board (devices with torque): arming and disarming, the stored calibration
applied to the servo buses, the board's arm_on_start, and the stop's wind-down — every actuator
by its failsafe rule at the board's rate (ramps reach their safe values), then torque off.
A mixin of the Loop (self.devices, self.io, self.act, self.store, self.log, self.period)."""
from __future__ import annotations

from nnos_hardware.errors import DeviceError, HardwareError

from ..timing import NS_PER_S, RateKeeper

WIND_DOWN_S = 3.0            # the longest a stop ramps actuators (the supervisor waits 5 s for SIGTERM)


class Arming:
    def arm(self, name: str) -> None:
        """Torque on for one device, its commands starting at the present positions (raises the
        device's DeviceError, saying why not)."""
        self.devices[name].arm()
        self.act.settle(name)
        self.arm_pending.discard(name)
        self.log(f"loop: {name} armed")

    def disarm(self, name: str) -> None:
        self.devices[name].disarm()
        self.arm_pending.discard(name)
        self.log(f"loop: {name} disarmed")

    def apply_calibration(self) -> list[str]:
        """The data partition's calibration onto the servo buses (refused for an armed one)."""
        from nnos_hardware import calibration          # servo buses only: not on a first tick's way
        found = calibration.load(self.store.data_dir, self.board, lambda d: self.devices[d.name].table.resolution)
        for name, joints in found.items():
            if self.devices[name].armed:
                raise DeviceError(name, "armed: disarm it before changing its calibration")
        for name, joints in found.items():
            self.devices[name].set_calibration(joints)
        return sorted(found)

    def _arm_on_start(self) -> None:
        """The board's arm_on_start: arm as soon as the device has been read; a device that
        cannot be armed for another reason (no calibration) is said once and left disarmed."""
        for name in sorted(self.arm_pending):
            if name in self.io.lost or not self.devices[name].is_open:
                continue
            try:
                self.arm(name)
            except HardwareError as e:
                if "no position read" not in str(e):
                    self.arm_pending.discard(name)
                    self.log(f"loop: arm_on_start: {e}")

    def wind_down(self, limit_s: float = WIND_DOWN_S) -> int:
        """Stopping: every actuator by its failsafe rule, at the board's rate, until the ramps
        reach their safe values (at most ``limit_s``); then disarm. Returns the ticks taken."""
        self._wound_down = True
        ticks = max(1, min(self.act.ticks_to_settle(), int(limit_s * NS_PER_S / self.period)))
        keeper, n = RateKeeper(NS_PER_S / self.period), 0
        for n in range(ticks):
            if n:
                keeper.wait()
            self.io.read()
            self.act.failsafe()
            self.act.limit()
            self.io.flush()
            if self.act.settled():
                break
        for name, dev in self.devices.items():
            if dev.armable and name not in self.io.lost and dev.is_open:
                dev.disarm()
        return n + 1

