"""Servo register tables as data: one TOML file per servo model (hardware/registers/<vendor>/),
loaded into a ``Table`` that names each register's address, size, access, area and sign
encoding, and converts raw bytes ↔ values. Adding a servo model is adding a file."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

from ..errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int                    # bytes: 1, 2 or 4
    access: str                  # "r" or "rw"
    area: str                    # "eeprom" or "ram"
    sign_bit: int | None = None  # sign and magnitude (Feetech): the bit that holds the sign
    signed: bool = False         # two's complement (Dynamixel)

    def encode(self, value: int, endian: str) -> bytes:
        v = int(value)
        if self.signed:
            lo, hi = -(1 << (8 * self.size - 1)), 1 << (8 * self.size - 1)
            if not lo <= v < hi:
                raise ValueError(f"{self.name}: {value} does not fit {self.size} signed byte(s)")
            return v.to_bytes(self.size, endian, signed=True)
        if self.sign_bit is not None and v < 0:
            v = (-v) | (1 << self.sign_bit)
        if not 0 <= v < 1 << (8 * self.size):
            raise ValueError(f"{self.name}: {value} does not fit {self.size} byte(s)")
        return v.to_bytes(self.size, endian)

    def decode(self, raw: bytes, endian: str) -> int:
        if self.signed:
            return int.from_bytes(raw[:self.size], endian, signed=True)
        v = int.from_bytes(raw[:self.size], endian)
        if self.sign_bit is not None and v & (1 << self.sign_bit):
            v = -(v & ~(1 << self.sign_bit))
        return v


@dataclass(frozen=True)
class Table:
    vendor: str
    model: str
    model_number: int
    endian: str                  # "little" (Feetech STS, Dynamixel) or "big" (Feetech SCS)
    resolution: int              # position ticks per turn
    speed_register: str          # the register that caps the speed a servo tracks its goal at
    velocity_unit: float         # ticks/s per unit of the velocity registers
    registers: dict[str, Register]

    def __getitem__(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise ConfigError(f"{self.vendor} {self.model}", f"no register {name!r}; it has "
                              f"{', '.join(sorted(self.registers))}") from None

    @property
    def size(self) -> int:
        """Bytes of control table memory (the highest register's end)."""
        return max(r.address + r.size for r in self.registers.values())


def load(vendor: str, model: str) -> Table:
    path = os.path.join(HERE, vendor, f"{model.lower()}.toml")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        have = sorted(n[:-5] for n in os.listdir(os.path.join(HERE, vendor))) if os.path.isdir(os.path.join(HERE, vendor)) else []
        raise ConfigError(f"{vendor} {model}", f"no register table for {vendor} {model}; tables: "
                          f"{', '.join(have) or 'none'}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, str(e)) from e
    regs = {name: Register(name, int(r["address"]), int(r["size"]), r.get("access", "rw"), r.get("area", "ram"),
                           r.get("sign_bit"), bool(r.get("signed", False))) for name, r in d["registers"].items()}
    return Table(vendor, d["model"], int(d["model_number"]), d.get("endian", "little"), int(d.get("resolution", 4096)),
                 d["speed_register"], float(d.get("velocity_unit", 1.0)), regs)
