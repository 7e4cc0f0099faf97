#!/usr/bin/env bash
# nnos build entry point. On a fresh Debian 12 machine:
#   ./build.sh run     nnos up on the simulated cart-pole: the trained policy balances it over a
#                      serial link, with a live status line (Ctrl-C stops; --duration S to time it)
#   ./build.sh test    install everything into .venv and run the whole suite
#   ./build.sh quick   the suite without slow cases and without booting the image (NNOS_QUICK=1)
#   ./build.sh lint    ruff over the whole tree (CI runs it before the suite)
#   ./build.sh bench   the benchmarks (core and cpu backend vs onnxruntime and OpenVINO; serial round
#                      trip; loop vs cyclictest)
#   ./build.sh image [--arch amd64|arm64] [--board FILE] [--model FILE]
#                      build the bootable disk image out/nnos-ARCH.img (root; mmdebstrap)
#   ./build.sh boot [--arch arm64]
#                      boot the image in qemu and run the boot tests (arm64: boot to the first tick)
#   ./build.sh vm      boot the image in qemu with its console here (control plane on 127.0.0.1:8080)
#   ./build.sh legacy-vm   build the legacy VM's guest (cloud kernel + busybox agents) in out/legacy-vm
#   ./build.sh fleet N [--images K] [--mdns]
#                      N simulated devices (the last K: the built image in qemu), each in its own
#                      network namespace, and Prometheus scraping them; prints an Ansible
#                      inventory (root; Ctrl-C stops it all)
#   ./build.sh flash /dev/sdX [--config DIR] [--force]
#                      write the image to a card, checked against mounted/system/oversized disks;
#                      DIR's board.toml, network.toml, nnos.env, hostname, token: its first boot's config
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
OUT=$ROOT/out

log() { printf '[build] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; exit 1; fi
}

DEBIAN_PACKAGES=(
    umockdev gir1.2-umockdev-1.0 python3-gi   # hotplug tests: udev device records in a testbed
    rt-tests stress-ng                         # loop benchmark: cyclictest as the floor, load
    chromium                                   # dashboard test: a real headless browser
    mesa-vulkan-drivers libvulkan1 glslang-tools vulkan-validationlayers   # vulkan backend on lavapipe
    prometheus prometheus-alertmanager ansible-core    # the fleet: services/prometheus and services/ansible
    avahi-daemon faketime                      # the fleet: mDNS announcements; a device whose clock is off
)

debian_packages() {
    # python3-venv is not part of a minimal Debian python3
    local missing=() p
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    for p in "${DEBIAN_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

# building and booting the image (no recommends: qemu's would pull in a desktop)
IMAGE_PACKAGES=(mmdebstrap squashfs-tools dosfstools mtools fdisk e2fsprogs cpio lz4 kmod grub-common
                qemu-system-x86 qemu-utils ovmf arch-test busybox-static
                iproute2 nftables          # the legacy VM's network namespace and its rules
                rauc casync openssl)       # update bundles: made, signed and checked (image/bundle.py)
ARM64_PACKAGES=(qemu-user-static binfmt-support qemu-system-arm qemu-efi-aarch64 binutils-aarch64-linux-gnu)

image_packages() {
    local missing=() p
    for p in "${IMAGE_PACKAGES[@]}" "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing image build tools: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

wants_arm64() { local a; for a in "$@"; do [ "$a" = arm64 ] || [ "$a" = --arch=arm64 ] && return 0; done; return 1; }

setup() {
    debian_packages
    image_packages
    if [ ! -x "$PY" ]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp=$VENV/.nnos-installed want
    want=$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing nnos and its dependencies into $VENV"
        "$PY" -m pip install -q --upgrade pip
        "$PY" -m pip install -q -e ".[test]"
        echo "$want" > "$stamp"
    fi
}

demo() {
    # the main job: the supervisor on the simulated cart-pole board (first start provisions the
    # board's trained policy into the model store in $ROOT/nnos-data)
    exec "$VENV/bin/nnos" up --board "$ROOT/hardware/boards/cartpole-sim.toml" --data "$ROOT/nnos-data" "$@"
}

# the tests that take the whole machine, run one at a time after the rest: qemu guests, a fleet of eight devices
QEMU_TESTS=(tests/image tests/legacy/test_guest.py tests/legacy/test_guest_network.py tests/services/test_fleet.py
            tests/services/test_fleet_versions.py)

cmd=${1:-help}
shift || true
case "$cmd" in
    run)   setup; demo "$@" ;;
    # the image tests boot qemu (TCG takes both cores): they run after the rest, alone, so that
    # the timing-sensitive tests never share the machine with a guest
    test)  setup
           if [ $# -gt 0 ]; then exec "$PY" -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider "$@"; fi
           rc=0
           # each phase names its slowest tests (where the suite's time goes, on CI's machine too)
           "$PY" -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider --durations=15 "${QEMU_TESTS[@]/#/--ignore=}" || rc=$?
           "$PY" -m pytest -q -p no:cacheprovider --durations=0 "${QEMU_TESTS[@]}" || rc=$?
           exit $rc ;;
    quick) setup; NNOS_QUICK=1 exec "$PY" -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider \
               "${QEMU_TESTS[@]/#/--ignore=}" "$@" ;;
    bench) setup; "$PY" -m pip install -q -e ".[test,bench]"      # OpenVINO: the cpu benchmark's second peer
           "$PY" benchmarks/core_bench.py "$@"; "$PY" benchmarks/cpu_bench.py; "$PY" benchmarks/serial_bench.py
           "$PY" benchmarks/loop_bench.py
           exec "$PY" benchmarks/api_isolation_bench.py ;;
    image) setup; if wants_arm64 "$@"; then image_packages "${ARM64_PACKAGES[@]}"; fi
           as_root "$PY" image/build.py "$@" ;;
    boot)  setup
           if wants_arm64 "$@"; then image_packages "${ARM64_PACKAGES[@]}"; exec "$PY" benchmarks/boot_bench.py --arch arm64 --runs 1
           else exec "$PY" -m pytest -q -p no:cacheprovider tests/image "$@"; fi ;;
    vm)    setup; exec "$PY" image/vm.py "$@" ;;
    legacy-vm) setup; exec "$PY" services/legacy-vm/build.py "$@" ;;
    fleet) setup; as_root "$PY" services/fleet/fleet.py up "$@" ;;
    flash) setup; as_root "$PY" image/flash.py "$@" ;;
    lint)  setup; exec "$VENV/bin/ruff" check "$ROOT" ;;
    setup) setup ;;
    *) sed -n '2,16p' "$0"; exit 1 ;;
esac
