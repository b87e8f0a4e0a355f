// CPU kernels of median_filter (forward) and median_filter_backward.
//
// Exact for every dtype, any odd kh x kw window, cost per pixel O(kh) (not
// O(kh*kw)) and no quantisation of floats. Per tile of output pixels:
//
//  1. The tile's padded input region (tile + halo) maps, row by row and column
//     by column, onto a set of distinct source rows and columns (reflection and
//     replication repeat sources; a zero pad is one virtual element). The
//     distinct source elements are numbered in source order (flat index h*W+w;
//     the zero pad first).
//  2. Their order-preserving integer keys (floats: sign-flipped bits, -0 -> +0,
//     NaN above +inf) are radix-sorted, stably, so equal values keep source
//     order: element -> rank is a bijection onto 0..E-1 ordered by
//     (value, source index), the selection rule shared with the reference.
//  3. A Huang sweep (snake order) keeps a two-level histogram (64-rank fine
//     bins under coarse bins) of the ranks in the kh x kw window: each step
//     removes the leaving column and adds the entering one (2*kh updates), and
//     the median rank is tracked from the previous one (coarse walk, then a
//     scan of one fine bin from its nearer end).
//  4. The median rank maps back to its source element: value for the forward,
//     flat index for the backward (which scatters the output gradient there).
//
// Windows containing a NaN (found with a prefix count of NaNs over the region)
// return NaN and select nothing. Tiles of all planes run in parallel
// (at::parallel_for). Argument checks with clear messages happen in Python
// (derain_kernels/ops/median.py); the TORCH_CHECKs guard direct torch.ops calls.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace derain {
namespace {

enum class Pad { Reflect, Replicate, Zeros };

Pad parse_padding(c10::string_view padding) {
  if (padding == "reflect") return Pad::Reflect;
  if (padding == "replicate") return Pad::Replicate;
  if (padding == "zeros") return Pad::Zeros;
  TORCH_CHECK(false, "derain: padding must be one of 'reflect', 'replicate', 'zeros', got '",
              std::string(padding), "'");
  return Pad::Reflect;
}

// Source index in [0, n) of padded coordinate p (any integer), or -1 for a zero pad.
// Reflect is the periodic mirror of numpy.pad(mode="reflect"): period 2(n-1).
inline int64_t source_of(int64_t p, int64_t n, Pad pad) {
  if (p >= 0 && p < n) return p;
  if (pad == Pad::Zeros) return -1;
  if (pad == Pad::Replicate) return p < 0 ? 0 : n - 1;
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = p % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

// ---- order-preserving keys ------------------------------------------------
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

template <typename T> struct KeyInfo { using type = uint32_t; static constexpr int bytes = 4; };
template <> struct KeyInfo<double> { using type = uint64_t; static constexpr int bytes = 8; };
template <> struct KeyInfo<uint8_t> { using type = uint32_t; static constexpr int bytes = 1; };

// Stable LSD radix sort (8-bit digits) of ids 0..n-1 by key. Returns the buffer
// holding the sorted ids (ids_a or ids_b). Digits on which all keys agree are skipped.
template <typename key_t>
uint32_t* radix_sort_ids(key_t* keys_a, key_t* keys_b, uint32_t* ids_a, uint32_t* ids_b, uint32_t n,
                         int nbytes) {
  uint32_t counts[8][256];
  std::memset(counts, 0, sizeof(counts[0]) * nbytes);
  for (uint32_t i = 0; i < n; ++i) {
    key_t k = keys_a[i];
    ids_a[i] = i;
    for (int b = 0; b < nbytes; ++b) counts[b][(k >> (8 * b)) & 0xFF]++;
  }
  for (int b = 0; b < nbytes; ++b) {
    uint32_t* c = counts[b];
    bool trivial = false;
    for (int d = 0; d < 256; ++d) {
      if (c[d] == n) { trivial = true; break; }
      if (c[d]) break;
    }
    if (trivial) continue;
    uint32_t sum = 0;
    for (int d = 0; d < 256; ++d) { uint32_t t = c[d]; c[d] = sum; sum += t; }
    const int shift = 8 * b;
    for (uint32_t i = 0; i < n; ++i) {
      key_t k = keys_a[i];
      uint32_t pos = c[(k >> shift) & 0xFF]++;
      keys_b[pos] = k;
      ids_b[pos] = ids_a[i];
    }
    std::swap(keys_a, keys_b);
    std::swap(ids_a, ids_b);
  }
  return ids_a;
}

constexpr int kFineBits = 6;  // 64 ranks per coarse bin
constexpr uint32_t kFine = 1u << kFineBits;

struct Geometry {
  int64_t H, W, kh, kw, rh, rw;
  Pad pad;
};

// Per-thread scratch buffers, reused across tiles.
template <typename key_t, typename count_t>
struct Workspace {
  std::vector<int32_t> row_src, col_src, row_id, col_id, drows, dcols;
  std::vector<key_t> keys_a, keys_b;
  std::vector<uint32_t> ids_a, ids_b, rank_of_id, rmap;
  std::vector<count_t> fine;
  std::vector<uint32_t> coarse;
  std::vector<int32_t> nan_prefix;
};

// Distinct sources of padded coordinates [lo, lo + len): ascending list, per-position id
// (-1 for a zero pad). Returns whether a zero pad occurs.
inline bool distinct_sources(int64_t lo, int64_t len, int64_t n, Pad pad, std::vector<int32_t>& src,
                             std::vector<int32_t>& id, std::vector<int32_t>& distinct) {
  src.resize(len);
  id.resize(len);
  bool zero = false;
  for (int64_t i = 0; i < len; ++i) {
    src[i] = static_cast<int32_t>(source_of(lo + i, n, pad));
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

// One tile of outputs [y0, y0+th) x [x0, x0+tw) of one plane. `emit(y, x, src)` is
// called for every output with the selected source flat index (h*W + w), -1 for a
// zero pad, or -2 for a window containing a NaN.
template <typename scalar_t, typename count_t, typename Emit>
void median_tile(const scalar_t* xp, int64_t sH, int64_t sW, const Geometry& g, int64_t y0, int64_t x0,
                 int64_t th, int64_t tw, Workspace<typename KeyInfo<scalar_t>::type, count_t>& ws,
                 const Emit& emit) {
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
  key_t* keys = ws.keys_a.data();
  bool any_nan = false;
  if (base) keys[0] = key_of(scalar_t(0));
  for (uint32_t a = 0; a < nR; ++a) {
    const scalar_t* row = xp + ws.drows[a] * sH;
    key_t* kr = keys + base + a * nC;
    for (uint32_t b = 0; b < nC; ++b) {
      scalar_t v = row[ws.dcols[b] * sW];
      any_nan |= is_nan(v);
      kr[b] = key_of(v);
    }
  }
  const uint32_t* order = radix_sort_ids<key_t>(ws.keys_a.data(), ws.keys_b.data(), ws.ids_a.data(),
                                                ws.ids_b.data(), E, KeyInfo<scalar_t>::bytes);
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

  // two-level histogram of the window's ranks
  const uint32_t nCoarse = (E + kFine - 1) >> kFineBits;
  ws.fine.assign(static_cast<size_t>(nCoarse) << kFineBits, 0);
  ws.coarse.assign(nCoarse, 0);
  count_t* fine = ws.fine.data();
  uint32_t* coarse = ws.coarse.data();
  const int64_t target = (g.kh * g.kw - 1) / 2;  // 0-based position of the median
  int64_t mc = 0, lt = 0;                        // coarse bin of the median, count below it

  auto add_col = [&](const uint32_t* c, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t r = c[i];
      fine[r]++;
      coarse[r >> kFineBits]++;
      lt += (int64_t)(r >> kFineBits) < mc;
    }
  };
  auto remove_col = [&](const uint32_t* c, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t r = c[i];
      fine[r]--;
      coarse[r >> kFineBits]--;
      lt -= (int64_t)(r >> kFineBits) < mc;
    }
  };
  auto find = [&]() -> uint32_t {
    while (lt > target) { --mc; lt -= coarse[mc]; }
    while (lt + coarse[mc] <= target) { lt += coarse[mc]; ++mc; }
    const int64_t cnt = coarse[mc];
    uint32_t f;
    if (2 * (target - lt) < cnt) {
      int64_t acc = lt;
      f = mc << kFineBits;
      while (acc + fine[f] <= target) { acc += fine[f]; ++f; }
    } else {
      int64_t acc = lt + cnt;
      f = ((mc + 1) << kFineBits) - 1;
      while (acc - fine[f] > target) { acc -= fine[f]; --f; }
    }
    return f;
  };
  auto select = [&](int64_t y, int64_t x, uint32_t m) {
    if (nanp) {
      const int64_t c = nanp[(y + g.kh) * PW + x + g.kw] - nanp[y * PW + x + g.kw] -
                        nanp[(y + g.kh) * PW + x] + nanp[y * PW + x];
      if (c) { emit(y, x, int64_t(-2)); return; }
    }
    const uint32_t id = order[m];
    if (id < base) { emit(y, x, int64_t(-1)); return; }
    const uint32_t a = (id - base) / nC, b = (id - base) - a * nC;
    emit(y, x, int64_t(ws.drows[a]) * g.W + ws.dcols[b]);
  };

  for (int64_t j = 0; j < g.kw; ++j) add_col(rmap + j * RH, g.kh);
  int64_t x = 0;
  for (int64_t y = 0; y < th; ++y) {
    if (y > 0) {  // step down: row y-1 leaves, row y+kh-1 enters, in the window's columns
      for (int64_t j = x; j < x + g.kw; ++j) {
        const uint32_t r_out = rmap[j * RH + y - 1], r_in = rmap[j * RH + y + g.kh - 1];
        fine[r_out]--; coarse[r_out >> kFineBits]--; lt -= (int64_t)(r_out >> kFineBits) < mc;
        fine[r_in]++; coarse[r_in >> kFineBits]++; lt += (int64_t)(r_in >> kFineBits) < mc;
      }
    }
    select(y, x, find());
    if ((y & 1) == 0) {
      for (x = x + 1; x < tw; ++x) {
        remove_col(rmap + (x - 1) * RH + y, g.kh);
        add_col(rmap + (x + g.kw - 1) * RH + y, g.kh);
        select(y, x, find());
      }
      x = tw - 1;
    } else {
      for (x = x - 1; x >= 0; --x) {
        remove_col(rmap + (x + g.kw) * RH + y, g.kh);
        add_col(rmap + x * RH + y, g.kh);
        select(y, x, find());
      }
      x = 0;
    }
  }
}

// Offsets (in elements) of every (H, W) plane of t, for any strides.
std::vector<int64_t> plane_offsets(const at::Tensor& t) {
  const int64_t lead = t.dim() - 2;
  int64_t P = 1;
  for (int64_t d = 0; d < lead; ++d) P *= t.size(d);
  std::vector<int64_t> off(P);
  std::vector<int64_t> idx(lead, 0);
  for (int64_t p = 0; p < P; ++p) {
    int64_t o = 0;
    for (int64_t d = 0; d < lead; ++d) o += idx[d] * t.stride(d);
    off[p] = o;
    for (int64_t d = lead - 1; d >= 0; --d) {
      if (++idx[d] < t.size(d)) break;
      idx[d] = 0;
    }
  }
  return off;
}

Geometry make_geometry(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  TORCH_CHECK(x.dim() >= 2, "derain: x must have at least 2 dimensions (..., H, W), got ", x.dim());
  TORCH_CHECK(kernel_size.size() == 2, "derain: kernel_size must have 2 elements");
  for (auto k : kernel_size)
    TORCH_CHECK(k >= 1 && k % 2 == 1, "derain: kernel_size must be odd and >= 1, got ", k);
  Geometry g;
  g.H = x.size(-2);
  g.W = x.size(-1);
  g.kh = kernel_size[0];
  g.kw = kernel_size[1];
  g.rh = g.kh / 2;
  g.rw = g.kw / 2;
  g.pad = parse_padding(padding);
  TORCH_CHECK(g.kh * g.kw < (int64_t(1) << 31), "derain: kernel_size too large");
  return g;
}

// Tile side: large tiles amortise the halo; the region (tile + halo) stays small
// enough for the rank map and histogram to live in L2.
inline int64_t tile_side(int64_t k) { return k <= 63 ? 128 : std::max<int64_t>(32, 192 - k); }

// Runs the selection over all tiles of all planes in parallel.
// emit_plane(p) returns an Emit callable for plane p.
template <typename scalar_t, typename MakeEmit>
void for_each_selection(const at::Tensor& x, const Geometry& g, const MakeEmit& make_emit) {
  const auto offs = plane_offsets(x);
  const int64_t P = offs.size();
  const int64_t TH = std::min(g.H, tile_side(g.kh)), TW = std::min(g.W, tile_side(g.kw));
  const int64_t nty = (g.H + TH - 1) / TH, ntx = (g.W + TW - 1) / TW;
  const int64_t ntasks = P * nty * ntx;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const int64_t sH = x.stride(-2), sW = x.stride(-1);
  using key_t = typename KeyInfo<scalar_t>::type;
  auto run = [&](auto count_tag) {
    using count_t = decltype(count_tag);
    at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
      Workspace<key_t, count_t> ws;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t p = t / (nty * ntx), ty = (t / ntx) % nty, tx = t % ntx;
        const int64_t y0 = ty * TH, x0 = tx * TW;
        const int64_t th = std::min(TH, g.H - y0), tw = std::min(TW, g.W - x0);
        auto emit = make_emit(p, y0, x0);
        median_tile<scalar_t, count_t>(xd + offs[p], sH, sW, g, y0, x0, th, tw, ws, emit);
      }
    });
  };
  if (g.kh * g.kw <= 65535) run(uint16_t{});
  else run(uint32_t{});
}

