"""The image built on Debian 13 (trixie: Mesa 25 and a 6.12 kernel, what the Pi 5's and RK3588's
GPUs need): it boots to the network, its Python 3.13 runs nnos, and the loop runs the default
model on the vulkan backend there too. Asked for with NNOS_IMAGE_SUITES=bookworm,trixie (it
builds a second image: minutes). Regression: trixie's util-linux has no resizepart, and growing
the data partition failed into a RAM-only data directory (nothing kept, nothing for the host to
read back); it is grown with partx now, and the filesystem follows its partition."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nnos import flags
from tests.support.image import ARCH, BOARD, OUT, ROOT, Device, artifacts, boot_on_backend, inputs_digest
from tests.support.timing import scaled

pytestmark = pytest.mark.skipif("trixie" not in flags.IMAGE_SUITES.get().split(","),
                                reason="NNOS_IMAGE_SUITES does not name trixie")


@pytest.fixture(scope="module")
def trixie(image):                        # after the bookworm image: its tools and checks came first
    out = os.path.join(OUT, "trixie")
    try:
        with open(os.path.join(out, f"nnos-{ARCH}.inputs")) as f:
            have = f.read().strip()
    except FileNotFoundError:
        have = None
    if have != inputs_digest(ARCH, BOARD, None):
        subprocess.run([sys.executable, os.path.join(ROOT, "image", "build.py"), "--arch", ARCH, "--board", BOARD,
                        "--suite", "trixie", "--out", out], check=True)
    return artifacts(ARCH, out)


@pytest.mark.slow
def test_the_trixie_image_boots_and_runs_the_loop_on_vulkan(trixie, tmp_path):
    dev = Device(trixie, str(tmp_path))
    try:
        dev.boot()
        console = dev.vm.console()
        assert "Linux version 6.12" in console or "6.12." in console, console[:2000]
        assert "RAM-only" not in console and "data: partition grown" in console, console[:3000]
        st = dev.wait_ticking(scaled(240))
        assert st["loop"]["mode"] == "running", st["loop"]
        st = boot_on_backend(dev, "vulkan")
        assert st["loop"]["backend"].startswith("vulkan"), (st["loop"]["backend"], dev.vm.console()[-3000:])
        assert st["gpu"]["available"] and "llvmpipe" in st["gpu"]["device"], st["gpu"]
        first = st["loop"]["ticks"]
        st = dev.wait_status(lambda s: s["loop"]["ticks"] >= first + 100, scaled(60), "100 more ticks on vulkan")
        assert not st["loop"]["failsafe"], st["loop"]
    finally:
        dev.close()
