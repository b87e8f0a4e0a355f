// Order-preserving integer keys of the median's element types, and its NaN test, shared by the
// per-pixel selection (median_impl.h) and the tiled one (median_tiled.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "host_device.h"

namespace derain {
namespace logic {

// Order-preserving unsigned key of a value (-0.0 and +0.0 map to the same key).
DERAIN_HOST_DEVICE inline uint32_t median_key(float v) {
  if (v == 0.0f) v = 0.0f;
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
DERAIN_HOST_DEVICE inline uint64_t median_key(double v) {
  if (v == 0.0) v = 0.0;
  uint64_t b;
  memcpy(&b, &v, sizeof b);
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}
DERAIN_HOST_DEVICE inline uint32_t median_key(uint8_t v) { return v; }

template <typename T>
struct MedianKeyOf {  // float16 / bfloat16: the key of the exact float value
  using type = uint32_t;
  static constexpr int bits = 32;
  DERAIN_HOST_DEVICE static uint32_t key(T v) { return median_key(static_cast<float>(v)); }
};
template <>
struct MedianKeyOf<float> {
  using type = uint32_t;
  static constexpr int bits = 32;
  DERAIN_HOST_DEVICE static uint32_t key(float v) { return median_key(v); }
};
template <>
struct MedianKeyOf<double> {
  using type = uint64_t;
  static constexpr int bits = 64;
  DERAIN_HOST_DEVICE static uint64_t key(double v) { return median_key(v); }
};
template <>
struct MedianKeyOf<uint8_t> {
  using type = uint32_t;
  static constexpr int bits = 8;
  DERAIN_HOST_DEVICE static uint32_t key(uint8_t v) { return v; }
};

template <typename T>
DERAIN_HOST_DEVICE inline bool median_is_nan(T v) {
  if constexpr (std::is_same<T, uint8_t>::value) {
    return false;
  } else {
    const float f = static_cast<float>(v);
    return f != f;
  }
}

// The value of a window holding a NaN (uint8 has no NaN and never needs it).
template <typename T>
DERAIN_HOST_DEVICE inline T median_nan() {
  if constexpr (std::is_same<T, uint8_t>::value) {
    return T(0);
  } else {
    return static_cast<T>(NAN);
  }
}

}  // namespace logic
}  // namespace derain
