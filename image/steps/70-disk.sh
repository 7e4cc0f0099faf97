#!/usr/bin/env bash
# The disk: root filesystem → squashfs (zstd); boot partition → FAT32 with a standalone GRUB EFI
# loader whose config picks the root slot; then the GPT image (lib/disk.py) and its summary.
set -euo pipefail
boot=$WORK/boot
# cryptomgr.notests: no self-test of every crypto algorithm the kernel registers at boot
# (0.2 s of an emulated boot); dm-verity and RAUC check their digests against signed ones anyway
cmdline="nnos.root=root-a $(awk -v a="$ARCH" '$1 == a {$1=$2=$3=""; print}' "$IMAGE_DIR/kernel.txt" | xargs) net.ifnames=0 quiet cryptomgr.notests panic=10"
echo "$cmdline rauc.slot=A" > "$boot/cmdline"        # qemu -kernel boots (the tests) boot slot A
rm -f "$WORK/root.sqfs"
# zstd 15: ~10 % smaller than 6 for ~20 s more build time; decompression is as fast.
# -no-fragments: each small file compressed on its own, not packed with others into shared
# 256K fragment blocks. The kernel keeps 3 fragment blocks decompressed
# (CONFIG_SQUASHFS_FRAGMENT_CACHE_SIZE): the ~300 modules imported on the way to the first tick,
# read in import order by two processes, had a 256K block decompressed for nearly every .pyc
# (an emulated arm64 boot's first tick came 0.3–0.9 s sooner without them, interleaved A/B
# boots; the root is 6 % larger)
mksquashfs "$ROOTFS" "$WORK/root.sqfs" -comp zstd -Xcompression-level 15 -b 256K -no-fragments -noappend -quiet \
    -no-progress >/dev/null
echo "squashfs: $(du -h "$WORK/root.sqfs" | cut -f1) from $(du -sh "$ROOTFS" | cut -f1)"

# boot partition
case $ARCH in
    amd64) efi_target=x86_64-efi; efi_name=BOOTX64.EFI ;;
    arm64) efi_target=arm64-efi; efi_name=BOOTAA64.EFI ;;
esac
cat > "$boot/grub-embedded.cfg" <<CFG
search --no-floppy --label NNOSBOOT --set=root
configfile /nnos/grub.cfg
CFG
cat > "$boot/grub.cfg" <<CFG
# nnos boot config: the root slot comes from GRUB's environment (/nnos/grubenv), which RAUC's grub
# backend edits: ORDER (the slot to try first), per slot OK (1: bootable) and TRY (boots since it
# was last marked good; nnos marks a healthy boot good). A slot is skipped after NNOS_TRIES boots
# (default 3) that were never marked good, and the next in ORDER boots. NNOS_EXTRA: extra kernel
# arguments for this device (image/bootenv.py writes them offline).
set timeout=0
set ORDER="A B"
set A_OK=1
set A_TRY=0
set B_OK=0
set B_TRY=0
set NNOS_TRIES=3
load_env --file /nnos/grubenv
function next_try {
    if [ "\$1" = 0 ]; then n=1; elif [ "\$1" = 1 ]; then n=2; elif [ "\$1" = 2 ]; then n=3; elif [ "\$1" = 3 ]; then n=4
    elif [ "\$1" = 4 ]; then n=5; elif [ "\$1" = 5 ]; then n=6; elif [ "\$1" = 6 ]; then n=7; else n=9; fi
}
set slot=
for s in \$ORDER; do
    if [ -z "\$slot" -a "\$s" = A -a "\$A_OK" = 1 ]; then
        if [ "\$A_TRY" -lt "\$NNOS_TRIES" ]; then slot=A; fi
    fi
    if [ -z "\$slot" -a "\$s" = B -a "\$B_OK" = 1 ]; then
        if [ "\$B_TRY" -lt "\$NNOS_TRIES" ]; then slot=B; fi
    fi
