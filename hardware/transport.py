"""Byte transports. SerialTransport opens a port with pyserial (raw mode, exclusive) and reads
with select() so that a read never blocks past its timeout and never reconfigures the port."""
from __future__ import annotations

import os
import select
import time

from .errors import TransportError


def set_latency_timer(port: str, ms: int = 1, sysfs: str = "/sys") -> str:
    """Lower a USB serial adapter's latency timer (FTDI/CH34x: 16 ms by default, the time an
    unanswered servo costs) through sysfs; says what it did, or why nothing (a pty, an ACM
    device without the setting, no permission). Never raises: a bus works either way, slower."""
    tty = os.path.basename(os.path.realpath(port))
    if not tty.startswith("tty"):
        return f"{port}: no latency timer to set (not a USB serial adapter)"
    knob = os.path.join(sysfs, "bus", "usb-serial", "devices", tty, "latency_timer")
    try:
        with open(knob) as f:
            before = int(f.read().strip() or 0)
        if before <= ms:
            return f"{tty}: latency timer already {before} ms"
        with open(knob, "w") as f:
            f.write(str(ms))
        return f"{tty}: latency timer {before} → {ms} ms"
    except FileNotFoundError:
        return f"{tty}: no latency timer to set (not a USB serial adapter)"
    except (OSError, ValueError) as e:
        return f"{tty}: latency timer left as it is ({e})"


class SerialTransport:
    def __init__(self, port: str, baudrate: int = 1_000_000, name: str | None = None):
        import serial  # pyserial
        self.port, self.name = port, name or port
        try:
            self.s = serial.Serial(port, baudrate, timeout=0, write_timeout=0.5, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(self.name, f"cannot open serial port {port}: {e}") from e
        self.fd = self.s.fileno()
        try:
            os.set_blocking(self.fd, False)     # pyserial opens with O_NONBLOCK already; make sure
        except OSError:
            pass
        self._pending = bytearray()
        self.dropped = 0                      # queued bytes dropped because the device did not read

    def read_some(self, n: int, timeout: float, spin_s: float = 0.0) -> bytes:
        """What arrives within ``timeout`` s (b"" if nothing). ``spin_s``: poll without sleeping
        for that long first — an answer due within microseconds is taken without the scheduler's
        wake-up latency (tens of µs on a VM), for CPU time; only for threads that may spin."""
        if spin_s > 0:
            end = time.perf_counter() + min(spin_s, timeout)
            while time.perf_counter() < end:
                try:
                    data = os.read(self.fd, n)
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise TransportError(self.name, f"read from {self.port} failed ({e}): device unplugged?") from e
                if data:
                    return data
            timeout = max(0.0, timeout - spin_s)
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return b""
            data = os.read(self.fd, n)
        except (OSError, ValueError) as e:
            raise TransportError(self.name, f"read from {self.port} failed ({e}): device unplugged?") from e
        if not data:
            raise TransportError(self.name, f"{self.port} closed by the other end")
        return data

    def pending(self) -> bool:
        try:
            return bool(select.select([self.fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def drain(self) -> int:
        """Drop whatever has arrived and nobody read (one read that finds nothing when the line
        is quiet, no select); the bytes dropped."""
        n = 0
        while True:
            try:
                got = os.read(self.fd, 4096)
            except BlockingIOError:
                return n
            except OSError as e:
                raise TransportError(self.name, f"read from {self.port} failed ({e}): device unplugged?") from e
            if not got:                       # raw mode, VMIN 0: nothing there (a hang-up shows in read_some)
                return n
            n += len(got)

    def write(self, data: bytes, timeout: float = 0.5) -> None:
        """os.write on the port pyserial configured (pyserial's own write costs ~3x more per frame)."""
        view, deadline = memoryview(data), time.monotonic() + timeout
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TransportError(self.name, f"write to {self.port} timed out after {timeout} s: "
                                         "the device is not reading") from None
                select.select([], [self.fd], [], 0.01)
            except OSError as e:
                raise TransportError(self.name, f"write to {self.port} failed: {e}") from e

    def write_nowait(self, data: bytes, cap: int = 4096) -> bool:
        """Queue ``data`` and write what the port takes now, never waiting (the loop's path).
        What the port cannot take yet stays queued (bounded by ``cap``: beyond it the queue is
        dropped, and the receiver resynchronises at the next delimiter). False if dropped."""
        self._pending += data
        ok = True
        if len(self._pending) > cap:
            self._pending = bytearray(data)
            self.dropped += 1
            ok = False
        try:
            n = os.write(self.fd, self._pending)
            del self._pending[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            raise TransportError(self.name, f"write to {self.port} failed: {e}") from e
        return ok

    def close(self) -> None:
        try:
            self.s.close()
        except Exception:
            pass


class FdTransport:
    """The same interface over a raw file descriptor (the device side of a pty in simulators)."""

    def __init__(self, fd: int, name: str = "fd"):
        self.fd, self.name = fd, name

    def read_some(self, n: int, timeout: float, spin_s: float = 0.0) -> bytes:
        """As SerialTransport.read_some; a simulator's side never spins (``spin_s`` is ignored)."""
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            return os.read(self.fd, n) if ready else b""
        except OSError as e:
            raise TransportError(self.name, f"read failed: {e}") from e

    def pending(self) -> bool:
        return bool(select.select([self.fd], [], [], 0)[0])

    def drain(self) -> int:
        n = 0
        while self.pending():
            n += len(os.read(self.fd, 4096))
        return n

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.1)
                continue
            except OSError as e:
                raise TransportError(self.name, f"write failed: {e}") from e
            view = view[n:]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
