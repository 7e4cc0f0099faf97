#!/usr/bin/env bash
# The cpu backend on the device. The C compiler it needs, trimmed to what compiling a plan uses
# (cc1, as, ld, libgcc, the C library's headers and startup files: no LTO, no sanitizers, no
# gold, no profilers); then the default model's object built here, for the image's CPU target,
# by the image's own Python and gcc (chroot), into /usr/lib/nnos/cpu — read-only on the device,
# where the backend finds it first (NNOS_CPU_PREBUILT) — and checked against the reference.
# On first boot the loop loads it (its key checked in its bytes before it is loaded) and the
# backend verifies it against numpy before the first tick.
set -euo pipefail
case $ARCH in
    amd64) target=${CPU_TARGET:-x86-64-v2}; triple=x86_64-linux-gnu; bu=binutils-x86-64-linux-gnu ;;  # numpy needs v2 too
    arm64) target=${CPU_TARGET:-armv8-a}; triple=aarch64-linux-gnu; bu=binutils-aarch64-linux-gnu ;;
esac
v=$(ls "$ROOTFS/usr/lib/gcc/$triple" | sort -n | tail -1)       # 12 on bookworm, 14 on trixie
gccdir=$ROOTFS/usr/lib/gcc/$triple/$v
# programs: the driver, the assembler and the linker (and the names they are called by)
for p in gcc-$v cpp-$v cpp-$v-$triple gcc-$v-$triple binutils "$bu" gcc cpp; do
    for f in $(cat "$ROOTFS"/var/lib/dpkg/info/$p{,:$ARCH}.list 2>/dev/null | grep '^/usr/bin/'); do
        case $(basename "$f") in
            gcc|gcc-$v|cc|c99-gcc|$triple-gcc|$triple-gcc-$v|as|$triple-as|ld|ld.bfd|$triple-ld|$triple-ld.bfd) ;;
            *) rm -f "$ROOTFS$f" ;;
        esac
    done
done
rm -f "$gccdir"/lto1 "$gccdir"/lto-wrapper "$gccdir"/*.a.gz
rm -rf "$gccdir"/plugin "$gccdir"/include/sanitizer "$ROOTFS"/usr/lib/$triple/ldscripts
# gcc's own headers: the freestanding ones (stddef.h, stdint.h, float.h, ...); not the ISA intrinsics
rm -f "$gccdir"/include/*intrin*.h "$gccdir"/include/{mm3dnow,mm_malloc,cpuid,cet,gcov,omp,openacc,acc_prof}.h \
      "$gccdir"/include/backtrace*.h "$gccdir"/include/arm_{neon,sve,bf16,fp16,mve,acle}.h
rm -f "$gccdir"/lib{asan,hwasan,lsan,tsan,ubsan,gomp,itm,quadmath,atomic,gcov,backtrace}*.{a,so} "$gccdir"/*san_preinit.o
rm -f "$ROOTFS"/usr/lib/$triple/lib{asan,hwasan,lsan,tsan,ubsan,gomp,itm,quadmath,gprofng}*.so*
rm -rf "$ROOTFS"/usr/lib/$triple/gprofng "$ROOTFS"/usr/lib/$triple/bfd-plugins
# the kernel's API headers: the C library's own reach the top-level ones, never the subsystems'
find "$ROOTFS/usr/include/linux" -mindepth 1 -type d -prune -exec rm -rf {} +
rm -rf "$ROOTFS"/usr/include/{drm,rdma,sound,mtd,misc,xen,video,scsi,rpcsvc,tirpc,netpacket,protocols}
# static C libraries: plans are shared objects (libpthread.a: glibc's empty stub, what -pthread links
# to since the threads moved into libc; a plan that splits its steps over a team uses them)
for a in "$ROOTFS"/usr/lib/$triple/*.a; do
    case $(basename "$a") in libc_nonshared.a|libm.a|libmvec.a|libpthread.a) ;; *) rm -f "$a" ;; esac
done
echo "$target" > "$ROOTFS/etc/nnos/cpu-target"
mount -t proc proc "$ROOTFS/proc"            # the target is checked against /proc/cpuinfo
trap 'umount "$ROOTFS/proc"' EXIT
prebuilt=$ROOTFS/usr/lib/nnos/cpu
rm -rf "$prebuilt"
install -d "$prebuilt"
chroot "$ROOTFS" env -i PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 OPENBLAS_NUM_THREADS=1 HOME=/root \
    NNOS_CPU_TARGET="$target" NNOS_CPU_CACHE=/usr/lib/nnos/cpu \
    /usr/bin/python3 -m nnos.backends.cpu build /usr/share/nnos/default.plan --record
# the object against the reference of step 40, on the cpu backend, from the prebuilt directory
cp "$WORK/plancheck.npz" "$ROOTFS/tmp/plancheck.npz"
cp "$IMAGE_DIR/lib/plancheck.py" "$ROOTFS/tmp/plancheck.py"
chroot "$ROOTFS" env -i PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 OPENBLAS_NUM_THREADS=1 HOME=/root \
    NNOS_CPU_TARGET="$target" NNOS_CPU_PREBUILT=/usr/lib/nnos/cpu NNOS_CPU_CACHE=/tmp/nnos-cpu-cache \
    /usr/bin/python3 /tmp/plancheck.py check /usr/share/nnos/default.plan /tmp/plancheck.npz cpu
rm -rf "$ROOTFS/tmp/plancheck.npz" "$ROOTFS/tmp/plancheck.py" "$ROOTFS/tmp/nnos-cpu-cache"
# what the compiler adds: its packages' files still present, unpacked and as squashfs (zstd 15)
"$HOST_PY" "$IMAGE_DIR/lib/pkgsize.py" "$ROOTFS" "$WORK/compiler.json" \
    gcc gcc-$v cpp cpp-$v binutils binutils-common "$bu" libbinutils libctf0 \
    libctf-nobfd0 libgprofng0 libjansson4 libgcc-$v-dev libcc1-0 libisl23 libmpc3 libmpfr6 libc6-dev libc-dev-bin \
    linux-libc-dev libcrypt-dev libnsl-dev rpcsvc-proto libtirpc-dev libasan8 liblsan0 libtsan2 libubsan1 \
    libhwasan0 libitm1 libatomic1 libquadmath0 libgomp1
