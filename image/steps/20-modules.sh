#!/usr/bin/env bash
# Kernel modules: keep modules.txt's subtrees and what they depend on, then rebuild the index.
set -euo pipefail
kver=$(ls "$ROOTFS/lib/modules")
depmod -b "$ROOTFS" "$kver"      # dpkg -x ran no scripts: no index yet
python3 "$IMAGE_DIR/lib/modules.py" prune "$ROOTFS" "$MODULES"
depmod -b "$ROOTFS" "$kver"
du -sh "$ROOTFS/lib/modules/$kver" | awk '{print "kernel modules now " $1}'
