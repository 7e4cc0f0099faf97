"""One booted image: the VM on its own sparse copy of the disk (grown to 1 GiB like a card
larger than the image), its data partition, and an API client with the token from it."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.support.paths import BOARDS, ROOT
from tests.support.timing import factor, report_retry, scaled, wait_until

sys.path.insert(0, ROOT)

from image.build import inputs_digest  # noqa: E402,F401 - the image fixture's rebuild check
from image import bootconfig  # noqa: E402
from image.datafs import DataFs  # noqa: E402
from image.vm import OUT, Vm, artifacts  # noqa: E402,F401

ARCH = "amd64"
BOARD = os.path.join(BOARDS, "cartpole-sim.toml")
DISK_SIZE = 1 << 30
# longer than anything the device itself waits for (an activation: 120 s), so that a request
# the device gives up on is answered with its reason rather than cut off by the client
CLIENT_TIMEOUT_S = 240.0


class Device:
    """One booted image: the VM, its disk, and an API client with the token from its data
    partition."""

    def __init__(self, image: dict, workdir: str, uefi: bool = False, legacy_vm: bool = False,
                 watchdog_s: float = 1.0, served: str | None = None):
        """``legacy_vm``: run the image's legacy VM (on by default on a device; off in the tests
        that are not about it: a guest emulated inside the emulated device only slows them).
        ``watchdog_s``: the loop's watchdog period before scaling (a test that fails a probation
        on any loop restart gives the emulated device's stalls more room). ``served``: a folder
        whose files the device can fetch at http://10.0.2.100/NAME (image/vm.py)."""
        self.disk = os.path.join(workdir, "disk.img")
        subprocess.run(["cp", "--sparse=always", image["img"], self.disk], check=True)
        os.truncate(self.disk, DISK_SIZE)
        # the emulated device is far slower than hardware, and slower still on a loaded host: the
        # loop's watchdog period follows this machine's measured factor (1 s when idle)
        extra = [f"nnos.loop_watchdog_s={max(watchdog_s, scaled(watchdog_s)):.1f}"]
        extra += [] if legacy_vm else ["nnos.legacy_vm=off"]
        # an emulated device's ticks stall past half a 20 ms period even on an idle host (CI saw
        # 10.5, 13 and 16 ms in three probations in a row): the loop's budget there is 90 %
        extra.append("nnos.loop_budget=0.90")
        # where the CPUs went from the first tick to the control plane's readiness, on the console
        # of every boot (a failed test shows the console's tail)
        extra.append("nnos.bootcpu")
        self.vm = Vm(self.disk, ARCH, workdir=workdir, uefi=uefi, cmdline_extra=" ".join(extra), built=image,
                     served=served)
        self.mark = 0
        self._client: httpx.Client | None = None

    # --- power ---------------------------------------------------------------------------------
    def boot(self, api: bool = True, timeout: float = 180.0) -> "Device":
        self.vm.start()
        self.mark = 0
        self.wait_boot(api, timeout)
        return self

    def wait_boot(self, api: bool = True, timeout: float = 180.0) -> None:
        timeout = scaled(timeout)                       # an emulated guest on a loaded host is slower
        self.vm.wait_for(r"loop: first tick", timeout, after=self.mark)
        if api:
            self.vm.wait_for(r"control plane: ready", timeout, after=self.mark)

    def reboot(self) -> None:
        """Ask the device to reboot over the API and wait for its next first tick."""
        self.mark = len(self.vm.console())
        r = self.client.post("/v1/device/reboot")
        assert r.status_code == 202, r.text
        self.vm.wait_for(r"init: reboot", 60, after=self.mark)
        self.vm.wait_for(r"initramfs: started", 120, after=self.mark)
        self.wait_boot()

    def kill(self) -> None:
        self.vm.kill()
        if self._client:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.kill()

    # --- the data partition and the API ------------------------------------------------------------
    def datafs(self) -> DataFs:
        fs = DataFs(self.disk)
        fs.fsck()
        return fs

    def put_boot_config(self, name: str, data: bytes, checked: bool = True) -> None:
        """A config file on the boot partition (the device off), as a builder puts one on a card:
        imported at the next boot. ``checked=False`` puts one the tool would refuse."""
        bootconfig.write(self.disk, name, data, checked=checked)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            with self.datafs() as fs:
                token = fs.read("/nnos/token").decode().strip()
            assert token.startswith("nnos_"), token
            self._client = httpx.Client(base_url=f"http://127.0.0.1:{self.vm.api_port}",
                                        headers={"Authorization": f"Bearer {token}"}, timeout=CLIENT_TIMEOUT_S)
        return self._client

    def status(self) -> dict:
        return self.client.get("/v1/status").json()

    def wait_status(self, cond, timeout: float = 60.0, what: str = "") -> dict:
        seen = [None]

        def now():
            seen[0] = self.status()
            return seen[0] if cond(seen[0]) else None
        return wait_until(now, timeout, what or "a status", 0.5, ignore=(httpx.HTTPError,),
                          context=lambda: f"{seen[0]}\n{self.vm.console()[-3000:]}")

    def wait_ticking(self, timeout: float) -> dict:
        """Until the loop is running and its tick count moves (a status can still show the
        counters of a loop that was just killed)."""
        first = _ticks(self.wait_status(lambda st: True, timeout, "a status"))
        return self.wait_status(lambda st: _ticks(st) not in (None, first), timeout, "the loop ticking")


