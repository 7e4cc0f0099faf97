"""The image carries the vulkan backend: the loader, Mesa's drivers (lavapipe here, in qemu), the
shader compiler and the bindings. Asked for in the config put on the boot partition before the
first boot (imported into the data partition's nnos.env), the loop runs the
default model on the vulkan backend inside the booted image — with the SPIR-V the image build
generated and kept in the default plan, no shader compiled on the device — and the status names
the Vulkan device."""
from __future__ import annotations

import pytest

from tests.support.timing import scaled


@pytest.mark.slow
def test_the_loop_runs_the_default_model_on_vulkan_in_the_image(image, device):
    dev = device
    dev.put_boot_config("nnos.env", b"NNOS_BACKEND=vulkan\n")
    dev.boot()
    assert "config: nnos.env imported from the boot partition" in dev.vm.console(), dev.vm.console()[-3000:]
    st = dev.wait_ticking(scaled(240))
    loop = st["loop"]
    assert loop["backend"].startswith("vulkan"), (loop["backend"], dev.vm.console()[-3000:])
    assert loop["mode"] == "running", loop
    assert "SPIR-V the plan's own" in loop["backend"], loop["backend"]
    gpu = st["gpu"]
    assert gpu["available"] and "llvmpipe" in gpu["device"], gpu
    first = loop["ticks"]
    st = dev.wait_status(lambda s: s["loop"]["ticks"] >= first + 100, scaled(60), "100 more ticks on vulkan")
    assert st["loop"]["backend"].startswith("vulkan") and not st["loop"]["failsafe"], st["loop"]
