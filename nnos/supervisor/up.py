"""`nnos up`: validate the board, provision the store on first start, run the process table,
and show a live one-line status."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

from nnos_hardware.board import load_board

from .. import flags
from ..fsutil import remove_run_leftovers
from ..store import ModelStore
from ..telemetry import TelemetryReader
from ..timeline import on_console, stamp
from .manager import Manager
from .ownership import end_orphans, hold_lock
from .table import Context, table, updates_enabled
from .upgrade import recompile_outdated

DEFAULT_BOARD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "hardware", "boards", "cartpole-sim.toml")


def log(msg: str) -> None:
    """On the device, a line of the boot timeline (starts, exits, restarts, watchdog kills are
    read off one console log with their times since boot); elsewhere, the wall clock's time."""
    if on_console():
        stamp(msg)
        return
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def provision(board, store: ModelStore, plan_path: str | None = None) -> None:
    """First start: no active model yet, so store the default one — the prebuilt plan when
    given (the image compiles and checks it at build time), else the board's model compiled.
    A board that was changed to one the active model cannot drive (another robot: PUT
    /v1/config?at=next-start checked that its default model fits) gets its default model."""
    active = store.state()["active"]
    if active and _fits(board, store, active):
        return
    for plan, source, fmt in _defaults(board, plan_path if not active else None):
        board.check_plan(plan)
        data = plan.to_bytes()
        onnx = board.model if board.model and os.path.exists(board.model) else None
        from ..backends.bench import measure
        mid = store.put(data, {"format": fmt, "source": source, "provisioned": True, "plan_bytes": len(data),
                               "name": os.path.splitext(os.path.basename(source))[0],
                               "latency": measure(plan, 200), "ops": plan.meta["ops"]}, _provision_signature(store, data),
                        source=onnx)
        why = f"the active model {active[:12]} does not fit board {board.name}" if active else "the default model"
        store.activate(mid, f"provisioned from {why}: {os.path.basename(source)}")
        log(f"supervisor: provisioned {os.path.basename(source)} as model {mid[:12]}"
            + (f" ({why})" if active else ""))
        return


def _fits(board, store: ModelStore, mid: str) -> bool:
    """Whether the stored model ``mid`` fits ``board`` (one that does not load is the loop's to handle)."""
    from nnos_hardware.errors import ConfigError

    from ..errors import NnosError
    try:
        board.check_plan(store.load(mid))
    except ConfigError:
        return False
    except (NnosError, OSError):
        return True
    return True


def _defaults(board, plan_path: str | None):
    """The default model to provision: (plan, source, format), the prebuilt plan first."""
    if plan_path:
        from ..plan import load
        plan = load(plan_path)
        from nnos_hardware.errors import ConfigError
        try:
            board.check_plan(plan)
            yield plan, plan_path, "plan (the image's default)"
            return
        except ConfigError:
            pass                                   # the image's default is for its default board
    if board.model:
        from ..compiler import compile
        yield compile(board.model, images=board.plan_images()), board.model, "onnx (the board's default)"


def _provision_signature(store: ModelStore, data: bytes) -> str | None:
    """With signed models required, the default model is countersigned with the device's key
    when it is provisioned (it comes from the image or the board, not from an upload); if that
    cannot be done, provisioning is refused with the reason."""
    if not flags.REQUIRE_SIGNED.get():
        return None
    from ..errors import NnosError
    from ..signing import SignatureError, countersign
    try:
        return countersign(store.data_dir, data)
    except (OSError, SignatureError) as e:
        raise NnosError(f"signed models are required (NNOS_REQUIRE_SIGNED=1) but the default model could not be "
                        f"signed with this device's key in {store.data_dir}/keys: {e}") from e


def load_or_restore(board_path: str, default_board: str | None):
    """The board config; an unreadable one is set aside and the default restored (told)."""
    from nnos_hardware.errors import ConfigError
    try:
        return load_board(board_path)
    except ConfigError as e:
        if not default_board:
            raise
        log(f"supervisor: {e}")
        if os.path.exists(board_path):
            os.replace(board_path, board_path + ".bad")
        from ..fsutil import atomic_write
        with open(default_board, "rb") as f:
            atomic_write(board_path, f.read())
        log(f"supervisor: board config restored from {default_board}; the bad one is {board_path}.bad")
        return load_board(board_path)


