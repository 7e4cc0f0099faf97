"""python -m nnos.backends.cpu build PLAN [--record]: compile PLAN's generated C into the cache
(the loop runs this beside its ticks before binding a new model; the image build runs it for the
default model, with --record: the program beside the object, record.py, so a boot loads it
without generating the C again). Exit 0 when the object is in the cache, 1 with the reason
otherwise."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[1] != "build" or argv[3:] not in ([], ["--record"]):
        print(__doc__, file=sys.stderr)
        return 2
    from ...plan import load
    from . import record, source_and_program
    from .emit import Unsupported
    from .toolchain import ToolchainError, build, cache_dir
    try:
        plan = load(argv[2])
        src, prog = source_and_program(plan)
        _, facts = build(src)
    except (Unsupported, ToolchainError) as e:
        print(f"cpu backend: {e}", file=sys.stderr)
        return 1
    print(facts["object"])
    if argv[3:]:
        path = record.save(plan, prog, dict(facts, source_lines=src.count("\n")), cache_dir())
        print(path or "no record: the target is native (NNOS_CPU_TARGET names one to record)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
