"""The real image booted in qemu: built once per session (rebuilt when its inputs changed), each
test on its own sparse copy of the disk, grown to 1 GiB like a card larger than the image."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from image.build import inputs_digest  # noqa: E402
from image.datafs import DataFs  # noqa: E402
from image.vm import OUT, Vm, artifacts  # noqa: E402
from tests.support.timing import scaled  # noqa: E402

ARCH = "amd64"
BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")
DISK_SIZE = 1 << 30
TOOLS = ("qemu-system-x86_64", "mmdebstrap", "mksquashfs", "sfdisk", "debugfs", "mcopy")


def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.xdist_group("image"))     # one qemu at a time on 2 cores


@pytest.fixture(scope="session")
def image():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"the image build and boot need root and {', '.join(missing) or 'the build tools'} "
                    "(./build.sh boot installs them)")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".image.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        want = inputs_digest(ARCH, BOARD, None)
        try:
            with open(os.path.join(OUT, f"nnos-{ARCH}.inputs")) as f:
                have = f.read().strip()
        except FileNotFoundError:
            have = None
        if have != want:
            subprocess.run([sys.executable, os.path.join(ROOT, "image", "build.py"), "--arch", ARCH, "--board", BOARD],
                           check=True)
    return artifacts(ARCH)


class Device:
    """One booted image: the VM, its disk, and an API client with the token from its data
    partition."""

    def __init__(self, image: dict, workdir: str, uefi: bool = False, legacy_vm: bool = False):
        """``legacy_vm``: run the image's legacy VM (on by default on a device; off in the tests
        that are not about it: a guest emulated inside the emulated device only slows them)."""
        self.disk = os.path.join(workdir, "disk.img")
        subprocess.run(["cp", "--sparse=always", image["img"], self.disk], check=True)
        os.truncate(self.disk, DISK_SIZE)
        # the emulated device is far slower than hardware, and slower still on a loaded host: the
        # loop's watchdog period follows this machine's measured factor (1 s when idle)
        extra = [f"nnos.loop_watchdog_s={max(1.0, scaled(1.0)):.1f}"] + ([] if legacy_vm else ["nnos.legacy_vm=off"])
        # an emulated device's ticks stall past half a 20 ms period even on an idle host (CI saw
        # 10.5, 13 and 16 ms in three probations in a row): the loop's budget there is 90 %
        extra.append("nnos.loop_budget=0.90")
        self.vm = Vm(self.disk, ARCH, workdir=workdir, uefi=uefi, cmdline_extra=" ".join(extra))
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

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            with self.datafs() as fs:
                token = fs.read("/nnos/token").decode().strip()
            assert token.startswith("nnos_"), token
            self._client = httpx.Client(base_url=f"http://127.0.0.1:{self.vm.api_port}",
                                        headers={"Authorization": f"Bearer {token}"}, timeout=120)
        return self._client

    def status(self) -> dict:
        return self.client.get("/v1/status").json()

    def wait_status(self, cond, timeout: float = 60.0, what: str = "") -> dict:
        timeout = scaled(timeout)
        end = time.monotonic() + timeout
        st = None
        while time.monotonic() < end:
            try:
                st = self.status()
                if cond(st):
                    return st
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not {what} after {timeout:.0f} s: {st}\n{self.vm.console()[-3000:]}")


@pytest.fixture
def device(image, tmp_path):
    d = Device(image, str(tmp_path))
    yield d
    d.close()
