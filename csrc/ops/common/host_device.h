// DERAIN_HOST_DEVICE marks the per-element functions that a CUDA kernel runs:
// `__host__ __device__` under nvcc, nothing for the C++ compiler. The same
// functions are compiled into the CPU extension, where the test-only ops
// `derain::_emulate_cuda_*` (csrc/ops/_emulate_cuda.cpp) run them in a plain
// loop over every output element; tests/test_cuda_logic.py compares those
// results with the references, so the logic of the CUDA kernels is tested
// without a GPU.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DERAIN_HOST_DEVICE __host__ __device__
#else
#define DERAIN_HOST_DEVICE
#endif

namespace derain {
namespace logic {

// Padding rules of the window ops.
enum Pad : int { kReflect = 0, kReplicate = 1, kZeros = 2, kValid = 3 };

// Periodic mirror without edge repeat (numpy.pad "reflect", scipy "mirror"
// repeated) of position p into [0, n); a side of length 1 repeats its element.
DERAIN_HOST_DEVICE inline int64_t reflect_periodic(int64_t p, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = p % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

// Source position in [0, n) of padded position p, or -1 for a zero pad.
DERAIN_HOST_DEVICE inline int64_t source_index(int64_t p, int64_t n, int pad) {
  if (p >= 0 && p < n) return p;
  if (pad == kReplicate) return p < 0 ? 0 : n - 1;
  if (pad == kZeros) return -1;
  return reflect_periodic(p, n);
}

}  // namespace logic
}  // namespace derain
