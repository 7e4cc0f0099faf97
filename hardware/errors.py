"""The hardware layer's exception family. Every error names the device (or config line) and
says what was expected and what was received."""


class HardwareError(Exception):
    def __init__(self, device: str, message: str):
        super().__init__(f"{device}: {message}")
        self.device = device


class TransportError(HardwareError):
    """The byte link failed: port missing, unplugged, permission denied."""


class ProtocolError(HardwareError):
    """The peer spoke something other than nnos serial protocol v1 as expected."""


class DeviceError(HardwareError):
    """A device-level failure: unknown channel, value out of range, device not open."""


class ConfigError(HardwareError):
    """A board config is invalid; ``device`` holds 'FILE:LINE'."""
