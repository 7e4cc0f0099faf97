"""nnos's PID 1 on the appliance (/sbin/nnos-init, started by the initramfs's switch_root).

In order: mount the kernel filesystems; load the board's modules; start udev; check and mount
the data partition (created on first boot, recreated when unreadable); import the config put on
the boot partition (bootconfig.py); restore default config;
then the supervisor (`nnos up --init`, in this same process: nnos/appliance.py), which stays
PID 1: it starts the loop before anything optional (the network — DHCP, or static from the data
partition —, the control plane), reaps orphans, and reboots or powers off on request. Each step
is stamped on the console.

The root filesystem is read-only (squashfs); writable places are tmpfs (/run, /tmp, /var/tmp)
and the data partition (/data).
"""
from __future__ import annotations

import os
import subprocess
import sys
import traceback

from .. import flags
from . import datapart
from ..timeline import stamp

DATA = "/data"
CONFIG = "/data/config"
STATE = "/data/nnos"                  # the supervisor's --data: store, token, logs
PREBUILT = "/usr/lib/nnos/cpu"         # compiled plans built with the image (step 48), read-only
CPU_TARGET = "/etc/nnos/cpu-target"    # the CPU target they are built for
DEFAULT_BOARD = "/etc/nnos/board.toml"
DEFAULT_PLAN = "/usr/share/nnos/default.plan"
LEGACY_VM = "/usr/lib/nnos/legacy-vm"     # the legacy VM's initramfs (image step 45)
BOOT = "/boot"                            # the boot partition, read-only: the legacy VM's kernel
BOOT_CONFIG = "/boot/nnos/config"         # config a builder put there before a boot (bootconfig.py)
BOARD_MODULES = "/etc/nnos/modules"   # modules this image loads before the supervisor (watchdog, ...)
# the data and boot partitions' filesystems: not in the initramfs (image/initramfs-modules.txt),
# whose every module is on the way to the first tick; here they load beside PID 1's imports
FILESYSTEMS = ("ext4", "vfat", "nls_cp437", "nls_ascii")
UDEVD = ("/usr/lib/systemd/systemd-udevd", "/lib/systemd/systemd-udevd")
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def say(msg: str) -> None:
    stamp(msg, sys.stdout)


