"""Every environment flag nnos reads, in one typed registry. ``nnos flags`` lists them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from .errors import NnosError

T = TypeVar("T")
REGISTRY: dict[str, "Flag"] = {}


@dataclass(frozen=True)
class Flag(Generic[T]):
    """One environment flag: its name, parser, default and what it does."""
    name: str
    parse: Callable[[str], T]
    default: T
    help: str

    def get(self) -> T:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except ValueError as e:
            raise NnosError(f"environment flag {self.name}={raw!r} is invalid: expected "
                            f"{self.parse.__name__} ({self.help})") from e


def flag(name: str, parse: Callable[[str], T], default: T, help: str) -> Flag[T]:
    f = Flag(name, parse, default, help)
    REGISTRY[name] = f
    return f


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(s)


BLAS_THREADS = flag("NNOS_BLAS_THREADS", int, 1, "BLAS threads inside a plan call (1 avoids ms tails)")
CC = flag("NNOS_CC", str, "", "the C compiler of the cpu backend (empty: gcc, cc or clang, the first found)")
CC_TIMEOUT_S = flag("NNOS_CC_TIMEOUT_S", float, 600.0, "the longest one compile of a plan's C may take (a large "
                    "model on a slow or busy device takes minutes)")
CPU_CACHE = flag("NNOS_CPU_CACHE", str, "~/.cache/nnos/cpu", "where the cpu backend keeps compiled plans "
                 "(the image: /data/nnos/cache/cpu)")
CPU_PREBUILT = flag("NNOS_CPU_PREBUILT", str, "", "read-only directories (colon-separated) of compiled plans built "
                    "ahead of time, searched before NNOS_CPU_CACHE (the image: /usr/lib/nnos/cpu)")
CPU_TARGET = flag("NNOS_CPU_TARGET", str, "", "the CPU the cpu backend compiles for: native (empty) or a portable "
                  "target: x86-64-v2, x86-64-v3, x86-64-v4, armv8-a (the image: its build's target)")
CPU_VECTOR = flag("NNOS_CPU_VECTOR", int, 0, "floats per vector in the cpu backend's code (0: this CPU's best; "
                  "4 or 8 to run the SSE/NEON or AVX2 forms here)")
BACKEND = flag("NNOS_BACKEND", str, "auto", "the backend the loop runs plans on: auto (the fastest of cuda, vulkan, "
               "cpu and numpy, measured when a plan is bound), or one by name")
SELF_CHECK = flag("NNOS_SELF_CHECK", _bool, True, "compile checks plan == direct and save/load round trip")
IMAGE_SUITES = flag("NNOS_IMAGE_SUITES", str, "bookworm", "tests/image: the Debian suites whose images are built "
                    "and booted (comma separated; trixie adds a build and a boot: ~8 min)")
IMAGE_UPDATE_TEST = flag("NNOS_IMAGE_UPDATE_TEST", _bool, False, "tests/image: run the update test (A→B→A over "
                         "the API through GRUB; minutes, and open: see tests/image/test_update.py)")
QUICK = flag("NNOS_QUICK", _bool, False, "tests: skip the slow real-model and image cases")
LEGACY_VM = flag("NNOS_LEGACY_VM", str, "", "directory with the legacy VM's vmlinuz and initrd.img "
                 "(./build.sh legacy-vm makes out/legacy-vm); empty: no legacy VM")
LEGACY_VM_KERNEL = flag("NNOS_LEGACY_VM_KERNEL", str, "", "the legacy VM's kernel (empty: vmlinuz in NNOS_LEGACY_VM; "
                        "the image uses its own, on the boot partition)")
HW_WATCHDOG = flag("NNOS_HW_WATCHDOG", str, "", "hardware watchdog device the loop pets every tick "
                   "(/dev/watchdog on the image; empty: none)")
DATA = flag("NNOS_DATA", str, "nnos-data", "data directory of `nnos up` (models, state, run files)")
SPIN_US = flag("NNOS_SPIN_US", int, 60, "the loop sleeps until this long before each deadline and spins the rest")
API_HOST = flag("NNOS_API_HOST", str, "127.0.0.1", "address the control plane binds (0.0.0.0 on the image)")
API_PORT = flag("NNOS_API_PORT", int, 8080, "control plane port (0: do not run the control plane)")
MAX_TENSOR_ELEMENTS = flag("NNOS_MAX_TENSOR_ELEMENTS", int, 1 << 26, "the most elements one tensor of a model may "
                           "have (checked at compile and load, before anything is allocated)")
MAX_ARENA_BYTES = flag("NNOS_MAX_ARENA_BYTES", int, 1 << 30, "the most bytes a plan's activation arena may take")
LOOP_WATCHDOG_S = flag("NNOS_LOOP_WATCHDOG_S", float, 1.0, "the supervisor restarts a loop whose heartbeat is older "
                       "than this (an emulated device, much slower than the hardware, needs more; the image: "
                       "nnos.loop_watchdog_s=S on the kernel command line)")
UPDATE_PROBATION_S = flag("NNOS_UPDATE_PROBATION_S", float, 60.0, "after an update, the new slot is kept only once "
                          "the loop has ticked this long without a failsafe and the control plane answered")
UPDATE_DEADLINE_S = flag("NNOS_UPDATE_DEADLINE_S", float, 600.0, "a new slot not healthy this long after its boot is "
                         "marked bad and the device goes back to the other slot")
def address_ranges(s: str) -> tuple:
    """Comma-separated networks (10.77.0.0/16, 127.0.0.1, fd00::/8)."""
    import ipaddress
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in s.split(",") if part.strip())


SCRAPE_FROM = flag("NNOS_SCRAPE_FROM", address_ranges, (), "the address ranges /metrics answers (comma-separated "
                   "networks, e.g. the Prometheus server's 10.0.5.0/24; empty: any address that has a token)")
RAUC_CONF = flag("NNOS_RAUC_CONF", str, "/etc/rauc/system.conf", "RAUC's system config: an image with update "
                 "slots has one (image/steps/46-update.sh); updates are refused where it is missing")
MAX_BUNDLE_BYTES = flag("NNOS_MAX_BUNDLE_BYTES", int, 2 << 30, "the largest update bundle POST /v1/system/update takes")
LOOP_BUDGET = flag("NNOS_LOOP_BUDGET", float, 0.5, "the share of the tick period a model's p99.9 may take, and "
                   "over which a tick is an overrun (the image: nnos.loop_budget=F on the kernel command line)")
ROOT_SLOT = flag("NNOS_ROOT", str, "", "the root filesystem slot the image booted (root-a, root-b: set by its "
                 "initramfs; empty off the image)")
FORK_SERVER = flag("NNOS_FORK_SERVER", _bool, True, "the supervisor forks the loop from a process that has "
                   "already imported what it needs (0: each process starts a new Python)")
LOOP_START_GRACE_S = flag("NNOS_LOOP_START_GRACE_S", float, 30.0, "how long a starting loop may take to its "
                          "first heartbeat (imports, loading and verifying the model) before the watchdog counts")
API_HEADER_TIMEOUT_S = flag("NNOS_API_HEADER_TIMEOUT_S", float, 10.0, "the control plane closes a connection "
                            "whose request header is not complete this many seconds after it opened (slow clients)")
REQUIRE_SIGNED = flag("NNOS_REQUIRE_SIGNED", _bool, False, "the control plane accepts only models signed by DATA/trusted_keys")
RECORDINGS_MAX_MB = flag("NNOS_RECORDINGS_MAX_MB", float, 512.0, "the most the recordings in DATA/recordings may "
                         "take together (a recording stops when it would pass it)")
VULKAN_CACHE = flag("NNOS_VULKAN_CACHE", str, "~/.cache/nnos/vulkan", "where the vulkan backend keeps generated "
                    "SPIR-V and the driver's pipeline cache (the image: /data/nnos/cache/vulkan)")
VULKAN_CPU = flag("NNOS_VULKAN_CPU", _bool, False, "auto measures a Vulkan device that is the CPU itself (lavapipe) "
                  "too; by default it leaves such plans to the cpu backend")
VULKAN_STAGING = flag("NNOS_VULKAN_STAGING", _bool, False, "the vulkan backend keeps the arena in device-local "
                      "memory and copies inputs and outputs through a staging buffer even where the GPU's memory "
                      "is host-visible (it always does where it is not: a discrete GPU without a BAR)")
VULKAN_VALIDATION = flag("NNOS_VULKAN_VALIDATION", _bool, False, "the vulkan backend runs with the Khronos "
                         "validation layer and synchronization validation (tests; slow)")
BOOT_CPU = flag("NNOS_BOOT_CPU", _bool, False, "PID 1 stamps on the console the CPU time each process used between "
                "the first tick and the control plane's readiness (the image: nnos.bootcpu on the kernel command line)")
FOXGLOVE = flag("NNOS_FOXGLOVE", _bool, False, "the supervisor runs a Foxglove WebSocket server fed from telemetry "
                "(clients connect through the control plane: ws://HOST:PORT/v1/foxglove?token=…)")
FOXGLOVE_PORT = flag("NNOS_FOXGLOVE_PORT", int, 8765, "the Foxglove server's port on 127.0.0.1 (the control plane "
                     "relays /v1/foxglove to it)")
FOXGLOVE_HZ = flag("NNOS_FOXGLOVE_HZ", float, 30.0, "how often the Foxglove server publishes each topic's newest "
                   "message (0.1–100; whatever clients ask for)")
MDNS = flag("NNOS_MDNS", _bool, False, "the device announces its API as _nnos._tcp over mDNS/DNS-SD (avahi-daemon, "
            "in its own mount namespace; off by default)")


def read_env_file(path: str) -> tuple[dict[str, str], list[str]]:
    """A device's flags from a file (the image: /data/config/nnos.env): ``NAME=VALUE`` lines, ``#``
    comments. Only flags this registry knows, each value checked by its flag's parser; the other
    lines are left out and said, one problem a line. No file: nothing."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}, []
    out, problems = {}, []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name, value = name.strip(), value.strip().strip('"')
        where = f"{path}:{n}"
        if not eq or name not in REGISTRY:
            problems.append(f"{where}: {line[:80]!r} is not NAME=VALUE of a flag `nnos flags` lists; left out")
            continue
        try:
            REGISTRY[name].parse(value)
        except ValueError:
            problems.append(f"{where}: {name}={value!r} is invalid: expected {REGISTRY[name].parse.__name__} "
                            f"({REGISTRY[name].help}); left out")
            continue
        out[name] = value
    return out, problems
