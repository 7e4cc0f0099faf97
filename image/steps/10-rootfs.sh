#!/usr/bin/env bash
# Debian $SUITE (bookworm by default; trixie for the boards whose GPUs need Mesa 25) root filesystem (minbase + packages.txt + the hardware hook's, no recommends) and the kernel, unpacked with dpkg -x
# so that no initramfs generator runs (nnos builds its own, step 60). Cached in $CACHE by the hash
# of the package lists: a rebuild with unchanged lists takes seconds.
set -euo pipefail
pkgs() { sed -e 's/#.*//' "$PACKAGES" | awk -v a="[$ARCH]" 'NF && ($2 == "" || $2 == a) {print $1}' | paste -sd, -; }
kernel_meta=$(awk -v a="$ARCH" '$1 == a {print $2}' "$IMAGE_DIR/kernel.txt")
grub_pkg=$(awk -v a="$ARCH" '$1 == a {print $3}' "$IMAGE_DIR/kernel.txt")
[ -n "$kernel_meta" ] || { echo "no kernel for $ARCH in kernel.txt" >&2; exit 1; }
key=$( (echo "$SUITE"; cat "$PACKAGES" "$IMAGE_DIR/kernel.txt" "$0") | sha256sum | cut -c1-16)
tarball=$CACHE/rootfs-$SUITE-$ARCH-$key.tar
mkdir -p "$CACHE"
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    # foreign packages' maintainer scripts run through qemu-user (binfmt)
    [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable >/dev/null 2>&1 || true
    arch-test "$ARCH" >/dev/null || { echo "cannot run $ARCH binaries here (qemu-user-static + binfmt-support)" >&2; exit 1; }
fi
if [ ! -s "$tarball" ]; then
    echo "mmdebstrap: $SUITE $ARCH minbase + $(pkgs)"
    mmdebstrap --variant=minbase --architectures="$ARCH" --include="$(pkgs)" \
        --aptopt='Apt::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook="chroot \"\$1\" sh -c 'cd /tmp && apt-get download -q \$(apt-cache depends $kernel_meta | awk \"/Depends: linux-image-[0-9]/{print \\\$2}\")'" \
        --customize-hook="chroot \"\$1\" sh -c 'cd /tmp && apt-get download -q $grub_pkg grub-common'" \
        --customize-hook='mkdir -p "$1"/usr/lib/nnos-build; for d in "$1"/tmp/grub-*.deb; do dpkg -x "$d" "$1"/usr/lib/nnos-build/grub; rm "$d"; done' \
        --customize-hook='for d in "$1"/tmp/linux-image-*.deb; do echo "kernel: $(basename "$d")"; x=$(mktemp -d); dpkg -x "$d" "$x"; for l in lib usr/lib; do [ ! -d "$x/$l" ] || cp -a "$x/$l"/. "$1"/usr/lib/; done; cp -a "$x"/boot/. "$1"/boot/; rm -rf "$x" "$d"; done' \
        "$SUITE" "$tarball.part.tar" "deb http://deb.debian.org/debian $SUITE main" \
        "deb http://deb.debian.org/debian $SUITE-updates main" \
        "deb http://deb.debian.org/debian-security $SUITE-security main"
    mv "$tarball.part.tar" "$tarball"
else
    echo "root filesystem from cache: $(basename "$tarball")"
fi
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
tar -C "$ROOTFS" -xf "$tarball"
[ -L "$ROOTFS/lib" ] || { echo "/lib is not the merged-/usr symlink" >&2; exit 1; }
echo "kernel $(ls "$ROOTFS"/lib/modules); $(du -sh "$ROOTFS" | cut -f1) unpacked"
