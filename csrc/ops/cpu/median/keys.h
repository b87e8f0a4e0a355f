// Order-preserving integer keys of the median's element types, and the stable radix sort that
// ranks a tile's elements by (value, source index).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace derain {
namespace median {

// key_of(v): an unsigned integer ordered as v (floats: sign-flipped bits; -0 and +0 one key, so that
// equal values are ordered by source index; every NaN above +inf).
inline uint32_t key_of(float v) {
  if (v != v) return 0xFFFFFFFFu;  // every NaN above +inf
  if (v == 0.0f) v = 0.0f;         // -0 == +0: ordered by source index
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t key_of(double v) {
  if (v != v) return 0xFFFFFFFFFFFFFFFFull;
  if (v == 0.0) v = 0.0;
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
inline uint32_t key_of(uint8_t v) { return v; }
inline uint32_t key_of(at::Half v) { return key_of(static_cast<float>(v)); }
inline uint32_t key_of(at::BFloat16 v) { return key_of(static_cast<float>(v)); }

template <typename T> inline bool is_nan(T v) { return v != v; }
template <> inline bool is_nan<uint8_t>(uint8_t) { return false; }
inline bool is_nan(at::Half v) { return std::isnan(static_cast<float>(v)); }
inline bool is_nan(at::BFloat16 v) { return std::isnan(static_cast<float>(v)); }

template <typename T> struct KeyInfo { using type = uint32_t; static constexpr int bits = 32; };
template <> struct KeyInfo<double> { using type = uint64_t; static constexpr int bits = 64; };
template <> struct KeyInfo<uint8_t> { using type = uint32_t; static constexpr int bits = 8; };

// Stable LSD radix sort (11-bit digits) of ids 0..n-1 by key (`bits` significant
// low bits). Returns the buffer holding the sorted ids (ids_a or ids_b). Digits on
// which all keys agree are skipped.
constexpr int kDigitBits = 11;
constexpr uint32_t kDigits = 1u << kDigitBits;

template <typename key_t>
uint32_t* radix_sort_ids(key_t* keys_a, key_t* keys_b, uint32_t* ids_a, uint32_t* ids_b, uint32_t n, int bits) {
  const int passes = (bits + kDigitBits - 1) / kDigitBits;
  std::vector<uint32_t> counts_buf(static_cast<size_t>(passes) * kDigits, 0);
  uint32_t* counts = counts_buf.data();
  for (uint32_t i = 0; i < n; ++i) {
    const key_t k = keys_a[i];
    ids_a[i] = i;
    for (int b = 0; b < passes; ++b) counts[b * kDigits + ((k >> (kDigitBits * b)) & (kDigits - 1))]++;
  }
  for (int b = 0; b < passes; ++b) {
    uint32_t* c = counts + b * kDigits;
    const int shift = kDigitBits * b;
    if (c[(keys_a[0] >> shift) & (kDigits - 1)] == n) continue;  // all keys share this digit
    uint32_t sum = 0;
    for (uint32_t d = 0; d < kDigits; ++d) { const uint32_t t = c[d]; c[d] = sum; sum += t; }
    for (uint32_t i = 0; i < n; ++i) {
      const key_t k = keys_a[i];
      const uint32_t pos = c[(k >> shift) & (kDigits - 1)]++;
      keys_b[pos] = k;
      ids_b[pos] = ids_a[i];
    }
    std::swap(keys_a, keys_b);
    std::swap(ids_a, ids_b);
  }
  return ids_a;
}

}  // namespace median
}  // namespace derain
