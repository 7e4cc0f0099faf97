"""Drop a wheel's extension modules an appliance never imports, and the bundled libraries
(auditwheel's NAME.libs/) only they needed — computed from the ELF headers of what stays.

    python3 image/lib/wheeltrim.py SITE PACKAGE LIBS_DIR MODULE_PREFIX...

e.g. Pillow: nnos decodes and encodes JPEG (PIL._imaging, with libjpeg); AVIF, WebP, fonts,
colour management and Tk (_avif, _webp, _imagingft, _imagingcms, _imagingtk) and their
libraries (libavif, libharfbuzz, libfreetype, liblcms2, …) are ~9 MB the image does not need.
elfcheck.py runs after this step: a library still needed but removed would fail the build.
"""
from __future__ import annotations

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from elfcheck import dynamic  # noqa: E402


def trim(site: str, package: str, libs_dir: str, drop: list[str]) -> tuple[list[str], int]:
    pkg, libs = os.path.join(site, package), os.path.join(site, libs_dir)
    removed, freed = [], 0
    for prefix in drop:
        for so in glob.glob(os.path.join(pkg, f"{prefix}.*.so")):
            freed += os.path.getsize(so)
            os.unlink(so)
            removed.append(os.path.basename(so))
    if not os.path.isdir(libs):
        return removed, freed
    bundled = set(os.listdir(libs))
    keep, todo = set(), [so for so in glob.glob(os.path.join(site, "**", "*.so"), recursive=True)
                         if not so.startswith(libs + os.sep)]
    while todo:                                    # what the remaining modules need, transitively
        got = dynamic(todo.pop())
        for lib in (got[0] if got else []):
            if lib in bundled and lib not in keep:
                keep.add(lib)
                todo.append(os.path.join(libs, lib))
    for lib in sorted(bundled - keep):
        freed += os.path.getsize(os.path.join(libs, lib))
        os.unlink(os.path.join(libs, lib))
        removed.append(lib)
    return removed, freed


if __name__ == "__main__":
    site, package, libs_dir, *drop = sys.argv[1:]
    removed, freed = trim(site, package, libs_dir, drop)
    print(f"{package}: removed {len(removed)} files, {freed / 1e6:.1f} MB ({', '.join(removed)})")