at::Tensor median_filter_cpu(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  const Geometry g = make_geometry(x, kernel_size, padding);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "median_filter", [&] {
    const auto out_offs = plane_offsets(out);
    scalar_t* od = out.mutable_data_ptr<scalar_t>();
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    const auto x_offs = plane_offsets(x);
    const int64_t sH = x.stride(-2), sW = x.stride(-1), oH = out.stride(-2), oW = out.stride(-1);
    const int64_t W = g.W;
    const scalar_t nan_value = std::numeric_limits<scalar_t>::quiet_NaN();
    for_each_selection<scalar_t>(x, g, [&](int64_t p, int64_t y0, int64_t x0) {
      scalar_t* o = od + out_offs[p] + y0 * oH + x0 * oW;
      const scalar_t* xp = xd + x_offs[p];
      return [=](int64_t y, int64_t xx, int64_t src) {
        scalar_t v;
        if (src >= 0) {
          const int64_t h = src / W;
          v = xp[h * sH + (src - h * W) * sW];
        } else {
          v = src == -1 ? scalar_t(0) : nan_value;
        }
        o[y * oH + xx * oW] = v;
      };
    });
  });
  return out;
}

at::Tensor median_filter_backward_cpu(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef kernel_size,
                                      c10::string_view padding) {
  const Geometry g = make_geometry(x, kernel_size, padding);
  TORCH_CHECK(grad.sizes().equals(x.sizes()), "derain: grad must have the shape of x, got ", grad.sizes(),
              " and ", x.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && at::isFloatingType(x.scalar_type()),
              "derain: grad and x must be floating tensors of the same dtype, got ", grad.scalar_type(), " and ",
              x.scalar_type());
  at::Tensor gx = at::zeros_like(x, at::MemoryFormat::Preserve);
  if (x.numel() == 0) return gx;
  const int64_t HW = g.H * g.W;
  const int64_t P = x.numel() / HW;
  // 1. the selected source of every output, 2. scatter per plane (serial within a plane)
  at::Tensor sel = at::empty({P, g.H, g.W}, x.options().dtype(at::kInt));
  int32_t* sd = sel.mutable_data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "median_filter_backward", [&] {
    const int64_t W = g.W;
    for_each_selection<scalar_t>(x, g, [&](int64_t p, int64_t y0, int64_t x0) {
      int32_t* s = sd + p * HW + y0 * W + x0;
      return [=](int64_t y, int64_t xx, int64_t src) { s[y * W + xx] = static_cast<int32_t>(src); };
    });
    using acc_t = at::opmath_type<scalar_t>;
    const auto g_offs = plane_offsets(grad);
    const auto x_offs = plane_offsets(gx);
    const scalar_t* gd = grad.const_data_ptr<scalar_t>();
    scalar_t* xd = gx.mutable_data_ptr<scalar_t>();
    const int64_t gH = grad.stride(-2), gW = grad.stride(-1), xH = gx.stride(-2), xW = gx.stride(-1);
    at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(HW);
      for (int64_t p = begin; p < end; ++p) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const int32_t* s = sd + p * HW;
        const scalar_t* gp = gd + g_offs[p];
        for (int64_t y = 0; y < g.H; ++y)
          for (int64_t xx = 0; xx < W; ++xx) {
            const int32_t src = s[y * W + xx];
            if (src >= 0) acc[src] += acc_t(gp[y * gH + xx * gW]);
          }
        scalar_t* xp = xd + x_offs[p];
        for (int64_t y = 0; y < g.H; ++y)
          for (int64_t xx = 0; xx < W; ++xx) xp[y * xH + xx * xW] = scalar_t(acc[y * W + xx]);
      }
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("median_filter", &median_filter_cpu);
  m.impl("median_filter_backward", &median_filter_backward_cpu);
}

}  // namespace derain
