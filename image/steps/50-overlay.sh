#!/usr/bin/env bash
# nnos's files on top of Debian (overlay/: PID 1, DHCP script, hostname, board modules), then
# trim what a read-only appliance never uses, and byte-compile Python (the root is read-only,
# so .pyc files cannot be written at run time).
set -euo pipefail
for overlay in $OVERLAYS; do       # image/overlay, then the hardware hook's
    tar -C "$overlay" --owner=0 --group=0 -cf - . | tar -C "$ROOTFS" --keep-directory-symlink -xf -
done
ln -sfn /run/resolv.conf "$ROOTFS/etc/resolv.conf"
install -d -m 0755 "$ROOTFS/data"
: > "$ROOTFS/etc/machine-id"
# trim: package caches and indexes, docs, the dpkg/apt runtime state an appliance never uses
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old \
       "$ROOTFS"/var/log/* "$ROOTFS"/usr/share/info "$ROOTFS"/usr/share/lintian "$ROOTFS"/usr/share/bash-completion
# Perl beyond perl-base (it comes with usrmerge; nothing on the device runs it), glibc's iconv
# modules (Python has its own codecs), the test data inside wheels
rm -rf "$ROOTFS"/usr/share/perl "$ROOTFS"/usr/lib/*-linux-gnu/perl "$ROOTFS"/usr/lib/*-linux-gnu/gconv
# udev's hardware database (vendor/model names for display; devices are bound by the IDs the
# usb_id builtin reads from the device itself)
rm -rf "$ROOTFS"/usr/lib/udev/hwdb.bin "$ROOTFS"/usr/lib/udev/hwdb.d
find "$ROOTFS/usr/local/lib" -name tests -type d -path '*/numpy/*' -prune -exec rm -rf {} +
rm -rf "$ROOTFS"/usr/local/lib/python3*/dist-packages/onnx/backend/test     # onnx's own conformance suite
find "$ROOTFS/usr/local/lib" -name '*.pyi' -delete
site=$(ls -d "$ROOTFS"/usr/local/lib/python3*/dist-packages)
# debug symbols in Python extension modules (ml_dtypes' alone: 25 MB → 1.5 MB). Not the libraries
# auditwheel bundles in *.libs/: patchelf laid those out, and strip breaks them.
case $ARCH in amd64) triplet=x86_64-linux-gnu ;; arm64) triplet=aarch64-linux-gnu ;; esac
strip_tool=$(command -v "$triplet-strip" || { [ "$(dpkg --print-architecture)" = "$ARCH" ] && command -v strip; } || true)
if [ -n "$strip_tool" ]; then
    find "$site" \( -name '*.cpython-*.so' -o -name '*.abi3.so' \) -type f -not -path '*.libs/*' \
        -exec "$strip_tool" --strip-unneeded {} +       # (abi3: cryptography's Rust module, 14 → 11 MB)
else
    echo "no strip for $ARCH here (binutils-$triplet): extension modules keep their debug symbols"
fi
# Pillow: nnos uses its JPEG codec (camera MJPG, recorded frames); not AVIF, WebP, fonts, colour
# management or Tk, nor the bundled libraries only those need
"$HOST_PY" "$IMAGE_DIR/lib/wheeltrim.py" "$site" PIL pillow.libs _avif _webp _imagingft _imagingcms _imagingtk
# linuxpy: nnos uses its V4L2 part (video/ over ctypes, ioctl, io, device); not its USB ID
# database, MIDI, input, GPIO, framebuffer or code generator (tests/image/test_vision.py imports it)
rm -rf "$site"/linuxpy/usb "$site"/linuxpy/midi "$site"/linuxpy/input "$site"/linuxpy/gpio "$site"/linuxpy/fb \
       "$site"/linuxpy/codegen
"$HOST_PY" -m compileall -q -j 0 -s "$ROOTFS" -p / "$site" >/dev/null
# the methods dataclasses generate on PID 1's way to the first tick, compiled once by the image's
# own Python for its default board (nnos/gencache.py; ≈ 0.3 s of an emulated boot)
chroot "$ROOTFS" env -i PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 OPENBLAS_NUM_THREADS=1 HOME=/root \
    /usr/bin/python3 -m nnos.appliance record /usr/lib/nnos/gencache /etc/nnos/board.toml
"$HOST_PY" "$IMAGE_DIR/lib/elfcheck.py" "$ROOTFS"
echo "root filesystem: $(du -sh "$ROOTFS" | cut -f1)"
