#!/usr/bin/env bash
# GPU check, for a machine whose torch sees a CUDA GPU (none in CI): build the C++ extension with
# its CUDA kernels (FORCE_CUDA=1, for this GPU's architecture only) against that machine's torch,
# check that they are the active CUDA kernels, run the GPU tests (tests/test_cuda.py through the
# compiled kernels, and every op's Triton tests compiled for the GPU instead of interpreted), then
# `derain bench --device cuda`.
#
# Usage: scripts/gpu_check.sh OUTDIR [extra derain bench arguments...]
# Writes OUTDIR/{env.txt,build.log,tests.log,tests.xml,overhead.txt,median.txt,bench.txt,bench.json,bench.md}.
# Environment: PYTHON (default python3), BUILD_TIMEOUT / TEST_TIMEOUT / BENCH_TIMEOUT (seconds),
# TEST_WORKERS (pytest-xdist workers, default 8; 0 = no xdist), SKIP_TESTS=1, SKIP_OVERHEAD=1 (the
# per-call cost probe, benchmarks/cuda_overhead.py), SKIP_MEDIAN=1 (Mpix/s at k = 31,
# benchmarks/median_throughput.py), SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUTDIR [derain bench arguments...]}
shift
mkdir -p "$out"
py=${PYTHON:-python3}
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $py -c "import sys, torch, triton; print('python', sys.version.split()[0]); \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0)); \
print('triton', triton.__version__)"
  grep -m1 'model name' /proc/cpuinfo
  echo "cores $(nproc)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

stamp "building the extension with its CUDA kernels"
arch=$($py -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" 2>/dev/null)
if ! TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch} FORCE_CUDA=${FORCE_CUDA:-1} MAX_JOBS=$(nproc) \
    DERAIN_REQUIRE_EXTENSION=1 timeout "${BUILD_TIMEOUT:-300}" \
    $py setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  stamp "build FAILED"
  tail -40 "$out/build.log"
  exit 1
fi
stamp "built"
PYTHONPATH=$PWD $py -c "import derain_kernels as dk; i = dk.backend_info(); print('cuda_kernels:', i['cuda_kernels'], \
i['cuda_kernel_per_op'])" 2>&1 | tee -a "$out/env.txt"
export DERAIN_TEST_CUDA=1
[ "${FORCE_CUDA:-1}" = 1 ] && export DERAIN_TEST_CUDA_COMPILED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  workers=${TEST_WORKERS:-8}
  xdist=()
  [ "$workers" != 0 ] && xdist=(-n "$workers")
  timeout "${TEST_TIMEOUT:-300}" $py -m pytest -q -p no:cacheprovider "${xdist[@]}" --benchmark-disable \
    --junitxml "$out/tests.xml" -k "cuda or triton" tests/test_cuda.py \
    tests/test_{block,composite,dark_channel,median,rain_direction,ssim,tv}.py > "$out/tests.log" 2>&1
  status=$?
  stamp "tests: exit status $status"
  tail -30 "$out/tests.log"
fi

if [ "${SKIP_OVERHEAD:-0}" != 1 ]; then
  timeout 120 $py benchmarks/cuda_overhead.py > "$out/overhead.txt" 2>&1
  stamp "overhead probe: exit status $?"
  sed -n '/^| case/,$p' "$out/overhead.txt"
fi

if [ "${SKIP_MEDIAN:-0}" != 1 ]; then
  timeout 120 $py benchmarks/median_throughput.py --device cuda > "$out/median.txt" 2>&1
  stamp "median throughput: exit status $?"
  cat "$out/median.txt"
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout "${BENCH_TIMEOUT:-400}" $py -m derain bench --device cuda --no-progress \
    --json "$out/bench.json" --markdown "$out/bench.md" "$@" > "$out/bench.txt" 2>&1
  b=$?
  stamp "bench: exit status $b"
  sed -n "/^== /,\$p" "$out/bench.txt" | cut -c1-150 | tail -c 7000
  [ $b != 0 ] && status=$b
fi
exit $status