def status_line(run: str, manager: Manager | None = None) -> str:
    path = os.path.join(run, "telemetry")
    if not os.path.exists(path):
        return "waiting for the loop…"
    try:
        r = TelemetryReader(path)
    except (ValueError, OSError):
        return "waiting for the loop…"
    try:
        c = r.counters()
        period = max(1, c["period_ns"])
        recs = r.records(int(1e9 // period))
    finally:
        r.close()
    from ..timing import percentiles
    if len(recs) < 2:
        return f"mode {c['mode']} | waiting for ticks"
    span = (int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9
    rate = (len(recs) - 1) / span if span > 0 else 0.0
    late = percentiles(recs["lateness_ns"], (99,))["p99"] / 1000
    restarts = sum(p["restarts"] for p in manager.status().values()) if manager else 0
    mode = c["mode"] + (f" ({c['failsafe_reason']})" if c["mode"] == "failsafe" else "")
    return (f"{rate:6.1f} Hz | late p99 {late:6.0f} µs | missed {c['misses']} | {mode:<10} | "
            f"model {c['active'][:12] or '-'} | ticks {c['ticks']} | swaps {c['swaps']} | restarts {restarts}")


def fork_server(ctx: Context, specs):
    """The fork server for the table's `forked` processes, with their imports (numpy, the store,
    the drivers, the loop) done here once; None when nothing is forked or it cannot start."""
    from .forkserver import ForkServer
    if not flags.FORK_SERVER.get():
        return None
    preload, later, drivers = forked_modules(ctx, specs)
    if not preload:
        return None
    for name in drivers:
        try:
            importlib.import_module(name)
        except ImportError:
            pass                              # the loop says what is missing when it makes the device
    try:
        return ForkServer(preload, later)
    except (OSError, ImportError) as e:
        log(f"supervisor: no fork server ({type(e).__name__}: {e}): processes start with a new Python")
        return None


def forked_modules(ctx: Context, specs) -> tuple[tuple[str, ...], dict, list[str]]:
    """What the fork server imports before its first start (``preload``), what once the loop
    is up (``later``), and the board's device drivers (pyserial, …), imported beside them.
    Only the way to the first tick is preloaded (the loop, the simulators): a process forked
    after it (the control plane: FastAPI) imports its own modules in its own process."""
    from .forkserver import main_module
    mains = {main_module(s.command(ctx)) for s in specs
             if s.forked and s.run_if(ctx) and not after_loop(s, specs)} - {None}
    later, drivers = {}, []
    if "nnos.runtime.__main__" in mains:
        from nnos_hardware.devices.factory import modules_for

        from ..backends import AUTO
        # the cpu backend, which loads the image's object by its record; what auto's measurement
        # and a model without a prebuilt object need (the other backends, the code generator)
        # once the loop ticks (RESULTS.md, issue 21: ≈ 0.25 s of an emulated boot)
        mains |= {"nnos.backends.ops_cpu", "nnos.backends.ops_numpy"}
        later["nnos.runtime"] = tuple(f"nnos.backends.ops_{name}" for name in AUTO) + ("nnos.backends.cpu.codegen",)
        drivers = sorted(modules_for(ctx.board))
    return tuple(sorted(mains)), later, drivers


def after_loop(spec, specs) -> bool:
    """``spec`` waits for the loop, itself or through what it starts after."""
    by_name = {s.name: s for s in specs}
    seen, todo = set(), list(spec.start_after)
    while todo:
        name = todo.pop()
        if name == "loop":
            return True
        if name not in seen and name in by_name:
            seen.add(name)
            todo += by_name[name].start_after
    return False


def arguments(p) -> None:
    """`nnos up`'s arguments, for the CLI's subcommand and for ``main``."""
    p.add_argument("--board", help="board config (default: the simulated cart-pole)")
    p.add_argument("--data", default=flags.DATA.get(), help="data directory (NNOS_DATA)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    p.add_argument("--plan", help="compiled plan to provision on first start (default: compile the board's model)")
    p.add_argument("--default-board", help="board config to restore when --board is missing or invalid")
    p.add_argument("--init", action="store_true", help="run as the device's PID 1: reap orphans, boot timeline, "
                   "reboot/power off on SIGTERM/SIGUSR2")


def main(argv: list[str]) -> int:
    """`nnos up ARGV` with a parser of its own: how nnos-init starts the supervisor without
    building the whole CLI's (every subcommand's parser and its help: ≈ 0.25 s of an emulated
    boot, benchmarks/RESULTS.md, issue 21)."""
    from ..cmdline import Parser

    from .. import backends  # noqa: F401 - the plans it provisions bind through them
    p = Parser(prog="nnos up")
    arguments(p)
    a = p.parse_args(argv)
    return up(a.board or DEFAULT_BOARD, a.data, a.duration, not a.no_status, plan=a.plan,
              default_board=a.default_board, init=a.init)


def up(board_path: str, data: str, duration: float | None = None, show_status: bool = True,
       plan: str | None = None, default_board: str | None = None, init: bool = False) -> int:
    if init:
        return _as_init(board_path, data, plan, default_board)
    return _up(board_path, data, duration, show_status, plan, default_board)


def _up(board_path, data, duration, show_status, plan, default_board, init=False) -> int:
    board = load_or_restore(board_path, default_board)
    run = os.path.join(data, "run")
    os.makedirs(run, exist_ok=True)
    lock = hold_lock(run)                        # noqa: F841 - held until this process exits
    end_orphans(run, log)
    store = ModelStore(data)
    cleaned = store.clean() + remove_run_leftovers(run)
    if cleaned:
        log(f"supervisor: removed {cleaned} leftovers of killed processes from {data}")
    ctx = Context(os.path.abspath(board_path), os.path.abspath(data), board, run)
    slots = updates_enabled(ctx)                 # the old plans stay until an updated slot is kept
    recompile_outdated(store, board, log, keep_old=slots)
    if not slots:
        store.commit_superseded()
    provision(board, store, plan)
    specs = table(ctx)
    manager = Manager(ctx, specs, log=log, stdout=subprocess.DEVNULL, forkserver=fork_server(ctx, specs))
    log(f"supervisor: board {board.name} at {board.rate_hz:g} Hz; data in {data}; "
        f"processes: {', '.join(s.name for s in specs if s.run_if(ctx))}")
    last = [0.0]
    tty = sys.stdout.isatty()
    every = 0.5 if tty else 30.0 if init else 1.0
    boot = None
    from .pid1 import BootTimeline, reap_orphans
    if init:
        boot = BootTimeline(run, flags.API_PORT.get(), cpu=flags.BOOT_CPU.get())

    def show(m):
        if boot is not None:
            boot.poll()
        if boot is not None or m.forkserver is not None:       # PID 1, or a child subreaper
            managed = {r.proc.pid for r in m.procs.values() if r.proc is not None}
            reap_orphans(managed | ({m.forkserver.pid} if m.forkserver is not None else set()))
        if show_status and time.monotonic() - last[0] > every:
            last[0] = time.monotonic()
            line = status_line(run, m)
            sys.stdout.write(("\r\033[K" + line) if tty else line + "\n")
            sys.stdout.flush()
    manager.run(duration, on_tick=show)
    if tty and show_status:
        sys.stdout.write("\n")
    return manager.stop_signal or 0


def _as_init(board_path, data, plan, default_board) -> int:
    """PID 1: run the supervisor until asked to stop, then reboot or power off. A supervisor
    that fails is logged and the device reboots (PID 1 must not exit: the kernel would panic)."""
    import traceback

    from ..timeline import stamp
    from .pid1 import how_to_stop, power
    stamp("supervisor: started")
    try:
        signum = _up(board_path, data, None, False, plan, default_board, init=True)
        how = how_to_stop(signum)
    except BaseException:                              # noqa: BLE001 - PID 1 must not exit
        log("supervisor: failed:\n" + traceback.format_exc())
        how = "reboot"
    power(how)
    return 0
