#!/usr/bin/env bash
# Updates in the field (RAUC, image/BOARDS.md "Updates"): the system config (the two root slots,
# the boot partition's GRUB environment, the keyring, the compatible string of this architecture
# and board), grub-editenv for RAUC's grub backend, the system bus's machine id (made at boot).
set -euo pipefail
board=$("$HOST_PY" -c 'import sys; from nnos_hardware.board import load_board; print(load_board(sys.argv[1]).name)' "$BOARD")
compatible="nnos-$ARCH-$board"
install -d "$ROOTFS/etc/rauc"
cp "$SIGNING_DIR/ca.pem" "$ROOTFS/etc/rauc/keyring.pem"
cat > "$ROOTFS/etc/rauc/system.conf" <<CONF
# nnos: two root slots (squashfs, written whole) chosen by GRUB from its environment on the boot
# partition (mounted at /boot while an update runs); bundles must be verity bundles signed by a
# certificate the keyring trusts, for this architecture and board
[system]
compatible=$compatible
bootloader=grub
grubenv=/boot/nnos/grubenv
bundle-formats=-plain
data-directory=/data/rauc
mountprefix=/run/rauc

[keyring]
path=/etc/rauc/keyring.pem

[handlers]
post-install=/usr/lib/nnos/rauc-post-install

[slot.rootfs.0]
device=/dev/disk/by-partlabel/root-a
type=raw
bootname=A

[slot.rootfs.1]
device=/dev/disk/by-partlabel/root-b
type=raw
bootname=B
CONF
echo "$compatible" > "$WORK/compatible"
# what this root filesystem is: /v1/status shows it; an update bundle made from it carries the version
version="$("$HOST_PY" -c 'import nnos; print(nnos.__version__)')+$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S)"
echo "$version" > "$WORK/version"
printf 'VERSION=%s\nCOMPATIBLE=%s\nSUITE=%s\nARCH=%s\n' "$version" "$compatible" "$SUITE" "$ARCH" > "$ROOTFS/etc/nnos/release"
grub=$ROOTFS/usr/lib/nnos-build/grub
cp "$grub/usr/bin/grub-editenv" "$ROOTFS/usr/bin/grub-editenv"
rm -rf "$grub/usr/bin" "$grub/usr/sbin" "$grub/etc"     # grub-common's other tools: the build uses the host's
# RAUC's service is one of the supervisor's processes (prepared first: modules, /boot); the bus
# must not start a second, unprepared one on demand
rm -f "$ROOTFS/usr/share/dbus-1/system-services/de.pengutronix.rauc.service"
install -d "$ROOTFS/var/lib/dbus"
ln -sfn /run/nnos-machine-id "$ROOTFS/var/lib/dbus/machine-id"
echo "updates: rauc $(chroot "$ROOTFS" rauc --version | cut -d' ' -f2), compatible $compatible, keyring $(openssl x509 -noout -subject -in "$SIGNING_DIR/ca.pem" | sed 's/^subject=//')"
