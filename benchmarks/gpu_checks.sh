#!/bin/bash
# The checks that need a real GPU, in one go (an NVIDIA GPU with CuPy for cuda; any Vulkan
# driver for vulkan): the backends' tests, `nnos gpu-check`, and both benchmarks. Each step's
# output in DIR (default out/gpu-checks); what a run printed goes into benchmarks/RESULTS.md.
#   benchmarks/gpu_checks.sh [DIR]
cd "$(dirname "$0")/.." || exit 1
out=${1:-out/gpu-checks}
mkdir -p "$out"
py=${PYTHON:-python3}
step() {                                   # step NAME SECONDS COMMAND...
    local name=$1 secs=$2; shift 2
    echo "== $name"
    timeout "$secs" "$@" > "$out/$name.log" 2>&1
    echo "   exit $? ($name)"; tail -n 4 "$out/$name.log"
}
nvidia-smi -L 2>/dev/null
step cuda-tests 200 $py -m pytest -q -p no:cacheprovider -n 8 tests/backends/test_cuda_backend.py tests/backends/test_auto.py
step gpu-check 120 $py -m nnos.cli gpu-check --calls 2000 --json
step vulkan-tests 200 $py -m pytest -q -p no:cacheprovider -n 8 tests/backends/test_vulkan_backend.py
step cuda-bench 200 $py benchmarks/cuda_bench.py --rounds 5 --calls 200
step vulkan-bench 100 $py benchmarks/vulkan_bench.py --rounds 5 --calls 200
grep -h -E "passed|failed" "$out"/*-tests.log
