"""Dynamixel Protocol 2.0 (X-series servos: Koch, OpenManipulator and the SO-101's Dynamixel
cousins), half duplex:

    instruction   FF FF FD 00 ID LEN_L LEN_H INSTR PARAMS… CRC_L CRC_H
    status        FF FF FD 00 ID LEN_L LEN_H 55 ERROR PARAMS… CRC_L CRC_H

LEN counts what follows it (INSTR, the params after byte stuffing, the CRC). Byte stuffing:
inside INSTR and PARAMS, every FF FF FD gets an extra FD, so a header never appears in a body.
CRC-16, polynomial 0x8005, initial value 0, over everything before it (stuffed). Addresses and
lengths are 2 bytes, values little-endian and two's complement. SYNC_READ (0x82: address,
length, ids…) is answered by one status packet per servo, in the order asked.
"""
from __future__ import annotations

from dataclasses import dataclass

from .servo_packets import HeaderParser, sync_write_rows

HEADER = b"\xff\xff\xfd\x00"
BROADCAST = 0xFE
PING, READ, WRITE, REG_WRITE, ACTION, REBOOT, STATUS = 0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x55
SYNC_READ, SYNC_WRITE, FAST_SYNC_READ = 0x82, 0x83, 0x8A
ERRORS = {1: "result fail", 2: "instruction error", 3: "CRC error", 4: "data range error",
          5: "data length error", 6: "data limit error", 7: "access error"}
ALERT = 0x80                     # the servo has a hardware error (read Hardware_Error_Status)
MAX_LENGTH = 1024                # what nnos accepts in one packet (the SDK's buffers are smaller)


def _table() -> list[int]:
    out = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        out.append(crc & 0xFFFF)
    return out


_CRC = _table()


def crc16(data: bytes, crc: int = 0) -> int:
    for b in data:
        crc = ((crc << 8) ^ _CRC[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes, before: bytes = b"") -> bytes:
    """``body`` with an FD after every FF FF FD in it (``before``: the bytes preceding it)."""
    out, prev = bytearray(), bytearray(before[-2:])
    for b in body:
        out.append(b)
        if b == 0xFD and prev[-2:] == b"\xff\xff":
            out.append(0xFD)
        prev = (prev + bytes((b,)))[-2:]
    return bytes(out)


def unstuff(body: bytes, before: bytes = b"") -> bytes:
    out, prev = bytearray(), bytearray(before[-2:])
    skip = False
    for i, b in enumerate(body):
        if skip:
            skip = False
            continue
        out.append(b)
        if b == 0xFD and prev[-2:] == b"\xff\xff" and i + 1 < len(body) and body[i + 1] == 0xFD:
            skip = True
        prev = (prev + bytes((b,)))[-2:]
    return bytes(out)


def packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """An instruction packet, or with ``instruction`` = STATUS a status packet (params: the
    error byte, then the data)."""
    if not 0 <= servo_id <= BROADCAST:
        raise ValueError(f"servo id {servo_id} is outside 0..{BROADCAST}")
    length_pos = HEADER + bytes((servo_id,))
    body = stuff(bytes((instruction,)) + params, b"\x00\x00")     # LEN_H never is FF: nothing to join
    n = len(body) + 2
    if n > MAX_LENGTH:
        raise ValueError(f"a packet of {n} bytes; at most {MAX_LENGTH}")
    head = length_pos + n.to_bytes(2, "little")
    crc = crc16(head + body)
    return head + body + crc.to_bytes(2, "little")


def status(servo_id: int, error: int = 0, data: bytes = b"") -> bytes:
    return packet(servo_id, STATUS, bytes((error,)) + data)


def describe_error(error: int) -> str:
    text = ERRORS.get(error & 0x7F, f"error {error & 0x7F}") if error & 0x7F else "no error"
    return text + (" (hardware alert)" if error & ALERT else "")


# --- instructions -------------------------------------------------------------------------------
def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "little")


def ping(servo_id: int) -> bytes:
    return packet(servo_id, PING)


def read(servo_id: int, address: int, length: int) -> bytes:
    return packet(servo_id, READ, _u16(address) + _u16(length))


def write(servo_id: int, address: int, data: bytes) -> bytes:
    return packet(servo_id, WRITE, _u16(address) + data)


def sync_read(address: int, length: int, ids: list[int]) -> bytes:
    return packet(BROADCAST, SYNC_READ, _u16(address) + _u16(length) + bytes(ids))


def fast_sync_read(address: int, length: int, ids: list[int]) -> bytes:
    """Like SYNC_READ, but answered by one status packet (id FE) that the servos fill in turn:
    per servo ERROR, ID, DATA and a CRC, the last servo's CRC being the packet's own."""
    return packet(BROADCAST, FAST_SYNC_READ, _u16(address) + _u16(length) + bytes(ids))


def fast_status(rows: list[tuple[int, int, bytes]]) -> bytes:
    """The servos' side of FAST_SYNC_READ: rows of (id, error, data) as one status packet. The
    CRC between two servos' parts is that of the packet so far, as a servo sends it."""
    body = bytearray()
    for k, (sid, error, data) in enumerate(rows):
        if k:
            body += crc16(HEADER + bytes((BROADCAST,)) + bytes(body)).to_bytes(2, "little")
        body += bytes((error, sid)) + data
    return packet(BROADCAST, STATUS, bytes(body))


def fast_rows(params: bytes, length: int) -> dict[int, tuple[int, bytes]]:
    """A FAST_SYNC_READ status packet's params → {id: (error, data)}."""
    out, stride = {}, length + 4
    for k in range(0, len(params) - length - 1, stride):
        out[params[k + 1]] = (params[k], bytes(params[k + 2:k + 2 + length]))
    return out


def sync_write(address: int, length: int, data: dict[int, bytes]) -> bytes:
    return packet(BROADCAST, SYNC_WRITE, sync_write_rows(_u16(address) + _u16(length), length, data))


# --- receiving -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    servo_id: int
    instruction: int             # STATUS for a servo's answer
    params: bytes                # unstuffed; a status packet's start with the error byte

    @property
    def error(self) -> int:
        return self.params[0] if self.instruction == STATUS and self.params else 0

    @property
    def data(self) -> bytes:
        return self.params[1:] if self.instruction == STATUS else self.params


class Parser(HeaderParser):
    HEADER = HEADER

    def take(self):
        if len(self.buf) < 7:
            return None
        n = int.from_bytes(self.buf[5:7], "little")
        if n < 3 or n > MAX_LENGTH:
            self.stats.oversize += n > MAX_LENGTH
            self.stats.garbage_bytes += 4
            return 4, None
        total = 7 + n
        if len(self.buf) < total:
            return None
        whole = bytes(self.buf[:total])
        if crc16(whole[:-2]) != int.from_bytes(whole[-2:], "little"):
            self.stats.checksum_errors += 1
            return total, None
        body = unstuff(whole[7:-2], b"\x00\x00")
        return total, Packet(whole[4], body[0], body[1:])