def mount_kernel_filesystems() -> None:
    table = [("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
             ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
             ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
             ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=000"),
             ("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
             ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=20%"),
             ("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
             ("tmpfs", "/var/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
             ("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")]   # limits for the legacy VM
    for source, target, fstype, mount_flags, options in table:
        if os.path.ismount(target) and target in ("/dev", "/proc", "/sys"):
            continue                                  # handed over by the initramfs
        try:
            datapart.mount(source, target, fstype, mount_flags, options)
        except OSError as e:
            say(f"init: {e}")


def load_modules() -> None:
    """The partitions' filesystems and the board's modules (its watchdog, ...)."""
    names = list(FILESYSTEMS)
    try:
        with open(BOARD_MODULES) as f:
            names += [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    except FileNotFoundError:
        pass
    r = subprocess.run(["modprobe", "-a", "-q", *names], capture_output=True, text=True)
    if r.returncode != 0 and r.stderr.strip():          # -q: modules this kernel lacks stay quiet
        say(f"init: some of the modules did not load ({', '.join(names)}): {r.stderr.strip()}")


def start_udev() -> None:
    """udevd, for hotplug. Its coldplug (an event for every device already there, loading their
    drivers' modules) is the supervisor's `coldplug` process, after the loop's first tick: run
    here, its workers took the CPU from the supervisor's imports (3 s of an emulated boot). The
    modules the loop needs before its first tick are loaded by name (load_modules, and the
    board's `modules`)."""
    udevd = next((p for p in UDEVD if os.path.exists(p)), None)
    if udevd is None:
        say("init: no udevd in this image: no hotplug")
        return
    subprocess.run([udevd, "--daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ram_data(why: str) -> None:
    say(f"data: {why}; running with a RAM-only data directory: nothing will be kept across a reboot")
    datapart.mount("tmpfs", DATA, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")


def mount_data() -> dict:
    try:
        return datapart.prepare(DATA, say)
    except (datapart.DataPartitionError, OSError) as e:
        ram_data(str(e))
        return {"dev": None, "created": True, "recreated": str(e), "grown": False}


def mount_boot() -> None:
    """The boot partition, read-only at /boot: the legacy VM boots the device's own kernel."""
    part = datapart.partitions().get("boot")
    if part is None:
        say("init: no boot partition found: no kernel for the legacy VM")
        return
    try:
        datapart.mount(part["dev"], BOOT, "vfat", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "")
    except OSError as e:
        say(f"init: boot partition {part['dev']} not mounted ({e}): no kernel for the legacy VM")


def legacy_vm_kernel() -> str:
    """This slot's kernel on the boot partition (the one the root's modules belong to)."""
    slot = os.environ.get("NNOS_ROOT", "root-a").rpartition("-")[2]
    return os.path.join(BOOT, "nnos", slot, "vmlinuz")


def import_boot_config() -> None:
    """The config files put on the boot partition since the last boot, into the data partition's
    (a bad one refused and said): before the defaults, which fill in only what is still missing."""
    from . import bootconfig
    try:
        os.makedirs(CONFIG, exist_ok=True)
        bootconfig.take(BOOT_CONFIG, CONFIG, say, state=STATE)
    except Exception as e:                             # noqa: BLE001 - the defaults, host name and run folder still come
        say(f"config: the boot partition's config was not imported: {type(e).__name__}: {e}")


def restore_defaults() -> None:
    os.makedirs(CONFIG, exist_ok=True)
    os.makedirs(STATE, exist_ok=True)
    board = os.path.join(CONFIG, "board.toml")
    if not os.path.exists(board):
        from ..fsutil import atomic_write
        with open(DEFAULT_BOARD, "rb") as f:
            atomic_write(board, f.read())
        say(f"init: board config {board} restored from the image's default")
    run = os.path.join(STATE, "run")               # telemetry, sockets: RAM, never the flash
    os.makedirs(run, exist_ok=True)
    if not os.path.ismount(run):
        datapart.mount("tmpfs", run, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")


def set_hostname() -> None:
    import socket
    name = "nnos"
    try:
        with open(os.path.join(CONFIG, "hostname")) as f:
            name = f.read().strip() or name
    except FileNotFoundError:
        pass
    try:
        socket.sethostname(name)
    except OSError as e:
        say(f"init: hostname {name!r}: {e}")


def supervisor_env() -> dict:
    env = dict(os.environ, NNOS_INIT="1", PATH=PATH,
               HOME="/root", LANG="C.UTF-8", PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("NNOS_API_HOST", "0.0.0.0")    # the device's control plane is for the local network
    env.setdefault("OPENBLAS_NUM_THREADS", "1")     # no BLAS thread pool: numpy imports ~3x faster
    env.setdefault("NNOS_CPU_CACHE", os.path.join(STATE, "cache", "cpu"))   # compiled plans: the root is read-only
    env.setdefault("NNOS_VULKAN_CACHE", os.path.join(STATE, "cache", "vulkan"))   # SPIR-V, pipeline caches
    env.setdefault("NNOS_CPU_PREBUILT", PREBUILT)     # the default model's object, built with the image
    try:                                               # the CPU target the image's objects are built for
        with open(CPU_TARGET) as f:
            env.setdefault("NNOS_CPU_TARGET", f.read().strip())
    except OSError:
        pass
    try:
        with open("/proc/cmdline") as f:
            args = f.read().split()
    except OSError:
        args = []
    if "nnos.importtime" in args:                   # boot diagnostics: every import's cost
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    if "nnos.bootcpu" in args:                      # boot diagnostics: the CPUs' time after the first tick
        env["NNOS_BOOT_CPU"] = "1"
    for arg in args:                                # an emulated device is slower than the hardware
        if arg.startswith("nnos.loop_watchdog_s="):
            env["NNOS_LOOP_WATCHDOG_S"] = arg.split("=", 1)[1]
        if arg.startswith("nnos.loop_budget="):
            env["NNOS_LOOP_BUDGET"] = arg.split("=", 1)[1]
    # the legacy VM the image carries (step 45), unless booted with nnos.legacy_vm=off
    if os.path.isfile(os.path.join(LEGACY_VM, "initrd.img")) and os.path.isfile(legacy_vm_kernel()) \
            and "nnos.legacy_vm=off" not in args:
        env.setdefault("NNOS_LEGACY_VM", LEGACY_VM)
        env.setdefault("NNOS_LEGACY_VM_KERNEL", legacy_vm_kernel())
    if os.path.exists("/dev/watchdog"):
        env.setdefault("NNOS_HW_WATCHDOG", "/dev/watchdog")
    given, problems = flags.read_env_file(os.path.join(CONFIG, "nnos.env"))    # the device's own settings
    for p in problems:
        say(f"config: {p}")
    env.update(given)
    return env


def supervisor_command() -> tuple[list[str], dict]:
    """How nnos.appliance starts the supervisor (`nnos up --init`): its arguments and environment."""
    argv = ["up", "--init", "--board", os.path.join(CONFIG, "board.toml"), "--default-board", DEFAULT_BOARD,
            "--plan", DEFAULT_PLAN, "--data", STATE]
    return argv, supervisor_env()


def early() -> None:
    """What everything else needs: the kernel's filesystems (/proc, /sys, /dev, …)."""
    os.umask(0o022)
    os.environ["PATH"] = PATH
    try:
        mount_kernel_filesystems()
    except Exception:                                  # noqa: BLE001 - PID 1 must reach the supervisor
        say("init: mounting the kernel filesystems failed:\n" + traceback.format_exc())


def steps() -> None:
    """The boot steps after ``early``: modules, udev, the data partition, defaults."""
    try:
        load_modules()
        start_udev()
        info = mount_data()
        say(f"data: {info['dev'] or 'tmpfs'} mounted on {DATA}")
        mount_boot()
        import_boot_config()
        restore_defaults()
        set_hostname()
    except Exception:                                  # noqa: BLE001 - PID 1 must reach the supervisor
        say("init: a boot step failed; starting the supervisor anyway:\n" + traceback.format_exc())
        fallback()


def fallback() -> None:
    """What the supervisor cannot start without, however the boot steps ended."""
    if not os.path.ismount(DATA):
        ram_data("not mounted")
    os.makedirs(STATE, exist_ok=True)
    if not os.path.exists(os.path.join(CONFIG, "board.toml")):
        os.makedirs(CONFIG, exist_ok=True)
        import shutil
        shutil.copy(DEFAULT_BOARD, os.path.join(CONFIG, "board.toml"))


def main(beside=None) -> tuple[list[str], dict]:
    """The boot steps (after nnos/appliance.py stamped "init: started"); returns how to start
    the supervisor (appliance.py starts it). ``beside``: work for this process while a child
    runs the steps after ``early`` (the supervisor's imports: under emulation this took ≈ 0.6 s
    of the steps' 1.3 s off the way to the first tick, benchmarks/RESULTS.md). The child shares
    this process's mounts and host name; what it starts (udevd) is PID 1's to reap."""
    early()
    if beside is None:
        steps()
    else:
        _steps_beside(beside)
    say("init: starting the supervisor")
    return supervisor_command()


def _steps_beside(work) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:
        say(f"init: no process for the boot steps ({e.strerror}): one after the other")
        steps()
        work()
        return
    if pid == 0:
        code = 1                                       # steps() says and handles its errors; anything else: 1
        try:
            steps()
            code = 0
        finally:
            os._exit(code)
    try:
        work()
    finally:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            say(f"init: the boot steps' process ended with status {status}")
            fallback()
