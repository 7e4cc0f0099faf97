#!/usr/bin/env bash
# The legacy VM (services/legacy-vm): its initramfs made from this image's own kernel modules
# and busybox, in /usr/lib/nnos/legacy-vm where nnos-init finds it. Its kernel is the device's
# own, read from the boot partition (mounted read-only at /boot): no second kernel is carried.
# qemu trimmed to what booting a guest from -kernel needs: the TCG accelerator module, no
# display/audio/USB/spice modules, no boot ROMs (its NIC has none).
set -euo pipefail
dest=$ROOTFS/usr/lib/nnos/legacy-vm
"$HOST_PY" "$REPO/services/legacy-vm/build.py" --out "$dest" --kernel-root "$ROOTFS" --busybox "$ROOTFS/usr/bin/busybox" \
    --no-kernel
for m in "$ROOTFS"/usr/lib/*-linux-gnu/qemu/*.so; do
    case $(basename "$m") in accel-*) ;; *) rm -f "$m" ;; esac
done
# what only those modules linked (qemu-system-common depends on them for its UI, audio, spice,
# smartcard and USB redirection modules); step 50's ELF check proves nothing else needed them
# (libdrm2 stays: Mesa's Vulkan drivers need it)
ui_only="libspice-server1 libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 iso-codes liborc-0.4-0 libopus0
         libasound2 libasound2-data libepoxy0 libgbm1 libwayland-server0 libbrlapi0.8
         libcacard0 libnss3 libnspr4 libpcsclite1 libsndio7.0 libusbredirparser1 libunwind8 libdw1"
installed=$(for p in $ui_only; do chroot "$ROOTFS" dpkg-query -W -f='${Package}\n' "$p" 2>/dev/null || true; done)
[ -z "$installed" ] || chroot "$ROOTFS" dpkg --purge --force-depends $installed >/dev/null
keep="linuxboot_dma.bin linuxboot.bin kvmvapic.bin pvh.bin"
for f in "$ROOTFS"/usr/share/qemu/*; do
    case " $keep " in *" $(basename "$f") "*) ;; *) rm -rf "$f" ;; esac
done
# the boot ROMs, and qemu's programs other than the one system emulator the VM runs
rm -rf "$ROOTFS"/usr/lib/ipxe "$ROOTFS"/usr/share/qemu-efi-aarch64 "$ROOTFS"/usr/bin/qemu-system-arm \
       "$ROOTFS"/usr/bin/qemu-system-*-microvm "$ROOTFS"/usr/bin/qemu-storage-daemon "$ROOTFS"/usr/bin/qemu-pr-helper
echo "legacy VM: $(du -sh "$dest" | cut -f1) guest; qemu $(du -ch "$ROOTFS"/usr/bin/qemu-system-* | tail -1 | cut -f1)"
