"""The image, booted in qemu: straight to the network driving the (simulated) robot, the API
with the token the device made, a model choice that survives a reboot, hotplug of a USB serial
adapter, power cuts, damaged storage, and config put on the boot partition before a boot."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import re
import threading
import time

import onnx
import pytest
from onnx import numpy_helper

from tests.support.image import ARCH, OUT, ROOT, Device, record_boot, upload_and_activate

from image import bootconfig  # noqa: E402 - tests.support.image puts the repository on the path

POLICY = os.path.join(ROOT, "models", "cartpole", "cartpole.onnx")
USB_BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-usb.toml")
BAD_BOARD = b'[board]\nname = "x"\nrate_hz = "fast"\n'


def variant(scale: float) -> bytes:
    """The cart-pole policy with its output layer scaled: another model that still balances."""
    m = onnx.load(POLICY)
    last = m.graph.initializer[-1]
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) * scale, last.name))
    return m.SerializeToString()


def manifest() -> dict:
    with open(os.path.join(OUT, f"nnos-{ARCH}.manifest.json")) as f:
        return json.load(f)


def ticking(dev, seconds: float = 2.0) -> dict:
    """The loop ticks through a window. A window in which the guest's supervisor killed the loop
    for a missed heartbeat (a TCG stall of over a second on a loaded host) is measured again,
    at most twice, and reported as a host stall — any other shortfall fails at once."""
    from tests.support.timing import report_retry, scaled, wait_until
    for attempt in range(3):
        kills = dev.vm.console().count("missed its watchdog")
        a = dev.status()["loop"]
        time.sleep(seconds)
        b = dev.status()["loop"]
        if b["ticks"] - a["ticks"] >= 0.6 * 50 * seconds:           # 50 Hz board, TCG guest
            return b
        killed = dev.vm.console().count("missed its watchdog") - kills
        assert killed and attempt < 2, (a, b, dev.vm.console()[-2000:])
        report_retry("image: ticking", f"the guest's loop was killed by its watchdog ({killed}×) in the window")
        wait_until(lambda: advancing(dev), scaled(60), "the restarted loop ticking after its watchdog",
                   1.0, context=lambda: dev.vm.console()[-2000:])
    raise AssertionError("unreachable")


def advancing(dev, seconds: float = 1.0) -> bool:
    """The loop ticks again: running, and its tick count rises over a short window. 'running'
    alone is not enough after a watchdog kill — the status still shows the killed loop's last
    report while its successor starts (seconds under TCG; a CI run measured its window there)."""
    a = dev.status()["loop"]
    time.sleep(seconds)
    b = dev.status()["loop"]
    return b["mode"] == "running" and b["ticks"] - a["ticks"] >= 0.3 * 50 * seconds


def bound_and_ticking(dev, what: str) -> None:
    """The adapter open, not lost, and the loop ticking on it — waited for, not assumed at the
    first 'running': in the emulated guest the loop has been killed by its watchdog right after
    the adapter came back (a stall over a second under TCG), and its successor must find the
    adapter by itself at start. Each such restart is reported as a host stall."""
    import httpx
    from tests.support.timing import report_retry, scaled, wait_until

    def on_it():
        loop = dev.status()["loop"]
        d = dev.client.get("/v1/devices").json()["devices"][0]
        return loop["mode"] == "running" and d["open"] and not d["lost"]
    for attempt in range(3):
        wait_until(on_it, scaled(120), what, 1.0, ignore=(httpx.HTTPError, KeyError),
                   context=lambda: dev.vm.console()[-3000:])
        try:
            ticking(dev)
            break
        except AssertionError:                 # restarted inside the window: ask again
            if attempt == 2:
                raise
    kills = dev.vm.console().count("missed its watchdog")
    if kills:
        report_retry("image: USB adapter hotplug", f"{kills} loop watchdog kill(s) in the guest so far")


def steady(dev, when: str, windows: int = 3) -> dict:
    """The robot balances and nothing fails safe: a window of running ticks with no failsafe
    entry in it. Entries before it must all be brief stale sensors — the emulated guest's
    simulator not scheduled for >100 ms on a loaded host (one loaded run had three) — and each
    is reported as a host stall, never hidden; any other reason fails the test."""
    for _ in range(windows):
        a = dev.status()["loop"]
        b = ticking(dev)
        if b["mode"] == "running" and b["failsafe_entries"] == a["failsafe_entries"]:
            break
    else:
        raise AssertionError(f"{when}: failsafe in every window: {b}\n" + "\n".join(failsafes(dev)))
    entries = failsafes(dev)
    bound = brief(dev)
    other = [line for line in entries if not _stale_within(line, bound)]
    assert not other, f"{when}: failsafe for a reason other than a host stall (bound {bound:.2f} s): {other}"
    if entries:
        from tests.support.timing import report_retry
        report_retry(f"image: {when}", f"{len(entries)} brief stale-sensor failsafe line(s), bound {bound:.2f} s: "
                                       f"{entries[0][-90:]}")
    return b


KERNEL_TO_INITRAMFS_S = 2.6     # amd64 under TCG on a quiet host (benchmarks/RESULTS.md, issue 21)


def brief(dev) -> float:
    """The longest sensor silence read as a host stall: 1 s, times how much slower than a quiet
    host's this boot's kernel reached its initramfs (12.5 s in one loaded CI hour, 2-3 s usually),
    so the bound follows the guest's measured speed rather than a fixed window."""
    reached = order(dev.vm.timeline()).get("initramfs: started", KERNEL_TO_INITRAMFS_S)
    return max(1.0, reached / KERNEL_TO_INITRAMFS_S)


