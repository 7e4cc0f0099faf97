"""The cpu backend's generator and toolchain: a plan → one C function (codegen.py, which calls
one emitter per op from emitters.py) → a cached shared object (toolchain.py). The Executable
that calls it is ``nnos.backends.ops_cpu``."""
from __future__ import annotations

from ... import flags
from .emit import Unsupported
from .toolchain import target


def width() -> int:
    vw = flags.CPU_VECTOR.get() or target()[1]
    if vw not in (4, 8, 16):
        raise Unsupported(f"NNOS_CPU_VECTOR={vw}: expected 4, 8 or 16")
    return vw


def source_and_program(plan):
    """The generated C of ``plan`` on this machine, and its program (weight table, workspace).
    (The generator is imported here, not with the package: a boot that loads the image's object
    by its record, record.py, never needs it.)"""
    from .codegen import generate
    return generate(plan, width())


def recorded(plan) -> bool:
    """Whether ``plan``'s object was built ahead of time with its program recorded (record.py):
    binding it then generates and compiles nothing."""
    from . import record
    from .toolchain import ToolchainError
    try:
        return record.find(plan, target()[0], width()) is not None
    except (ToolchainError, Unsupported):
        return False


def source(plan) -> str:
    """The generated C of ``plan`` on this machine."""
    return source_and_program(plan)[0]
