// Helpers shared by the element-wise CPU kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>

// `#pragma omp simd` usable inside macro arguments (AT_DISPATCH_* bodies).
#define DERAIN_SIMD _Pragma("omp simd")

namespace derain {

// Output of an element-wise op whose inputs broadcast to `shape`: laid out like
// `like` when it already has that shape (so channels-last and permuted inputs
// give outputs of the same layout), contiguous otherwise. The fake-tensor rule
// in derain_kernels/ops/_common.py mirrors this exactly.
inline at::Tensor empty_elementwise(const at::Tensor& like, at::IntArrayRef shape) {
  if (like.sizes().equals(shape)) {
    return at::empty_like(like, at::MemoryFormat::Preserve);
  }
  return at::empty(shape, like.options());
}

// Runs `op(char** data, const int64_t* strides, int64_t n)` over a configured
// TensorIterator, in parallel across both cores for large tensors. Each call
// covers one inner line of `n` elements; strides are in bytes.
template <typename Loop1d>
void for_each_line(at::TensorIterator& iter, const Loop1d& op) {
  const int ntensors = iter.ntensors();
  iter.for_each([&](char** data, const int64_t* strides, int64_t n0, int64_t n1) {
    char* ptrs[8];
    for (int t = 0; t < ntensors; ++t) ptrs[t] = data[t];
    for (int64_t j = 0; j < n1; ++j) {
      op(ptrs, strides, n0);
      for (int t = 0; t < ntensors; ++t) ptrs[t] += strides[ntensors + t];
    }
  }, /*grain_size=*/32768);
}

// True when every operand of the line is contiguous with element size `size`.
inline bool line_is_contiguous(const int64_t* strides, int ntensors, int64_t size) {
  for (int t = 0; t < ntensors; ++t)
    if (strides[t] != size) return false;
  return true;
}

}  // namespace derain
