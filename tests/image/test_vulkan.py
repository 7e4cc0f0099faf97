"""The image carries the vulkan backend: the loader, Mesa's drivers (lavapipe here, in qemu), the
shader compiler and the bindings. Asked for in the data partition's config, the loop runs the
default model on the vulkan backend inside the booted image — with the SPIR-V the image build
generated and kept in the default plan, no shader compiled on the device — and the status names
the Vulkan device."""
from __future__ import annotations

import pytest

from tests.support.image import boot_on_backend
from tests.support.timing import scaled


@pytest.mark.slow
def test_the_loop_runs_the_default_model_on_vulkan_in_the_image(image, device):
    dev = device
    dev.boot()
    st = boot_on_backend(dev, "vulkan")
    loop = st["loop"]
    assert loop["backend"].startswith("vulkan"), (loop["backend"], dev.vm.console()[-3000:])
    assert loop["mode"] == "running", loop
    assert "SPIR-V the plan's own" in loop["backend"], loop["backend"]
    gpu = st["gpu"]
    assert gpu["available"] and "llvmpipe" in gpu["device"], gpu
    first = loop["ticks"]
    st = dev.wait_status(lambda s: s["loop"]["ticks"] >= first + 100, scaled(60), "100 more ticks on vulkan")
    assert st["loop"]["backend"].startswith("vulkan") and not st["loop"]["failsafe"], st["loop"]
