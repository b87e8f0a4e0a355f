// Weight gradients computed per band of rows (one pipeline per task) are summed here: each task's
// partial sums ([direct taps and biases][Winograd point sums], the points starting on a cache line
// of the task's buffer, `shift` elements in) are added in double, every value over the tasks in
// task order, whichever thread does it: run-to-run deterministic.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace derain {
namespace conv3x3 {

// Elements to skip so that p + shift starts a 64-byte cache line.
template <typename T>
inline int64_t cache_line_shift(const T* p) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  return static_cast<int64_t>(((64 - at % 64) % 64) / sizeof(T));
}

// total[i] = sum over tasks of parts[task][i] (i < points_at) or parts[task][i + shift[task]].
template <typename T>
std::vector<double> sum_band_parts(const std::vector<std::vector<T>>& parts, const std::vector<int64_t>& shift,
                                   int64_t points_at, int64_t size) {
  std::vector<double> total(size, 0.0);
  const int64_t ntasks = static_cast<int64_t>(parts.size());
  at::parallel_for(0, size, 2048, [&](int64_t lo, int64_t hi) {
    for (int64_t task = 0; task < ntasks; ++task) {
      const T* part = parts[task].data();
      for (int64_t i = lo; i < std::min(hi, points_at); ++i) total[i] += part[i];
      for (int64_t i = std::max(lo, points_at); i < hi; ++i) total[i] += part[i + shift[task]];
    }
  });
  return total;
}

}  // namespace conv3x3
}  // namespace derain
