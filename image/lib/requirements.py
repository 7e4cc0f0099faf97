"""The image's Python packages: nnos's runtime dependencies and the extras in EXTRAS, pinned to
the versions installed in the environment that runs this (the one the test suite uses), as a
requirements file.

    python3 requirements.py > requirements.txt
"""
from __future__ import annotations

import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:                                   # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement


EXTRAS = ("vulkan",)            # nnos's extras the image carries: the vulkan backend's bindings


def closure(root: str = "nnos") -> dict[str, str]:
    pinned: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        dist = metadata.distribution(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            extras = EXTRAS if name == root else ("",)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
                continue
            key = req.name.lower().replace("_", "-")
            if key not in pinned:
                pinned[key] = metadata.version(req.name)
                todo.append(req.name)
    return pinned


if __name__ == "__main__":
    for name, version in sorted(closure().items()):
        sys.stdout.write(f"{name}=={version}\n")
