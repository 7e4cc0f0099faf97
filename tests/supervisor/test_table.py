"""The process table's order on the way to the first tick (nnos/supervisor/table.py)."""
from __future__ import annotations

import os

from nnos_hardware.board import load_board
from nnos.supervisor.table import Context, table
from tests.support.paths import ROOT

BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")


def specs(tmp_path, monkeypatch, on_device: bool) -> dict:
    if on_device:
        monkeypatch.setenv("NNOS_INIT", "1")
    else:
        monkeypatch.delenv("NNOS_INIT", raising=False)
    ctx = Context(BOARD, str(tmp_path), load_board(BOARD), str(tmp_path / "run"))
    return {s.name: (s, s.run_if(ctx), s.command(ctx)) for s in table(ctx)}


def test_udev_coldplug_runs_on_the_device_once_the_loop_ticks(tmp_path, monkeypatch):
    """nnos-init starts udevd only; the coldplug (its workers load every present device's
    drivers, seconds of CPU under emulation) waits for the loop, runs once, and never on a laptop."""
    spec, run, cmd = specs(tmp_path, monkeypatch, on_device=True)["coldplug"]
    assert "loop" in spec.start_after and spec.restart == "never"
    assert cmd[:2] == ["sh", "-c"] and "udevadm trigger --type=devices --action=add" in cmd[2]
    import shutil
    assert run == (shutil.which("udevadm") is not None)
    assert specs(tmp_path, monkeypatch, on_device=False)["coldplug"][1] is False


def test_nnos_init_no_longer_triggers_the_coldplug_itself(monkeypatch):
    import nnos.boot.init as init
    started = []
    monkeypatch.setattr(init.subprocess, "run", lambda cmd, **kw: started.append(cmd))
    monkeypatch.setattr(init.subprocess, "Popen", lambda cmd, **kw: started.append(cmd))
    monkeypatch.setattr(init.os.path, "exists", lambda p: p in init.UDEVD)
    init.start_udev()
    assert started == [[init.UDEVD[0], "--daemon"]], started


def test_the_fork_server_imports_the_boards_drivers_and_starts_without_one_that_fails(tmp_path, monkeypatch):
    """The loop's drivers are imported before its fork (pyserial's import is 0.13 s of an emulated
    boot); a driver module that does not import leaves the loop to say so, not the fork server
    to fail (which would start every process with a new Python)."""
    import sys

    from nnos_hardware.devices import factory
    from nnos.supervisor.up import fork_server
    monkeypatch.setitem(factory.MODULES, "nnos-serial",
                        ("nnos_hardware.devices.nnos_serial", "nnos_hardware.no_such_driver"))
    monkeypatch.delenv("NNOS_INIT", raising=False)
    ctx = Context(BOARD, str(tmp_path), load_board(BOARD), str(tmp_path / "run"))
    server = fork_server(ctx, table(ctx))
    try:
        assert server is not None and server.alive()
        assert "nnos_hardware.devices.nnos_serial" in sys.modules
    finally:
        if server is not None:
            server.close()


BOOT_PATH = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import nnos.appliance as appliance
appliance._imports()                                   # PID 1's, beside the boot steps
from nnos_hardware.board import load_board
from nnos.supervisor.table import Context, table
from nnos.supervisor.up import fork_server
ctx = Context(sys.argv[2], sys.argv[3], load_board(sys.argv[2]), os.path.join(sys.argv[3], "run"))
server = fork_server(ctx, table(ctx))                  # its preload is imported here, then it forks
from nnos.fsutil import remove_run_leftovers           # the supervisor's set-up
from nnos.store import ModelStore
os.makedirs(ctx.run, exist_ok=True)
remove_run_leftovers(ctx.run) + ModelStore(sys.argv[3]).clean()
[s.run_if(ctx) for s in table(ctx)]
from nnos_hardware.sim import cartpole
cartpole.CartPole(cartpole.Config(noise=0.01)).reading()   # the simulator, before its port exists
heavy = [m for m in sys.argv[4].split(",") if m in sys.modules]
for m in [m for m in sys.modules if m.startswith(("nnos.", "nnos_hardware."))]:
    heavy += [f"{m}.{k} (a docstring made by inspect)" for k, c in vars(sys.modules[m]).items()
              if isinstance(c, type) and c.__module__ == m and "__dataclass_fields__" in vars(c)
              and vars(c)["__doc__"].startswith(c.__name__ + "(")]
server.close()
print(json.dumps(heavy))
"""


def test_nothing_heavy_on_the_way_to_the_first_tick(tmp_path):
    """What the first tick does not need is not imported before it (each measured under TCG,
    benchmarks/RESULTS.md, issue 21): the code generator and the GPU backends (the image's
    object loads by its record; they come once the loop has started), numpy.random (the
    simulator's noise: 0.26 s before its port exists), tempfile and shutil (0.1 s; also not
    from the supervisor's set-up: its leftovers' sweep, udevadm looked up), onnx, the
    CLI, difflib (a typo's hint), secrets, fractions (Winograd's matrices), hashlib (OpenSSL:
    nnos.digest); what only servo buses, cameras and USB devices need, on a board without them.
    A dataclass on the way has its own docstring: without one, dataclass makes one from
    inspect.signature (≈ 1 ms for the 21 there were on this host, ≈ 30 ms under TCG)."""
    import json
    import subprocess
    import sys
    heavy = ["nnos.backends.cpu.codegen", "nnos.backends.ops_cuda", "nnos.backends.ops_vulkan", "numpy.random",
             "tempfile", "shutil", "onnx", "nnos.cli", "difflib", "secrets", "fractions", "hashlib",
             "nnos_hardware.servo_config", "nnos_hardware.registers", "nnos_hardware.camera_config",
             "nnos_hardware.calibration", "nnos_hardware.hotplug", "nnos_hardware.preprocess",
             "nnos.ops.conv", "nnos.ops.quant", "nnos.ops.rnn"]
    r = subprocess.run([sys.executable, "-c", BOOT_PATH, ROOT, BOARD, str(tmp_path), ",".join(heavy)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "NNOS_INIT"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == []


def test_the_control_plane_and_network_are_forked_and_import_their_own_modules(tmp_path, monkeypatch):
    """The control plane and the network are forked from the fork server (no Python start-up
    and numpy import of their own: the control plane was 20-30 s from the first tick to ready
    under emulation), and the server preloads only the way to the first tick: FastAPI is
    imported by the control plane, after it. The legacy VM, its broker and the update services
    are executed (forked, the image's legacy VM guest never reached its broker)."""
    from nnos.supervisor.forkserver import main_module
    from nnos.supervisor.up import after_loop, forked_modules
    monkeypatch.setenv("NNOS_INIT", "1")
    ctx = Context(BOARD, str(tmp_path), load_board(BOARD), str(tmp_path / "run"))
    all_specs = table(ctx)
    python = {s.name: s for s in all_specs if main_module(s.command(ctx))}
    assert {"loop", "control-plane", "network", "broker", "dbus", "rauc", "update-health", "legacy-vm"} <= set(python)
    assert {n for n, s in python.items() if s.forked} == {"loop", "sim-cartpole", "control-plane", "network"}
    assert after_loop(python["rauc"], all_specs)                 # through dbus
    assert not after_loop(python["loop"], all_specs) and not after_loop(python["sim-cartpole"], all_specs)
    preload, _, _ = forked_modules(ctx, all_specs)
    assert "nnos.runtime.__main__" in preload and "nnos_hardware.sim.__main__" in preload
    assert not [m for m in preload if m.startswith(("nnos.controlplane", "nnos.update", "nnos.boot", "nnos.legacy"))]
