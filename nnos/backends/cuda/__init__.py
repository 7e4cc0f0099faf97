"""The cuda backend's parts: source.py (the plan's steps as one CUDA C module, from the same
step bodies the vulkan backend's shaders use), graph.py (CuPy: the device, the module compiled
by NVRTC, the whole plan captured as one CUDA graph)."""
