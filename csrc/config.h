// The kernel choices that exist for tests and A/B runs, in one place.
//
// Every setting is "on" when true (one polarity) and is read by the kernels at the
// point of use, so a change through derain_kernels.config takes effect at the next
// call. Python owns the environment: derain_kernels/_config.py reads the DERAIN_*
// variables once, at import, and writes them here; C++ never calls getenv.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace derain {
namespace config {

struct Settings {
  // 3x3 convolution engine (float32, AVX-512 builds; other builds ignore these)
  std::atomic<bool> conv_winograd{true};    // Winograd F(4,3) rows for convolutions (else direct)
  std::atomic<bool> conv_pairs{true};       // ... two output rows at a time, F(2,3) along y
  std::atomic<bool> wgrad_winograd{true};   // Winograd F(4,3) rows for weight gradients (else direct)
  std::atomic<bool> wgrad_pairs{true};      // ... two rows at a time
  std::atomic<bool> fused_epilogues{true};  // one vector pass per epilogue (else scalar loops); CUDA: cuDNN-fused
  // median filter
  std::atomic<bool> median_tracking{true};  // track the median rank from pixel to pixel (else Perreault-Hebert)
  // CUDA kernels (and their CPU emulation)
  std::atomic<bool> gpu_tiles{true};  // median and SSIM by thread-block tiles in shared memory (else per element)
  // outputs of the fused block: MiB of freed outputs kept for reuse (0: none)
  std::atomic<int64_t> output_cache_mb{64};
};

Settings& settings();

inline bool conv_winograd() { return settings().conv_winograd.load(std::memory_order_relaxed); }
inline bool conv_pairs() { return settings().conv_pairs.load(std::memory_order_relaxed); }
inline bool wgrad_winograd() { return settings().wgrad_winograd.load(std::memory_order_relaxed); }
inline bool wgrad_pairs() { return settings().wgrad_pairs.load(std::memory_order_relaxed); }
inline bool fused_epilogues() { return settings().fused_epilogues.load(std::memory_order_relaxed); }
inline bool median_tracking() { return settings().median_tracking.load(std::memory_order_relaxed); }
inline bool gpu_tiles() { return settings().gpu_tiles.load(std::memory_order_relaxed); }
inline size_t output_cache_capacity_bytes() {
  const int64_t mb = settings().output_cache_mb.load(std::memory_order_relaxed);
  return mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
}

}  // namespace config
}  // namespace derain
