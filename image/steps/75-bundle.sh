#!/usr/bin/env bash
# The update bundle: this root filesystem (the same squashfs as root slot A) as a RAUC bundle in
# the verity format, signed with the key in $SIGNING_DIR, for this architecture and board:
# $OUT/nnos-<version>-<arch>.raucb. image/bundle.py makes one from any root filesystem.
set -euo pipefail
version=$(cat "$WORK/version")
"$HOST_PY" "$IMAGE_DIR/bundle.py" --rootfs-image "$WORK/root.sqfs" --compatible "$(cat "$WORK/compatible")" \
    --version "$version" --signing-key "$SIGNING_DIR" --out "$OUT/nnos-${version%%+*}-$ARCH.raucb"
