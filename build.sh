#!/usr/bin/env bash
# nnos build entry point. On a fresh Debian 12 machine:
#   ./build.sh run     nnos up on the simulated cart-pole: the trained policy balances it over a
#                      serial link, with a live status line (Ctrl-C stops; --duration S to time it)
#   ./build.sh test    install everything into .venv and run the whole suite
#   ./build.sh quick   the suite without slow cases (NNOS_QUICK=1), for iteration
#   ./build.sh bench   the benchmarks (core vs onnxruntime; serial round trip; loop vs cyclictest)
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

setup() {
    debian_packages
    if [ ! -x "$PY" ]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp=$VENV/.nnos-installed want
    want=$(cat pyproject.toml | sha256sum | cut -c1-16)
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

cmd=${1:-help}
shift || true
case "$cmd" in
    run)   setup; demo "$@" ;;
    test)  setup; exec "$PY" -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider "$@" ;;
    quick) setup; NNOS_QUICK=1 exec "$PY" -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider "$@" ;;
    bench) setup; "$PY" benchmarks/core_bench.py "$@"; "$PY" benchmarks/serial_bench.py
           "$PY" benchmarks/loop_bench.py
           exec "$PY" benchmarks/api_isolation_bench.py ;;
    setup) setup ;;
    *) sed -n '2,6p' "$0"; exit 1 ;;
esac
