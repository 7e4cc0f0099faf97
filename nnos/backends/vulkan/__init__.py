"""The vulkan backend's parts: device.py (instance, device, limits, buffers, pipelines, the
recorded command buffer) and kernels.py (a plan's steps as generated GLSL → SPIR-V)."""
