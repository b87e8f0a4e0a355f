// Border modes of the windowed kernels (median, SSIM): names, and the source sample a padded
// coordinate reads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <string>

namespace derain {

enum class Padding {
  Zeros,      // a zero outside the image
  Reflect,    // mirrored about the edge sample, which is not repeated (numpy / torch "reflect")
  Replicate,  // the edge sample repeated
  Valid,      // no padding: only windows inside the image
};

inline const char* padding_name(Padding p) {
  switch (p) {
    case Padding::Zeros: return "zeros";
    case Padding::Reflect: return "reflect";
    case Padding::Replicate: return "replicate";
    case Padding::Valid: return "valid";
  }
  return "";
}

// The mode named `name`, which must be one of `allowed`; otherwise the error "<expected>, got
// '<name>'" (expected: the op's sentence listing the modes it takes).
inline Padding parse_padding(c10::string_view name, std::initializer_list<Padding> allowed, const char* expected) {
  for (const Padding p : allowed)
    if (name == padding_name(p)) return p;
  TORCH_CHECK(false, expected, ", got '", std::string(name), "'");
  return *allowed.begin();
}

// Mirror index of s for -n < s < 2n - 1: one reflection about either edge (no edge repeat). Equals
// the periodic mirror (source_index) in that range, without its division.
inline int64_t reflect_once(int64_t s, int64_t n) { return s < 0 ? -s : 2 * (n - 1) - s; }

// Source index in [0, n) of padded coordinate p (any integer), or -1 for a zero pad.
// Reflect is the periodic mirror of numpy.pad(mode="reflect"): period 2(n-1).
inline int64_t source_index(int64_t p, int64_t n, Padding pad) {
  if (p >= 0 && p < n) return p;
  if (pad == Padding::Zeros) return -1;
  if (pad == Padding::Replicate) return p < 0 ? 0 : n - 1;
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = p % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

}  // namespace derain
