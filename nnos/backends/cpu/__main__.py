"""python -m nnos.backends.cpu build PLAN: compile PLAN's generated C into the cache (the loop
runs this beside its ticks before binding a new model; the image build runs it for the default
model). Exit 0 when the object is in the cache, 1 with the reason otherwise."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "build":
        print(__doc__, file=sys.stderr)
        return 2
    from ...plan import load
    from . import source
    from .emit import Unsupported
    from .toolchain import ToolchainError, build
    try:
        _, facts = build(source(load(argv[2])))
    except (Unsupported, ToolchainError) as e:
        print(f"cpu backend: {e}", file=sys.stderr)
        return 1
    print(facts["object"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
