"""python -m nnos_hardware.sim cartpole [options]: run a simulated robot on a new pseudo-terminal.

The first line on stdout is JSON naming the port to connect to: {"port": "/dev/pts/N"}.
In lockstep mode with --episodes, one JSON line per episode follows, then a summary.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import tty

import numpy as np

from nnos.cmdline import Parser
from nnos.timing import percentiles

from ..transport import FdTransport
from . import cartpole
from .firmware import Firmware


def open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _publish_port(port: str, link: str | None) -> None:
    """A stable name for the port, like /dev/serial/by-id (replaced atomically)."""
    if not link:
        return
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(port, tmp)
    os.replace(tmp, link)


def _lockstep(a, fw, sim, clock_us: int, stop) -> bool:
    """One sensor frame, then wait for the command answering it (safe force if none comes in
    time). False while no host is connected."""
    if not fw.connected:
        fw.service(0.05)
        return False
    ts = fw.send_sensors(sim.reading(), clock_us)
    deadline = time.monotonic() + a.host_timeout
    while fw.last_ref_us != ts and time.monotonic() < deadline and not stop:
        fw.service(0.01)
    if fw.last_ref_us != ts:
        fw.safe()                                    # no answer in time: safe force, go on
    return True


def _realtime(fw, sim, next_t: float) -> bool | None:
    """Serve the link until the next sensor deadline, then send a frame: True. False when it is
    not time yet; None when no host is connected (the robot is held still until one takes over)."""
    fw.service(max(0.0, next_t - time.monotonic()))
    if time.monotonic() < next_t:
        return False
    if not fw.connected:
        return None
    fw.send_sensors(sim.reading())
    return True


def _summary(fw, episodes: int, ok: int, sent: int) -> dict:
    out = {"done": True, "episodes": episodes, "ok": ok, "commands": fw.commands, "refused": fw.refused,
           "failsafe_entries": fw.failsafe_entries, "sensor_frames": sent, "link": fw.link.stats.as_dict()}
    if fw.rtt_us:
        r = np.array(fw.rtt_us, dtype=np.float64)
        out["rtt_us"] = {"n": int(r.size), **percentiles(r), "max": float(r.max())}
    return out


def run_cartpole(a) -> int:
    master, slave, port = open_pty()   # keep the slave open: the host may come and go
    cfg = cartpole.Config(sensor_hz=a.sensor_hz, physics_hz=a.physics_hz, noise=a.noise,
                          delay_ticks=a.delay_ticks, seed=a.seed)
    sim = cartpole.CartPole(cfg)
    fw = Firmware(FdTransport(master, "cartpole"), a.device_id, cartpole.channels(), host_timeout_s=a.host_timeout)
    fw.record_rtt = a.report_rtt and not a.lockstep
    _publish_port(port, a.port_link)
    emit({"port": port, "device_id": a.device_id, "mode": "lockstep" if a.lockstep else "realtime"})
    period = 1.0 / cfg.sensor_hz
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ticks, episode, ok_count, max_theta, sent, clock_us = 0, 0, 0, 0.0, 0, 0
    episode_ticks = int(round(a.duration * cfg.sensor_hz))
    next_t = time.monotonic()
    while not stop:
        if a.lockstep:
            if not _lockstep(a, fw, sim, clock_us + int(round(period * 1e6)), stop):
                continue
            clock_us += int(round(period * 1e6))
        else:
            went = _realtime(fw, sim, next_t)
            if went is False:
                continue
            next_t += period
            if went is None:
                continue
            sent += 1
        sim.advance(float(fw.actuators[3][0]))
        ticks += 1
        max_theta = max(max_theta, abs(sim.state[2]))
        if not a.episodes and not a.hold_fallen and cartpole.failed(sim.state):
            # like a person standing the pole up again: a fallen pole would otherwise swing on
            # outside the sensors' declared ranges, and a host that lost control for a moment
            # (a restart) could never take it back
            print(f"sim: the pole fell (x {sim.state[0]:.2f} m, θ {np.degrees(sim.state[2]):.1f}°): reset",
                  file=sys.stderr, flush=True)
            sim.reset()
        if a.episodes and (cartpole.failed(sim.state) or ticks >= episode_ticks):
            failed = cartpole.failed(sim.state)
            emit({"episode": episode, "ok": not failed, "ticks": ticks, "seconds": ticks / cfg.sensor_hz,
                  "max_theta_deg": round(float(np.degrees(max_theta)), 3), "x": round(float(sim.state[0]), 4)})
            ok_count += not failed
            episode += 1
            ticks, max_theta = 0, 0.0
            sim.reset()
            if episode >= a.episodes:
                break
    emit(_summary(fw, episode, ok_count, sent))
    os.close(slave)
    return 0


def run_servo_bus(a) -> int:
    """A servo bus with ``--servos`` servos (ids 1..N) on a pty: answers whatever talks to it
    (nnos's driver, the vendor's SDK) until SIGTERM."""
    import select
    from .servo_bus import ServoBus
    master, slave, port = open_pty()
    models = a.model.split(",") if "," in a.model else a.model
    trace = open(a.trace, "a") if a.trace else None
    bus = ServoBus(list(range(1, a.servos + 1)), models, latency_s=a.latency_us / 1e6, vendor=a.vendor, trace=trace)
    for spec in a.answer_as:
        sid, other = spec.split(":")
        bus.servos[int(sid)].answer_as = int(other)
    for s in bus.servos.values():
        s.hand = a.hand
    for sid in a.silent:
        bus.servos[sid].silent = True
    for spec in a.error:
        sid, bits = spec.split(":")
        bus.servos[int(sid)].error_bits = int(bits, 0)
    t0 = time.monotonic()
    later = [(int(sid), t0 + float(t)) for sid, t in (spec.split(":") for spec in a.silent_after)]
    _publish_port(port, a.port_link)
    emit({"port": port, "servos": sorted(bus.servos), "vendor": a.vendor, "model": a.model})
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        r, _, _ = select.select([master], [], [], 0.001)
        bus.advance()
        for sid, when in later:
            bus.servos[sid].silent = bus.servos[sid].silent or time.monotonic() >= when
        if r:
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:                                    # the host closed its end: wait for the next one
                time.sleep(0.01)
                continue
            reply = bus.receive(data)
            if reply:
                os.write(master, reply)
    os.close(slave)
    return 0


def main(argv=None) -> int:
    p = Parser(prog="python -m nnos_hardware.sim")
    sub = p.add_subparsers(dest="robot", required=True)
    c = sub.add_parser("cartpole", help="cart-pole with a force actuator")
    c.add_argument("--lockstep", action="store_true", help="each sensor frame waits for the host's command")
    c.add_argument("--episodes", type=int, default=0, help="reset after failure or --duration; stop after N")
    c.add_argument("--duration", type=float, default=60.0, help="seconds of simulated time per episode")
    c.add_argument("--sensor-hz", type=float, default=50.0)
    c.add_argument("--physics-hz", type=float, default=1000.0)
    c.add_argument("--noise", type=float, default=0.0)
    c.add_argument("--delay-ticks", type=int, default=0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--hold-fallen", action="store_true", help="realtime: leave a fallen pole down (default: "
                   "reset it, as a person would)")
    c.add_argument("--host-timeout", type=float, default=0.5, help="host silence before actuators go safe")
    c.add_argument("--device-id", default="cartpole-sim-0001")
    c.add_argument("--report-rtt", action="store_true")
    c.add_argument("--port-link", help="also make this path a symlink to the port")
    for robot, vendor, model, what in (("feetech-arm", "feetech", "sts3215", "a Feetech STS servo bus (the SO-101's)"),
                                       ("dynamixel-arm", "dynamixel", "xl430-w250", "a Dynamixel Protocol 2.0 bus (Koch)")):
        f = sub.add_parser(robot, help=f"{what} with N servos")
        f.set_defaults(vendor=vendor)
        f.add_argument("--servos", type=int, default=6)
        f.add_argument("--model", default=model, help=f"register table: hardware/registers/{vendor}/MODEL.toml; "
                       "or MODEL,MODEL,… one per servo")
        f.add_argument("--silent", type=int, action="append", default=[], metavar="ID", help="a servo that never answers")
        f.add_argument("--error", action="append", default=[], metavar="ID:BITS", help="error bits a servo reports")
        f.add_argument("--silent-after", action="append", default=[], metavar="ID:SECONDS",
                       help="a servo that stops answering after this long")
        f.add_argument("--latency-us", type=float, default=0.0, help="added before each answer")
        f.add_argument("--answer-as", action="append", default=[], metavar="ID:OTHER",
                       help="a servo that answers with another id")
        f.add_argument("--hand", type=float, default=0.0, metavar="TICKS",
                       help="while torque is off, a hand moves each joint ± TICKS around its centre")
        f.add_argument("--trace", metavar="FILE", help="log every goal and torque write here")
        f.add_argument("--port-link", help="also make this path a symlink to the port")
    a = p.parse_args(argv)
    return run_cartpole(a) if a.robot == "cartpole" else run_servo_bus(a)


if __name__ == "__main__":
    sys.exit(main())
