"""Scheduling: the order of steps, buffer lifetimes, the arena layout and the cost model."""
from .cost import cost_model  # noqa: F401
from .memory import MemoryPlan, memory_plan, place_buffers  # noqa: F401
from .order import schedule  # noqa: F401
