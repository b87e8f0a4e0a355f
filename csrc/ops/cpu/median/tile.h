// A tile of median outputs and its ranked region: the padded input rows and columns its windows
// read, mapped onto distinct source elements, ranked by (value, source index) (steps 1 and 2 of
// median_kernel.cpp's description). Every selection algorithm starts from a RankedRegion.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/padding.h"
#include "../common/simd.h"
#include "keys.h"

namespace derain {
namespace median {

struct Geometry {
  int64_t H, W, kh, kw, rh, rw;
  Padding pad;
};

// Per-thread scratch buffers, reused across tiles.
template <typename key_t, typename count_t>
struct Workspace {
  std::vector<int32_t> row_src, col_src, row_id, col_id, drows, dcols;
  std::vector<key_t> keys_a, keys_b;
  std::vector<uint32_t> ids_a, ids_b, rank_of_id, rmap;
  std::vector<int64_t> src_of_id;
  std::vector<count_t> fine;
  std::vector<int32_t> nan_prefix, realR, realC;
  std::vector<uint16_t> colc, colf, ra, cb, cntR, cntC;
  std::vector<int32_t> rowpos, colpos;
  std::vector<uint32_t> pos_of_rank;
  std::vector<uint8_t> vcol;  // median tracking
  std::vector<uint32_t> medians, prank;
  std::vector<int64_t> psrc;
};

// Distinct sources of padded coordinates [lo, lo + len): ascending list, per-position id
// (-1 for a zero pad). Returns whether a zero pad occurs.
inline bool distinct_sources(int64_t lo, int64_t len, int64_t n, Padding pad, std::vector<int32_t>& src,
                             std::vector<int32_t>& id, std::vector<int32_t>& distinct) {
  src.resize(len);
  id.resize(len);
  bool zero = false;
  for (int64_t i = 0; i < len; ++i) {
    src[i] = static_cast<int32_t>(source_index(lo + i, n, pad));
    zero |= src[i] < 0;
  }
  distinct.clear();
  for (int64_t i = 0; i < len; ++i)
    if (src[i] >= 0) distinct.push_back(src[i]);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (int64_t i = 0; i < len; ++i)
    id[i] = src[i] < 0 ? -1
                       : static_cast<int32_t>(std::lower_bound(distinct.begin(), distinct.end(), src[i]) -
                                              distinct.begin());
  return zero;
}

// The region of a tile of th x tw outputs (RH x RW padded positions) with its elements ranked.
// Element ids: 0 for the zero pad when one occurs (base = 1), then base + a * nC + b for distinct
// source row a and column b.
struct RankedRegion {
  int64_t th, tw, RH, RW;
  uint32_t base, nR, nC, E;    // E elements: base + nR * nC
  const uint32_t* order;       // rank -> element id
  const uint32_t* rank_of_id;  // element id -> rank
  const int64_t* src_of_id;    // element id -> memory offset (forward) or flat index (backward); -1: zero pad
  uint32_t* rmap;              // rank of every region position, column-major (columns are what a
                               // horizontal step reads)
  const int32_t* nanp;         // NaN counts as a prefix sum ((RH + 1) x (RW + 1)); null: no NaN
  int64_t target;              // 0-based position of the median in a window
};

// Whether the window of output (y, x) holds a NaN.
DERAIN_ALWAYS_INLINE bool window_has_nan(const RankedRegion& r, const Geometry& g, int64_t y, int64_t x) {
  const int32_t* nanp = r.nanp;
  const int64_t PW = r.RW + 1;
  const int64_t c = nanp[(y + g.kh) * PW + x + g.kw] - nanp[y * PW + x + g.kw] -
                    nanp[(y + g.kh) * PW + x] + nanp[y * PW + x];
  return c != 0;
}

// emit(y, x, source of the element of rank m), or emit(y, x, -2) for a window holding a NaN.
template <typename Emit>
DERAIN_ALWAYS_INLINE void emit_rank(const RankedRegion& r, const Geometry& g, const Emit& emit, int64_t y, int64_t x,
                                    uint32_t m) {
  if (r.nanp && window_has_nan(r, g, y, x)) {
    emit(y, x, int64_t(-2));
    return;
  }
  emit(y, x, r.src_of_id[r.order[m]]);
}

// Ranks the region of the tile of outputs [y0, y0 + th) x [x0, x0 + tw) of one plane (xp, strides
// sH, sW); sources are memory offsets with want_offsets, else flat indices h * W + w.
template <typename scalar_t, typename WS>
DERAIN_ALWAYS_INLINE RankedRegion rank_region(const scalar_t* xp, int64_t sH, int64_t sW, const Geometry& g,
                                              int64_t y0, int64_t x0, int64_t th, int64_t tw, bool want_offsets,
                                              WS& ws) {
  using key_t = typename KeyInfo<scalar_t>::type;
  const int64_t RH = th + g.kh - 1, RW = tw + g.kw - 1;
  const bool zr = distinct_sources(y0 - g.rh, RH, g.H, g.pad, ws.row_src, ws.row_id, ws.drows);
  const bool zc = distinct_sources(x0 - g.rw, RW, g.W, g.pad, ws.col_src, ws.col_id, ws.dcols);
  const uint32_t base = (zr || zc) ? 1 : 0;  // id 0: the zero pad, before real zeros
  const uint32_t nR = ws.drows.size(), nC = ws.dcols.size();
  const uint32_t E = base + nR * nC;

  ws.keys_a.resize(E);
  ws.keys_b.resize(E);
  ws.ids_a.resize(E);
  ws.ids_b.resize(E);
  ws.rank_of_id.resize(E);
  ws.src_of_id.resize(E);
  key_t* keys = ws.keys_a.data();
  int64_t* src_of_id = ws.src_of_id.data();  // memory offset (forward) or flat index (backward)
  bool any_nan = false;
  if (base) {
    keys[0] = key_of(scalar_t(0));
    src_of_id[0] = -1;
  }
  for (uint32_t a = 0; a < nR; ++a) {
    const int64_t h = ws.drows[a];
    const scalar_t* row = xp + h * sH;
    key_t* kr = keys + base + a * nC;
    int64_t* sr = src_of_id + base + a * nC;
    for (uint32_t b = 0; b < nC; ++b) {
      const int64_t w = ws.dcols[b];
      const scalar_t v = row[w * sW];
      any_nan |= is_nan(v);
      kr[b] = key_of(v);
      sr[b] = want_offsets ? h * sH + w * sW : h * g.W + w;
    }
  }
  const uint32_t* order = radix_sort_ids<key_t>(ws.keys_a.data(), ws.keys_b.data(), ws.ids_a.data(),
                                                ws.ids_b.data(), E, KeyInfo<scalar_t>::bits);
  uint32_t* rank_of_id = ws.rank_of_id.data();
  for (uint32_t r = 0; r < E; ++r) rank_of_id[order[r]] = r;

  // rank map of the region, column-major (columns are what a horizontal step reads)
  ws.rmap.resize(RH * RW);
  uint32_t* rmap = ws.rmap.data();
  for (int64_t j = 0; j < RW; ++j) {
    const int32_t cid = ws.col_id[j];
    uint32_t* col = rmap + j * RH;
    for (int64_t i = 0; i < RH; ++i) {
      const int32_t rid = ws.row_id[i];
      col[i] = (rid < 0 || cid < 0) ? rank_of_id[0] : rank_of_id[base + rid * nC + cid];
    }
  }

  // NaN counts of windows through a prefix sum (only when the region holds a NaN)
  int32_t* nanp = nullptr;
  const int64_t PW = RW + 1;
  if (any_nan) {
    ws.nan_prefix.assign((RH + 1) * PW, 0);
    nanp = ws.nan_prefix.data();
    for (int64_t i = 0; i < RH; ++i) {
      const int32_t rid = ws.row_id[i];
      int32_t run = 0;
      for (int64_t j = 0; j < RW; ++j) {
        const int32_t cid = ws.col_id[j];
        if (rid >= 0 && cid >= 0) run += is_nan(xp[ws.drows[rid] * sH + ws.dcols[cid] * sW]) ? 1 : 0;
        nanp[(i + 1) * PW + j + 1] = nanp[i * PW + j + 1] + run;
      }
    }
  }
  const int64_t n = g.kh * g.kw;
  return RankedRegion{th, tw, RH, RW, base, nR, nC, E, order, rank_of_id, src_of_id, rmap, nanp,
                      (n - 1) / 2};
}

}  // namespace median
}  // namespace derain
