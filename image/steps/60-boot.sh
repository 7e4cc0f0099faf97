#!/usr/bin/env bash
# The boot files: the kernel, and nnos's own initramfs (busybox from the image's busybox-static,
# initramfs/init, the modules of initramfs-modules.txt with their dependencies). The kernel and
# /boot leave the root filesystem: they live on the boot partition.
set -euo pipefail
boot=$WORK/boot
rm -rf "$boot" "$WORK/initramfs" "$WORK/boot-extra"
mkdir -p "$boot" "$WORK/initramfs"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$ROOTFS"/boot/vmlinuz-* "$boot/vmlinuz"
ir=$WORK/initramfs
cp "$ROOTFS/bin/busybox" "$ir/bin/busybox"
cp "$IMAGE_DIR/initramfs/init" "$ir/init"
python3 "$IMAGE_DIR/lib/modules.py" initramfs "$ROOTFS" "$INITRAMFS_MODULES" "$ir"
# lz4 (legacy frames, as the kernel reads them) where the kernel unpacks it: larger than gzip,
# unpacked several times faster, on the way to init (benchmarks/RESULTS.md, issue 21); else gzip
pack=(gzip -9n)
if grep -qx 'CONFIG_RD_LZ4=y' "$ROOTFS"/boot/config-*; then pack=(lz4 -l -9 -q -c); fi
(cd "$ir" && find . -print0 | sort -z | cpio --null -o -H newc --quiet --reproducible) | "${pack[@]}" > "$boot/initrd.img"
cp "$ROOTFS"/boot/config-* "$boot/config"
rm -rf "$ROOTFS"/boot/*
# a copy inside the root filesystem too: an update bundle is the root filesystem alone, and RAUC's
# post-install handler puts the new slot's kernel and initramfs on the boot partition from there
install -d "$ROOTFS/usr/lib/nnos/boot"
cp "$boot/vmlinuz" "$boot/initrd.img" "$ROOTFS/usr/lib/nnos/boot/"
echo "kernel $(du -h "$boot/vmlinuz" | cut -f1), initramfs $(du -h "$boot/initrd.img" | cut -f1) (${pack[0]})"
# the GRUB EFI modules (unpacked in step 10) are build input, not part of the root filesystem
rm -rf "$WORK/grub"
mv "$ROOTFS/usr/lib/nnos-build/grub" "$WORK/grub"
rm -rf "$ROOTFS/usr/lib/nnos-build"
