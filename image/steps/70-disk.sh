#!/usr/bin/env bash
# The disk: root filesystem → squashfs (zstd); boot partition → FAT32 with a standalone GRUB EFI
# loader whose config picks the root slot; then the GPT image (lib/disk.py) and its summary.
set -euo pipefail
boot=$WORK/boot
cmdline="nnos.root=root-a $(awk -v a="$ARCH" '$1 == a {$1=$2=$3=""; print}' "$IMAGE_DIR/kernel.txt" | xargs) net.ifnames=0 quiet panic=10"
echo "$cmdline" > "$boot/cmdline"
rm -f "$WORK/root.sqfs"
# zstd 15: ~10 % smaller than 6 for ~20 s more build time; decompression is as fast
mksquashfs "$ROOTFS" "$WORK/root.sqfs" -comp zstd -Xcompression-level 15 -b 256K -noappend -quiet -no-progress >/dev/null
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
# nnos boot config: the root slot to boot (an update rewrites this file to switch slots)
set timeout=0
set default=0
menuentry "nnos (slot a)" {
    linux /nnos/a/vmlinuz $cmdline
    initrd /nnos/a/initrd.img
}
menuentry "nnos (slot b)" {
    linux /nnos/b/vmlinuz ${cmdline/root-a/root-b}
    initrd /nnos/b/initrd.img
}
CFG
grub-mkstandalone -d "$WORK/grub/usr/lib/grub/$efi_target" -O "$efi_target" -o "$boot/$efi_name" \
    --modules="part_gpt fat search search_label configfile linux normal echo gzio" \
    --locales= --fonts= --themes= "boot/grub/grub.cfg=$boot/grub-embedded.cfg"
esp=$WORK/esp.img
rm -f "$esp"
mkfs.vfat -C -F 32 -n NNOSBOOT "$esp" $((40 * 1024)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/nnos ::/nnos/a ::/nnos/b
mcopy -i "$esp" "$boot/$efi_name" ::/EFI/BOOT/
mcopy -i "$esp" "$boot/grub.cfg" ::/nnos/
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
