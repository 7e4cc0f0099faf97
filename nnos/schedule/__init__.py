"""Scheduling: the order of steps, buffer lifetimes, the arena layout and the cost model."""
from .cost import cost_model  # noqa: F401
from .lifetimes import memory_plan  # noqa: F401
from .memory import place_buffers  # noqa: F401
from .order import schedule  # noqa: F401
