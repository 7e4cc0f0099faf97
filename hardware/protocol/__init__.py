"""nnos serial protocol v1 (specified in hardware/PROTOCOL.md)."""
from .cobs import cobs_decode, cobs_encode  # noqa: F401
from .frames import (PROTOCOL_VERSION, ChannelInfo, Frame, FrameType, decode_frame,  # noqa: F401
                     encode_frame)
from .link import Link, LinkStats  # noqa: F401
