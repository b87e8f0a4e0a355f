#pragma once

#include <cstdint>

namespace derain {

// a mod d for 0 <= a < 2^32 and 0 < d < 2^32 by two multiplications (Lemire's fastmod) instead of a
// division: the pipeline maps rows to ring slots and pair phases several times per layer and row
// (`y % cap` was ~1 % of the block's training step).
struct FastMod {
  uint64_t m = 0, d = 1;
  FastMod() = default;
  explicit FastMod(uint64_t divisor) : m(~uint64_t(0) / divisor + 1), d(divisor) {}
  uint64_t operator()(uint64_t a) const {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(m * a) * d) >> 64);
  }
};

}  // namespace derain