def _stale_within(line: str, bound: float) -> bool:
    m = re.search(r"stale \(no reading for (\d+\.\d+) s", line)
    return bool(m) and float(m.group(1)) < bound


def failsafes(dev) -> list[str]:
    """The loop's failsafe entries on the console, with their reasons."""
    return [line for line in dev.vm.console().splitlines() if "FAILSAFE" in line]


def order(events) -> dict:
    """The boot's milestones in the order they came, with their times since the kernel started."""
    t = {}
    for at, ev in events:
        for key in ("initramfs: started", "init: started", "loop: first tick", "control plane: ready"):
            if ev.startswith(key) and key not in t:
                t[key] = at
    return t


def test_boots_to_the_network_keeps_the_chosen_model_across_a_reboot_and_survives_bit_rot(image, device):
    dev = device.boot()
    events = dev.vm.timeline()
    t = order(events)
    assert list(t) == ["initramfs: started", "init: started", "loop: first tick", "control plane: ready"], events
    assert t["initramfs: started"] < t["init: started"] < t["loop: first tick"] < t["control plane: ready"], t
    record_boot("first boot", t)                        # recorded, not asserted: benchmarks/boot_bench.py judges them
    dev.vm.wait_for(r"network: eth0 10\.0\.2\.15/24 \(DHCP\)", 30)        # after the loop, in the background
    # nnos.bootcpu: the CPU each process used from the first tick to the control plane's
    # readiness, once it answers — the control plane's own start-up among them
    dev.vm.wait_for(r"boot cpu: first tick to control plane ready, the CPUs' seconds: user", 30)
    report = [ev for _, ev in dev.vm.timeline() if ev.startswith("boot cpu: ")]
    assert any(re.match(r"boot cpu: \d+\.\d\d s \S*controlplane \(pid \d+, nice 5\)", ev) for ev in report), report
    console = dev.vm.console()
    assert "data: first boot: making the data filesystem" in console
    # dataclasses' methods on the way to the first tick, compiled at image build (nnos/gencache.py)
    assert re.search(r"init: generated code: [1-9]\d* from the image's record, 0 compiled", console), console
    assert "data: partition grown by" in console and "data: filesystem grown from" in console
    # the initramfs stops loading disk controllers once the root slot's partition is there (the
    # virtio disk's, early in the list); the rest load with the coldplug, after the first tick
    loaded = re.search(r"initramfs: modules: (\d+) of (\d+) loaded", console)
    assert loaded and 0 < int(loaded[1]) < int(loaded[2]), console[:3000]
    assert console.index("started loop") < console.index("started network")     # optional things after the loop
    # udev's coldplug (the NIC's driver among what it loads) only once the loop ticks
    coldplug = next(at for at, ev in events + dev.vm.timeline() if ev.startswith("supervisor: started coldplug"))
    assert t["loop: first tick"] < coldplug, (t, coldplug)
    # the default model, compiled at build time, runs; the robot balances; nothing failed safe
    st = dev.status()
    assert st["loop"]["active"] == st["store"]["active"] == manifest()["plan_id"], st
    # on the cpu backend, from the object built with the image and its recorded program (no C
    # generated on the device), verified against numpy before it ran
    target = manifest()["cpu_backend"]["target"]
    assert st["loop"]["backend"].startswith(f"cpu ({target} object built with the image (its program recorded: "
                                            "no C generated), verified against numpy"), st
    steady(dev, "first boot")
    # a second model over the API, then a reboot: the choice is on the data partition
    mid = upload_and_activate(dev, variant(1.01))
    dev.reboot()
    record_boot("second boot", order(dev.vm.timeline()))
    st = dev.status()
    assert st["loop"]["active"] == mid, st
    assert st["store"]["previous"] == manifest()["plan_id"], st
    # the same network with other weights: the code is the same (weights are never baked into it),
    # so the object built with the image runs this model too; it was checked against numpy when it
    # was activated, and this boot remembered that rather than checking again before its first tick
    assert st["loop"]["backend"].startswith(f"cpu ({target} object built with the image, verified against numpy "
                                            "once on root-a (remembered)"), st["loop"]
    steady(dev, "after the reboot")
    second = dev.vm.console()[dev.mark:]
    assert "first boot" not in second
    assert "data: /dev/vda4 mounted on /data" in second
    assert "init: reboot" in dev.vm.console()
    # bit rot in the active model's file: the next boot runs the previous one
    dev.kill()
    with dev.datafs() as fs:
        blob = bytearray(fs.read(f"/nnos/models/{mid}.nnos"))
        blob[len(blob) // 2] ^= 0xFF
        fs.write(f"/nnos/models/{mid}.nnos", bytes(blob))
        fs.commit()
    dev.boot()
    # the loop's heartbeat just after a boot can be a second old in the emulated guest (the
    # status then says "down"): wait for it to be seen running
    st = dev.wait_status(lambda s: s["loop"]["mode"] == "running", 60, "running after the bit rot")
    assert st["loop"]["active"] == manifest()["plan_id"], st
    logs = "\n".join(dev.client.get("/v1/logs", params={"process": "loop"}).json()["lines"])
    assert "does not load" in logs, logs[-2000:]
    assert "corrupted" in logs, logs[-2000:]


def test_hotplugged_usb_serial_adapter_is_bound_by_identity(image, device, tmp_path):
    dev = device
    with open(USB_BOARD, "rb") as f:                  # the board, on the card before its first boot
        dev.put_boot_config("board.toml", f.read())
    dev.boot()
    # the board wants a USB adapter that is not there: failsafe, and the API says why
    st = dev.wait_status(lambda s: s["loop"]["mode"] == "failsafe", 30, "in failsafe without the adapter")
    assert st["board"]["name"] == "cartpole-usb", st
    assert st["loop"]["failsafe_reason"], st
    sim = subprocess.Popen([sys.executable, "-m", "nnos_hardware.sim", "cartpole", "--seed", "7"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=open(tmp_path / "sim.stderr", "wb"), text=True)
    try:
        port = json.loads(sim.stdout.readline())["port"]
        dev.vm.add_usb_serial("cp0", port, "NNOSCP01")
        bound_and_ticking(dev, "running on the adapter once it is in")
        dev.vm.remove_usb("cp0")
        dev.wait_status(lambda s: s["loop"]["mode"] == "failsafe", 30, "failsafe after device_del")
        dev.vm.add_usb_serial("cp0", port, "NNOSCP01")
        bound_and_ticking(dev, "running on the adapter again after the re-add")
    finally:
        sim.kill()
        sim.wait()
    console = dev.vm.console()
    assert "hotplug: cartpole add: 0403:6001 serial NNOSCP01 at /dev/ttyUSB" in console
    assert "hotplug: cartpole remove" in console


def test_power_cuts_during_upload_and_running_leave_the_last_committed_model(image, device):
    rng = random.Random(int(os.environ.get("NNOS_CRASH_SEED", "2026")))
    dev = device.boot()
    committed = manifest()["plan_id"]
    for i, scale in enumerate((1.02, 1.03)):
        # cut the power at a random moment while a model is uploaded and activated
        result = {}

        def go():
            try:
                result["id"] = upload_and_activate(dev, variant(scale))
            except Exception as e:                  # noqa: BLE001 - the connection dies with the VM
                result["error"] = e
        th = threading.Thread(target=go)
        th.start()
        time.sleep(rng.uniform(0.0, 4.0))
        dev.kill()
        th.join(30)
        if "id" in result:
            committed = result["id"]                # the API said it was active before the cut
        with dev.datafs() as fs:
            assert fs.fsck() < 4                    # the journal replays; no damage left
        dev.boot()
        st = dev.status()
        assert st["loop"]["active"] == st["store"]["active"], st
        if st["store"]["active"] != committed:
            # the cut came after the activation was committed but before the API answered
            assert st["store"]["previous"] == committed, (st, committed)
            committed = st["store"]["active"]
        ids = {m["id"] for m in dev.client.get("/v1/models").json()["models"]}
        assert committed in ids
        assert all(dev.client.get(f"/v1/models/{m}").status_code == 200 for m in ids)
        # running, with no failsafe but a brief stale sensor (a host stall; a loaded host's
        # guest failed a bare check of the mode just after its boot)
        steady(dev, f"after power cut {i + 1}")
    # and in the middle of plain running
    time.sleep(rng.uniform(0.5, 3.0))
    dev.kill()
    dev.boot()
    st = dev.status()
    assert st["loop"]["active"] == committed, st
    steady(dev, "after the power cut while running")


def test_unreadable_or_missing_data_partition_is_recreated_with_defaults(image, device):
    dev = device
    # garbage over the whole data partition: recreated, defaults restored, said on the console
    from image.datafs import partition
    part = partition(dev.disk)
    with open(dev.disk, "r+b") as f:
        f.seek(part["start"])
        f.write(os.urandom(part["size"]))
    dev.boot()
    console = dev.vm.console()
    assert "is unreadable" in console, console[-3000:]
    assert "recreating it" in console, console[-3000:]
    st = dev.status()
    assert st["loop"]["active"] == manifest()["plan_id"]
    assert ticking(dev)["mode"] == "running"
    dev.kill()
    # no data partition at all: a new one is made in the free space
    subprocess.run(["sfdisk", "--delete", dev.disk, str(part["number"])], check=True, capture_output=True)
    dev.boot()
    assert "no data partition: creating one" in dev.vm.console()
    assert dev.status()["loop"]["active"] == manifest()["plan_id"]


def test_config_put_on_the_boot_partition_before_the_first_boot(image, device):
    """A builder's card: a static address, a host name, an API token and a broken board put on
    the boot partition before it ever booted. One boot: the network, the name and the token are
    taken, the board is refused with its reason (the device runs on the image's default) — on
    the console and in the status, which is all a headless device has to say it."""
    dev = device
    # qemu's user network answers DHCP with 10.0.2.15; the same address set statically
    dev.put_boot_config("network.toml", b'address = "10.0.2.15/24"\ngateway = "10.0.2.2"\n')
    dev.put_boot_config("hostname", b"arm-3\n")
    with pytest.raises(bootconfig.BootConfigToolError, match="rate_hz must be a number"):
        dev.put_boot_config("board.toml", BAD_BOARD)                # the tool says it first
    dev.put_boot_config("board.toml", BAD_BOARD, checked=False)
    token = bootconfig.new_token(dev.disk)                          # the API token, known before the boot
    dev.boot()
    console = dev.vm.console()
    assert token not in console
    assert dev.client.headers["Authorization"] == f"Bearer {token}"   # what the device keeps is the one given
    assert "config: /boot/nnos/config/board.toml refused: " in console, console[-3000:]
    assert "rate_hz must be a number" in console and "network.toml imported from the boot partition" in console
    st = dev.status()
    assert st["board"]["name"] == "cartpole-sim"                     # the image's default
    got = st["boot_config"]
    assert got["board.toml"]["result"] == "refused" and "rate_hz must be a number" in got["board.toml"]["why"], got
    assert got["network.toml"] == got["hostname"] == {"result": "imported", "why": None}, got
    dev.vm.wait_for(r"network: eth0 10\.0\.2\.15/24 \(static\)", 30)
    assert "(DHCP)" not in dev.vm.console()
    assert 'hostname="arm-3"' in dev.client.get("/metrics").text


@pytest.mark.slow
def test_uefi_boot_through_grub(image, tmp_path):
    dev = Device(image, str(tmp_path), uefi=True)
    try:
        dev.boot(api=False, timeout=300)
        assert "loop: first tick" in dev.vm.console()
    finally:
        dev.close()
