// The DERAIN_* environment variables read by the convolution engine, the output cache and the
// median kernel, all in one place. Each keeps its own polarity and lifetime: some are read once per
// process (the first call caches them), others on every call so that tests and A/B runs can switch
// them within one process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace derain {
namespace env {

// ---- convolution engine (conv3x3/)

// DERAIN_NO_PREFETCH=1: no software prefetch of the next tensor row (read once).
inline bool prefetch_enabled() {
  static const bool on = [] { const char* e = std::getenv("DERAIN_NO_PREFETCH"); return !(e && e[0] == '1'); }();
  return on;
}

// DERAIN_CONV_PLAIN=1: the AVX-512 direct kernels broadcast every input value per tap instead of
// once per row of taps (read once).
inline bool conv_reuse_enabled() {
  static const bool on = [] { const char* e = std::getenv("DERAIN_CONV_PLAIN"); return !(e && e[0] == '1'); }();
  return on;
}

// DERAIN_CONV_WINOGRAD=0: convolutions run direct (read per pipeline layer, so tests can switch it).
inline bool conv_winograd_enabled() {
  const char* e = std::getenv("DERAIN_CONV_WINOGRAD");
  return !(e && e[0] == '0');
}

// DERAIN_CONV_PAIRS=0: Winograd convolutions compute one row at a time (read per layer, so tests
// can switch it).
inline bool conv_pairs_enabled() {
  const char* e = std::getenv("DERAIN_CONV_PAIRS");
  return !(e && e[0] == '0');
}

// DERAIN_WGRAD_PAIRS=0: Winograd weight gradients accumulate one row at a time (read per layer, so
// tests can switch it).
inline bool wgrad_pairs_enabled() {
  const char* e = std::getenv("DERAIN_WGRAD_PAIRS");
  return !(e && e[0] == '0');
}

// DERAIN_WGRAD_DIRECT=1: weight gradients run direct (read at every call, so tests and benchmarks
// can switch it in one process).
inline bool wgrad_direct_forced() {
  const char* e = std::getenv("DERAIN_WGRAD_DIRECT");
  return e && e[0] == '1';
}

// DERAIN_FUSED_EPILOGUES=0: the epilogues that end in tensors run their scalar loops instead of
// one AVX-512 pass (read per pipeline).
inline bool fused_epilogues_enabled() {
  const char* m = std::getenv("DERAIN_FUSED_EPILOGUES");
  return !(m && m[0] == '0');
}

// ---- outputs (output_cache.h)

// DERAIN_OUTPUT_CACHE_MB: bytes of freed outputs kept for reuse (default 64 MiB; 0 turns the
// cache off; read on every allocation and release).
inline size_t output_cache_capacity_bytes() {
  const char* e = std::getenv("DERAIN_OUTPUT_CACHE_MB");
  const long mb = e ? std::atol(e) : 64;
  return mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
}

// ---- median filter (median/)

// DERAIN_MEDIAN_TRACK=0 turns median tracking off (the Perreault-Hebert path runs instead; read once).
inline bool median_tracking_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DERAIN_MEDIAN_TRACK");
    return !(e && e[0] == '0');
  }();
  return on;
}

inline int64_t env_int(const char* name) {
  const char* e = std::getenv(name);
  return e ? std::atoll(e) : 0;
}

// DERAIN_MEDIAN_TH / DERAIN_MEDIAN_TW > 0: forced tile height / width of the median (read once;
// 0 when unset).
inline int64_t median_forced_tile_height() {
  static const int64_t forced = env_int("DERAIN_MEDIAN_TH");
  return forced;
}
inline int64_t median_forced_tile_width() {
  static const int64_t forced = env_int("DERAIN_MEDIAN_TW");
  return forced;
}

}  // namespace env
}  // namespace derain
