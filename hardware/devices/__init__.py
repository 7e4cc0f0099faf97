"""Device drivers: one class per device kind, plus simulated and replayed devices."""
from .nnos_serial import NnosSerialDevice  # noqa: F401
from .simulated import SimulatedDevice  # noqa: F401