done
if [ -z "\$slot" ]; then
    echo "nnos: no slot has boot attempts left: booting the first bootable one"
    for s in \$ORDER; do
        if [ -z "\$slot" -a "\$s" = A -a "\$A_OK" = 1 ]; then slot=A; fi
        if [ -z "\$slot" -a "\$s" = B -a "\$B_OK" = 1 ]; then slot=B; fi
    done
    if [ -z "\$slot" ]; then slot=A; fi
fi
if [ "\$slot" = A ]; then next_try "\$A_TRY"; A_TRY=\$n; default=0; else next_try "\$B_TRY"; B_TRY=\$n; default=1; fi
save_env --file /nnos/grubenv A_TRY B_TRY
echo "nnos: booting slot \$slot (try A \$A_TRY, B \$B_TRY of \$NNOS_TRIES)"
menuentry "nnos (slot a)" {
    linux /nnos/a/vmlinuz $cmdline rauc.slot=A \$NNOS_EXTRA
    initrd /nnos/a/initrd.img
}
menuentry "nnos (slot b)" {
    linux /nnos/b/vmlinuz ${cmdline/root-a/root-b} rauc.slot=B \$NNOS_EXTRA
    initrd /nnos/b/initrd.img
}
CFG
# GRUB's environment block: 1024 bytes, slot A good and first, B empty until an update writes it
"$HOST_PY" - "$boot/grubenv" <<'PY'
import sys
body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in
       (("ORDER", "A B"), ("A_OK", 1), ("A_TRY", 0), ("B_OK", 0), ("B_TRY", 0), ("NNOS_TRIES", 3)))
open(sys.argv[1], "w").write(body + "#" * (1024 - len(body)))
PY
grub-mkstandalone -d "$WORK/grub/usr/lib/grub/$efi_target" -O "$efi_target" -o "$boot/$efi_name" \
    --modules="part_gpt fat search search_label configfile linux normal echo gzio loadenv test" \
    --locales= --fonts= --themes= "boot/grub/grub.cfg=$boot/grub-embedded.cfg"
esp=$WORK/esp.img
rm -f "$esp"
mkfs.vfat -C -F 32 -n NNOSBOOT "$esp" $((40 * 1024)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/nnos ::/nnos/a ::/nnos/b ::/nnos/config
# config a builder puts here before a boot is imported into the data partition (nnos/boot/bootconfig.py)
mcopy -i "$esp" "$IMAGE_DIR/boot-config.txt" ::/nnos/config/README.txt
mcopy -i "$esp" "$boot/$efi_name" ::/EFI/BOOT/
mcopy -i "$esp" "$boot/grub.cfg" "$boot/grubenv" ::/nnos/
mcopy -i "$esp" "$boot/vmlinuz" "$boot/initrd.img" "$boot/cmdline" ::/nnos/a/
# hook point: files a board's firmware reads from the boot partition's root (Raspberry Pi:
# config.txt, cmdline.txt, device trees), put in $WORK/boot-extra by a hardware hook's step
if [ -d "$WORK/boot-extra" ] && [ -n "$(ls -A "$WORK/boot-extra")" ]; then
    mcopy -s -i "$esp" "$WORK/boot-extra"/* ::/
fi

# the disk, and the kernel + initramfs beside it for qemu -kernel boots
img=$OUT/nnos-$ARCH.img
python3 "$IMAGE_DIR/lib/disk.py" "$esp" "$WORK/root.sqfs" "$img" "$ARCH" > "$WORK/partitions.json"
cp "$boot/vmlinuz" "$OUT/nnos-$ARCH.vmlinuz"
cp "$boot/initrd.img" "$OUT/nnos-$ARCH.initrd.img"
cp "$boot/cmdline" "$OUT/nnos-$ARCH.cmdline"
python3 "$IMAGE_DIR/lib/contents.py" "$WORK" "$ROOTFS" "$BOARD" "${MODEL:-board}" > "$OUT/nnos-$ARCH.contents.json"
sfdisk --dump "$img" | sed -n '/^\//p' | sed "s|$OUT/||"
