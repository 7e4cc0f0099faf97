"""The Feetech STS/SCS serial bus protocol (half duplex, 1 Mbaud on the STS3215):

    instruction   FF FF ID LEN INSTR PARAMS… CHK        LEN = len(PARAMS) + 2
    status        FF FF ID LEN ERROR PARAMS… CHK        CHK = ~(ID + LEN + INSTR|ERROR + PARAMS) & 0xFF

Instructions: PING, READ (address, length), WRITE (address, data…), REG_WRITE, ACTION, SYNC_READ
(0x82: address, length, ids…; each servo answers with its own status packet, in the order asked)
and SYNC_WRITE (0x83: address, length, then per servo its id and data; no answers). Broadcast
id 0xFE. Multi-byte register values are little-endian on STS servos and big-endian on SCS ones
(the register table says which: hardware/registers/feetech/).

``Parser`` takes bytes as they arrive and returns whole packets, resynchronising on a bad
checksum or garbage (each counted), never holding more than one packet's worth of bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .servo_packets import HeaderParser, sync_write_rows

HEADER = b"\xff\xff"
BROADCAST = 0xFE
MAX_ID = 0xFD
PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83
INSTRUCTIONS = {PING: "PING", READ: "READ", WRITE: "WRITE", REG_WRITE: "REG_WRITE", ACTION: "ACTION",
                SYNC_READ: "SYNC_READ", SYNC_WRITE: "SYNC_WRITE"}
MAX_PARAMS = 250                 # LEN is one byte: params + 2

# status packet error bits
ERROR_BITS = {0x01: "voltage", 0x02: "angle", 0x04: "overheating", 0x08: "range", 0x10: "checksum",
              0x20: "overload", 0x40: "instruction"}


def checksum(body: bytes) -> int:
    """``body``: ID, LEN, INSTR|ERROR and the params."""
    return ~sum(body) & 0xFF


def packet(servo_id: int, code: int, params: bytes = b"") -> bytes:
    """An instruction (``code`` = INSTR) or a status packet (``code`` = ERROR)."""
    if not 0 <= servo_id <= BROADCAST:
        raise ValueError(f"servo id {servo_id} is outside 0..{BROADCAST}")
    if len(params) > MAX_PARAMS:
        raise ValueError(f"{len(params)} parameter bytes; a packet holds at most {MAX_PARAMS}")
    body = bytes((servo_id, len(params) + 2, code)) + params
    return HEADER + body + bytes((checksum(body),))


def errors(bits: int) -> list[str]:
    """A status packet's error byte as names."""
    return [name for bit, name in ERROR_BITS.items() if bits & bit]


# --- instructions -------------------------------------------------------------------------------
def ping(servo_id: int) -> bytes:
    return packet(servo_id, PING)


def read(servo_id: int, address: int, length: int) -> bytes:
    return packet(servo_id, READ, bytes((address, length)))


def write(servo_id: int, address: int, data: bytes) -> bytes:
    return packet(servo_id, WRITE, bytes((address,)) + data)


def sync_read(address: int, length: int, ids: list[int]) -> bytes:
    return packet(BROADCAST, SYNC_READ, bytes((address, length, *ids)))


def sync_write(address: int, length: int, data: dict[int, bytes]) -> bytes:
    """``data``: servo id → its ``length`` bytes."""
    return packet(BROADCAST, SYNC_WRITE, sync_write_rows(bytes((address, length)), length, data))


# --- receiving -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    servo_id: int
    code: int                    # the instruction (from a host) or the error byte (from a servo)
    params: bytes

    @property
    def error(self) -> int:      # as a status packet (Dynamixel's Packet has the same two names)
        return self.code

    @property
    def data(self) -> bytes:
        return self.params


class Parser(HeaderParser):
    HEADER = HEADER

    def take(self):
        if len(self.buf) < 4:
            return None
        sid, length = self.buf[2], self.buf[3]
        if sid == 0xFF or length < 2:           # FF FF FF …: the header is one byte later
            self.stats.garbage_bytes += 1
            return 1, None
        total = 4 + length
        if len(self.buf) < total:
            return None
        body, chk = bytes(self.buf[2:total - 1]), self.buf[total - 1]
        if checksum(body) != chk:
            self.stats.checksum_errors += 1
            return 2, None                      # resynchronise after this header
        return total, Packet(body[0], body[2], body[3:])