def boot_on_backend(dev: Device, backend: str) -> dict:
    """``dev`` powered off, NNOS_BACKEND=``backend`` written into its data partition's nnos.env,
    booted again: its status once the loop ticks."""
    dev.kill()
    with dev.datafs() as fs:
        fs.write("/config/nnos.env", f"NNOS_BACKEND={backend}\n".encode())
        fs.commit()
    dev.boot()
    return dev.wait_ticking(scaled(240))


def boot_times_path() -> str:
    return os.path.join(OUT, f"boot-times-{ARCH}.json")


def record_boot(which: str, t: dict) -> None:
    """A boot's phases (seconds), kept in out/boot-times-ARCH.json and shown at the end of the
    run (tests/image/conftest.py): recorded, never asserted — benchmarks/boot_bench.py judges
    them against the reference."""
    import json
    phases = {"kernel→init": t["init: started"], "init→first tick": t["loop: first tick"] - t["init: started"]}
    if "control plane: ready" in t:
        phases["first tick→API ready"] = t["control plane: ready"] - t["loop: first tick"]
    try:
        with open(boot_times_path()) as f:
            got = json.load(f)
    except (OSError, ValueError):
        got = {}
    got[which] = {k: round(v, 2) for k, v in phases.items()}
    with open(boot_times_path(), "w") as f:
        json.dump(got, f, indent=1)


def _ticks(st: dict):
    return st["loop"]["ticks"] if st["loop"].get("mode") == "running" else None


def upload_and_activate(dev, data: bytes) -> str:
    r = dev.client.post("/v1/models", content=data)
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    for _ in range(max(5, round(5 * factor()))):      # a loaded host stalls the emulated guest more often
        r = dev.client.post(f"/v1/models/{mid}/activate")
        # a stall of the emulated guest during probation (a tick over budget) is rolled back, as
        # it must be; that activation is asked again. Anything else is a failure.
        # A stall long enough for the loop's watchdog kills it mid-activation: the request is lost
        # with it (said at once), and asked again of its successor.
        detail = r.json().get("detail") if r.status_code == 409 else None
        if isinstance(detail, dict) and str(detail.get("reason", "")).startswith("overrun"):
            report_retry("image: upload_and_activate", f"a guest stall in probation rolled back: {detail['reason']}")
        elif isinstance(detail, str) and "restarted before it answered" in detail:
            report_retry("image: upload_and_activate", f"the loop was restarted mid-activation: {detail}")
            dev.wait_ticking(120)
        else:
            break
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "active", r.text
    return mid
