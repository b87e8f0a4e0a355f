// A line-buffer pipeline of 3x3 convolutions on channels-last rows.
//
// Used by the fused self-correcting block (forward and backward,
// block_kernel.cpp) and by the fused inference of the whole network
// (network_kernel.cpp). A computation is a list of layers in topological
// order; each layer produces one image row at a time (a convolution of rows
// y-d, y, y+d of its input followed by an element-wise epilogue, a load from a
// tensor, or a weight-gradient accumulation). Feature maps live in ring buffers
// of a few rows ("stores", channels-last, zero columns on both sides for the
// padding), so no full-size intermediate map is ever written and everything a
// row needs is still in cache. Rows outside the image read as zeros (the
// convolutions' zero padding).
//
// One pipeline covers one image band [r0, r1) of final rows; each layer
// computes the rows its consumers need (the band plus a halo, clipped to the
// image). The schedule advances every layer by at most one row per sweep, in
// layer order, as soon as its inputs are there; ring capacities are found by
// replaying that schedule on counters before anything is allocated.
//
// Inner kernels: an AVX-512 micro-kernel for float (16 output pixels x 16
// output channels of accumulators, input values broadcast) when the build
// targets AVX-512, otherwise portable blocked loops (4 pixels x 16 channels)
// the compiler vectorises for its target (AVX2, SSE, NEON). Output channel
// counts are padded to a multiple of 16 with zero weights (`padded_channels`).
// float32 convolutions with 16 or 32 input channels run as Winograd F(4,3)
// along the rows on AVX-512 builds, and those with 16 output channels compute
// two rows y, y + d at once with F(2,3) along y (row pairs); the weight gradients
// run as Winograd F(4,3) along the rows too, also in row pairs.
//
// The engine, by concern (all in namespace derain::conv3x3):
//   pipeline.h                  layers, ring-buffer stores and the schedule (this file)
//   epilogues.h                 what a convolution does with its accumulators
//   dispatch.h                  which kernel computes a row: the one table
//   winograd_rows.h             Winograd row drivers and their cache of transformed rows
//   winograd_transforms.h       the F(4,3) transforms
//   kernels_avx512_direct.h     AVX-512 direct convolution and weight-gradient kernels
//   kernels_avx512_winograd.h   AVX-512 Winograd convolution kernels (rows and row pairs)
//   kernels_avx512_wgrad.h      AVX-512 Winograd weight-gradient kernels
//   kernels_blocked.h           portable kernels (other ISAs, double)
//   weights.h                   weight and bias layouts
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../../config.h"
#include "../common/fastmod.h"
#include "../common/plane.h"
#include "../common/simd.h"
#include "dispatch.h"
#include "epilogues.h"
#include "weights.h"
#include "winograd_rows.h"

namespace derain {
namespace conv3x3 {

enum class Kind {
  LoadImage,    // store[y] = image rows (first C channels)
  LoadGradMask, // store[y] = image2 > 0 ? image : 0   (gradient through the final ReLU)
  LoadSplit,    // store[y] = |image| (la saved by the forward; when out is set); out2[y] = aux[y] - |image| (e)
  Conv,         // acc = conv(input store); epilogue below
  WeightGrad,   // gw += input (shifted) x aux[y]; gb += aux[y]
};

struct StoreSpec {
  int64_t ch;  // channels per pixel
};

template <typename T>
struct Layer {
  Kind kind = Kind::Conv;
  Epilogue epi = Epilogue::Relu;
  int in = -1;  // input store (Conv, WeightGrad)
  int64_t in_choff = 0, cin = 0, d = 1;
  const T* w = nullptr;
  const T* b = nullptr;
  int64_t coutp = 0;  // accumulator channels (Conv) / gradient channels (WeightGrad)
  int out = -1, out2 = -1, aux = -1, aux2 = -1;
  int64_t out_choff = 0, out2_choff = 0, aux_choff = 0, aux2_choff = 0;
  ImageView<T> image, image2;  // tensors read or written
  int64_t image2_choff = 0;    // SplitImage: the accumulator channel that image2 starts at
  bool sign_mask = false;      // LoadGradMask: the mask is image2's sign bit clear (else image2 > 0)
  T* gw = nullptr;  // WeightGrad accumulators [9][cin][coutp] and [coutp], in T
  T* gb = nullptr;
  T* gwp = nullptr;  // WeightGrad: Winograd point accumulators [3][6][cin][coutp] (nullptr: direct kernel only)
  T* gwq = nullptr;  // WeightGrad: row-pair accumulators [4][6][coutp][cin] (nullptr: no row pairs)
  std::vector<std::pair<int, int64_t>> deps;  // (producer layer, rows of reach)
  const T* wg_shared = nullptr;  // Conv: Winograd weights prepared once per op (winograd_weights_for)
  std::vector<T> wg;             // Conv: own Winograd weights (add_layer, when none are shared)
  const T* wgp = nullptr;        // Conv: the Winograd weights in use (null: direct kernels)
  // Conv with Winograd and 16 output channels: output rows computed in pairs (y, y + d) with F(2,3)
  // along y (pair_head); the second row waits in `stash` until the schedule reaches it
  bool pair = false;
  const T* wg2p = nullptr;  // pair weights (winograd_pair_weights, after the row weights)
  std::vector<T> stash;
  std::vector<int64_t> stash_tag;
  int64_t stash_len = 0;
#if defined(__AVX512F__)
  WinoRowCache wino;  // Conv with wgp / WeightGrad with gwp: transformed input rows
#endif
  // filled by the pipeline
  int64_t lo = 0, hi = 0, next = 0, lag = 0;
  FastMod mod2d;  // y mod 2d (the row-pair phase)
};

template <typename T>
class Pipeline {
 public:
  // pad: the largest dilation of the layers. Rows get pad zero pixels on the left and 5 pad on the
  // right (a Winograd tile at the end of a row reads up to 5d - 1 pixels past it).
  Pipeline(int64_t H, int64_t W, int64_t pad) : H_(H), W_(W), pad_(pad), rpad_(5 * pad) {
    // FastMod is exact below 2^32: rows (and cache slots, row + a few) stay far below it
    TORCH_CHECK(H < (int64_t(1) << 31), "derain: images of 2^31 rows or more are not supported");
    fused_epi_ = config::fused_epilogues();
  }

  int add_store(int64_t ch) {
    stores_.push_back({ch});
    return static_cast<int>(stores_.size()) - 1;
  }
  int add_layer(Layer<T> l) {
    TORCH_CHECK(l.kind == Kind::LoadImage || l.kind == Kind::LoadGradMask || l.kind == Kind::LoadSplit ||
                    l.coutp % 16 == 0,
                "derain: internal error: output channels of a layer must be padded to 16");
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value) {
      if (l.kind == Kind::Conv && winograd_ok_ && conv_winograd_applies<T>(l.cin, l.d) &&
          winograd_tiles_in_row(W_, l.d) > 0) {
        if (!l.wg_shared) l.wg = winograd_weights(l.w, l.cin, l.coutp);
        l.wgp = l.wg_shared ? l.wg_shared : l.wg.data();  // a moved vector keeps its buffer
        l.pair = conv_pairs_apply(l.coutp);
        // a row pair reads transformed rows y - d, y, y + d, y + 2d at once: 3d + 1 slots (which also
        // keep every row until its last reader: each row is transformed once), 2d + 1 for single rows
        l.wino.init(W_, l.d, l.cin, /*point_major=*/false, l.pair ? 3 * l.d + 1 : 0);
        if (l.pair) {
          l.wg2p = l.wgp + winograd_pair_offset(l.cin, l.coutp);
          l.stash_len = (W_ + 4 * pad_) * l.coutp + 16;
          l.stash.assign(l.d * l.stash_len, 0.f);
          l.stash_tag.assign(l.d, INT64_MIN);
        }
      }
      if (l.kind == Kind::WeightGrad && l.gwp) {
        l.pair = wgrad_pairs_apply(l.gwq != nullptr);
        l.wino.init(W_, l.d, l.cin, /*point_major=*/true, l.pair ? 3 * l.d + 1 : 0);
      }
    }
#endif
    // the layers that read the saved la straight from the tensor need dense channels-last rows
    // without padding channels
    auto dense = [&](const ImageView<T>& im, int64_t ch) { return im.data && im.sc == 1 && im.sw == im.C && im.C == ch; };
    TORCH_CHECK(l.kind != Kind::LoadSplit || l.out >= 0 ||
                    (dense(l.image, stores_[l.aux].ch) && stores_[l.out2].ch == l.image.C),
                "derain: internal error: LoadSplit without a la store needs dense rows");
    TORCH_CHECK(l.kind != Kind::Conv || l.epi != Epilogue::BackwardE || l.aux2 >= 0 || dense(l.image2, l.coutp),
                "derain: internal error: BackwardE reading la from the tensor needs dense rows");
    layers_.push_back(std::move(l));
    return static_cast<int>(layers_.size()) - 1;
  }
  Layer<T>& layer(int i) { return layers_[i]; }
  // false: convolutions use the direct kernels (set before adding layers; see winograd_fits)
  void allow_winograd(bool ok) { winograd_ok_ = ok; }

  // Computes final rows [r0, r1) (and whatever halo the layers need).
  void run(int64_t r0, int64_t r1) {
    plan(r0, r1);
    allocate();
    reset();
    std::vector<T> acc((W_ + 4 * pad_) * max_coutp_ + 16);  // Winograd tiles may end past W
    bool busy = true;
    while (busy) {
      busy = false;
      for (size_t i = 0; i < layers_.size(); ++i) {
        Layer<T>& l = layers_[i];
        if (l.next >= l.hi) continue;
        busy = true;
        if (!ready(l)) continue;
        compute(l, l.next, acc.data());
        ++l.next;
      }
    }
#if defined(__AVX512F__)
    // Rows written with non-temporal stores become visible to other threads (and the caller) after
    // this fence; the task's end (an OpenMP barrier) comes after it. No other thread reads a
    // pipeline's output rows while it runs, so one fence per run is enough: a fence after every
    // streamed row waited for that row to reach memory (training step at 8x16x128^2 1.1 % slower).
    _mm_sfence();
#endif
  }

 private:
  struct Store {
    int64_t ch = 0, cap = 1, rowlen = 0;
    FastMod modcap;  // y mod cap
    std::vector<T> data;
  };

  void plan(int64_t r0, int64_t r1) {
    const int n = static_cast<int>(layers_.size());
    std::vector<int64_t> lag(n, -1);
    for (int i = n - 1; i >= 0; --i) {
      if (lag[i] < 0) lag[i] = 0;  // a final layer
      for (auto& dep : layers_[i].deps) lag[dep.first] = std::max(lag[dep.first], lag[i] + dep.second);
    }
    max_coutp_ = 1;
    for (int i = 0; i < n; ++i) {
      Layer<T>& l = layers_[i];
      l.mod2d = FastMod(2 * std::max<int64_t>(l.d, 1));
      l.lag = lag[i];
      l.lo = std::max<int64_t>(0, r0 - lag[i]);
      l.hi = std::min<int64_t>(H_, r1 + lag[i]);
      if (l.kind == Kind::Conv) max_coutp_ = std::max(max_coutp_, l.coutp);
    }
    // consumers of every layer, for the ring capacities
    consumers_.assign(n, {});
    for (int i = 0; i < n; ++i)
      for (auto& dep : layers_[i].deps) consumers_[dep.first].push_back({i, dep.second});
    // replay the schedule on counters: capacity = widest live window of rows
    caps_.assign(stores_.size(), 1);
    reset();
    bool busy = true;
    while (busy) {
      busy = false;
      for (int i = 0; i < n; ++i) {
        Layer<T>& l = layers_[i];
        if (l.next >= l.hi) continue;
        busy = true;
        if (!ready(l)) continue;
        int64_t min_needed = l.next;
        for (auto& c : consumers_[i]) {
          const Layer<T>& cl = layers_[c.first];
          if (cl.next < cl.hi) min_needed = std::min(min_needed, cl.next - c.second);
        }
        const int64_t window = l.next - min_needed + 1;
        for (int s : {l.out, l.out2})
          if (s >= 0) caps_[s] = std::max(caps_[s], window);
        ++l.next;
      }
    }
  }

  void allocate() {
    store_data_.resize(stores_.size());
    int64_t chmax = 1;
    for (size_t s = 0; s < stores_.size(); ++s) {
      Store& st = store_data_[s];
      st.ch = stores_[s].ch;
      st.cap = caps_[s];
      st.modcap = FastMod(st.cap);
      st.rowlen = (W_ + pad_ + rpad_) * st.ch;
      st.data.assign(st.cap * st.rowlen, T(0));
      chmax = std::max(chmax, st.ch);
    }
    zero_.assign((W_ + pad_ + rpad_) * chmax + 16, T(0));
    gather_.assign(W_ * chmax + 16, T(0));
    zero_chmax_ = chmax;
  }

  void reset() {
    for (auto& l : layers_) l.next = l.lo;
  }

  // Asks for row y of a channels-last tensor ahead of its load (a row is read long after
  // the previous one: all layers run in between, so the hardware prefetcher does not
  // see a stream and every row load would wait on memory).
  void prefetch_image_row(const ImageView<T>& im, int64_t y) const {
    if (im.sc != 1 || y >= H_ || im.sw != im.C) return;
    const char* p = reinterpret_cast<const char*>(im.data + y * im.sh);
    const int64_t bytes = W_ * im.C * static_cast<int64_t>(sizeof(T));
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
  }

  // Row pairs by image row, not by band (so that a row rounds the same way in every band and tile it
  // falls in, except within d rows of a layer's range ends): rows y with y mod 2d < d are heads (they
  // compute rows y and y + d) when y + d is in the layer's range, the rows d below them their tails;
  // a row whose partner is out of range is computed alone.
  // y mod d (y mod 2d folded once): the stash slot of a pair's rows
  static int64_t stash_slot(const Layer<T>& l, int64_t y) {
    const int64_t s = static_cast<int64_t>(l.mod2d(y));
    return s >= l.d ? s - l.d : s;
  }
  static bool pair_head(const Layer<T>& l, int64_t y) {
    return l.pair && static_cast<int64_t>(l.mod2d(y)) < l.d && y + l.d < l.hi;
  }
  static bool pair_tail(const Layer<T>& l, int64_t y) {
    return l.pair && static_cast<int64_t>(l.mod2d(y)) >= l.d && y - l.d >= l.lo;
  }

  bool ready(const Layer<T>& l) const {
    const int64_t y = l.next;
    // a head reads its input store d rows further (rows y - d .. y + 2d)
    const bool head = pair_head(l, y);
    for (auto& dep : l.deps) {
      const Layer<T>& p = layers_[dep.first];
      // (a weight-gradient head also reads gradient rows y and y + d)
      const bool feeds_input = p.out == l.in || p.out2 == l.in ||
                               (l.kind == Kind::WeightGrad && (p.out == l.aux || p.out2 == l.aux));
      const int64_t reach = dep.second + (head && feeds_input ? l.d : 0);
      if (p.next < std::min(y + reach + 1, p.hi)) return false;
    }
    return true;
  }

  // Pointer to pixel 0 (channel offset choff) of row y of store s; zeros outside the image.
  const T* row(int s, int64_t y, int64_t choff) const {
    const Store& st = store_data_[s];
    if (y < 0 || y >= H_) return zero_.data() + pad_ * zero_chmax_;
    return st.data.data() + static_cast<int64_t>(st.modcap(y)) * st.rowlen + pad_ * st.ch + choff;
  }
  T* mrow(int s, int64_t y, int64_t choff) { return const_cast<T*>(row(s, y, choff)); }

  // Row y of layer l (acc: scratch for a convolution's accumulators).
  void compute(Layer<T>& l, int64_t y, T* acc) {
    switch (l.kind) {
      case Kind::LoadImage:
        load_image_row(l.image, y, mrow(l.out, y, l.out_choff), store_data_[l.out].ch);
        return;
      case Kind::LoadSplit:
        load_split_row(l, y);
        return;
      case Kind::LoadGradMask:
        if (l.sign_mask)
          load_grad_mask<true>(l, y);
        else
          load_grad_mask<false>(l, y);
        return;
      case Kind::WeightGrad:
        weight_grad_row(l, y);
        return;
      case Kind::Conv:
        break;
    }
    apply_epilogue(l, y, conv_layer_row(l, y, acc));
  }

  // la = |saved la| (its sign bit carries the final ReLU's mask), e = x - la
  DERAIN_ALWAYS_INLINE void load_split_row(Layer<T>& l, int64_t y) {
    const int64_t W = W_;
    const T* xs = row(l.aux, y, l.aux_choff);
    T* e = mrow(l.out2, y, l.out2_choff);
    const int64_t C = l.image.C;
    if (l.out < 0) {  // e only (la is read from the tensor where needed); dense rows (add_layer)
      const T* src = l.image.data + y * l.image.sh;
      prefetch_image_row(l.image, y + 1);
#pragma omp simd
      for (int64_t i = 0; i < W * C; ++i) e[i] = xs[i] - std::fabs(src[i]);
      return;
    }
    // other layouts and padded channels: |la| into ring rows first
    T* la = mrow(l.out, y, l.out_choff);
    const int64_t ps = store_data_[l.out].ch, psx = store_data_[l.aux].ch, pse = store_data_[l.out2].ch;
    load_image_row(l.image, y, la, ps);
    if (ps == C && psx == C && pse == C) {
#pragma omp simd
      for (int64_t i = 0; i < W * C; ++i) {
        la[i] = std::fabs(la[i]);
        e[i] = xs[i] - la[i];
      }
    } else {
      for (int64_t x = 0; x < W; ++x)
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          la[x * ps + c] = std::fabs(la[x * ps + c]);
          e[x * pse + c] = xs[x * psx + c] - la[x * ps + c];
        }
    }
  }

  // Row y of a weight-gradient layer: accumulated into the layer's sums (rows in pairs: with the head)
  DERAIN_ALWAYS_INLINE void weight_grad_row(Layer<T>& l, int64_t y) {
    const int64_t W = W_;
    const T* rows[3] = {row(l.in, y - l.d, l.in_choff), row(l.in, y, l.in_choff), row(l.in, y + l.d, l.in_choff)};
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value) {
      if (l.gwp && pair_tail(l, y)) return;  // accumulated with its head
      if (l.gwp && pair_head(l, y)) {  // rows y and y + d
        const T* rows4[4] = {rows[0], rows[1], rows[2], row(l.in, y + 2 * l.d, l.in_choff)};
        wgrad_rows_pair_winograd_avx512(rows4, y, store_data_[l.in].ch, l.cin, l.d, row(l.aux, y, l.aux_choff),
                                        row(l.aux, y + l.d, l.aux_choff), l.coutp, l.gwq, l.gb, wino_scratch_,
                                        l.wino);
        return;
      }
      if (l.gwp) {  // Winograd point sums ([3][6][cin][coutp], turned into taps by wino_points_to_taps)
        int64_t ids[3];
        for (int k = 0; k < 3; ++k) {
          const int64_t r = y + (k - 1) * l.d;
          ids[k] = r >= 0 && r < H_ ? r : -1;
        }
        wgrad_row_winograd_avx512(rows, ids, store_data_[l.in].ch, l.cin, l.d, row(l.aux, y, l.aux_choff),
                                  l.coutp, l.gwp, l.gb, wino_scratch_, l.wino);
        return;
      }
    }
#endif
    wgrad_row<T>(rows, store_data_[l.in].ch, l.cin, l.d, row(l.aux, y, l.aux_choff), l.coutp, l.gw, l.gb, W);
  }

  // The accumulators of row y of convolution layer l: computed into acc, or (the second row of a
  // pair) taken from the stash, where its head put them.
  DERAIN_ALWAYS_INLINE T* conv_layer_row(Layer<T>& l, int64_t y, T* acc) {
    const int64_t W = W_;
    const int64_t cp = l.coutp;
    const T* rows[3] = {row(l.in, y - l.d, l.in_choff), row(l.in, y, l.in_choff), row(l.in, y + l.d, l.in_choff)};
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value) {
      if (pair_tail(l, y)) {  // computed with its head: take it from the stash
        const int64_t s = stash_slot(l, y);
        TORCH_CHECK(l.stash_tag[s] == y, "derain: internal error: row pair schedule");
        l.stash_tag[s] = INT64_MIN;
        acc = l.stash.data() + s * l.stash_len;
      } else if (pair_head(l, y)) {  // rows y (into acc) and y + d (into the stash)
        const T* rows4[4] = {rows[0], rows[1], rows[2], row(l.in, y + 2 * l.d, l.in_choff)};
        const int64_t s = stash_slot(l, y);  // the slot of row y + d
        conv_rows_pair_winograd(rows4, y, l.wino, store_data_[l.in].ch, l.cin, l.d, l.wg2p, l.w, l.b, acc,
                                l.stash.data() + s * l.stash_len, W);
        l.stash_tag[s] = y + l.d;
      } else if (l.wgp) {
        conv_row_winograd(rows, y, l.wino, store_data_[l.in].ch, l.cin, l.d, l.wgp, l.w, l.b, cp, acc, W);
      } else {
        conv_row<T>(rows, store_data_[l.in].ch, l.cin, l.d, l.w, l.b, cp, acc, W);
      }
    } else
#endif
    conv_row<T>(rows, store_data_[l.in].ch, l.cin, l.d, l.w, l.b, cp, acc, W);
    return acc;
  }

  // The epilogue of convolution layer l on the accumulators of its row y (epilogues.h).
  DERAIN_ALWAYS_INLINE void apply_epilogue(Layer<T>& l, int64_t y, T* acc) {
    const int64_t W = W_;
    const int64_t cp = l.coutp;
    switch (l.epi) {
      case Epilogue::Relu:
        relu_epilogue(acc, cp, mrow(l.out, y, l.out_choff), store_data_[l.out].ch, W);
        return;
      case Epilogue::ReluSplit:
        relu_split_epilogue(acc, cp, mrow(l.out, y, l.out_choff), store_data_[l.out].ch, mrow(l.out2, y, l.out2_choff),
                            store_data_[l.out2].ch, row(l.aux, y, l.aux_choff), store_data_[l.aux].ch, W);
        return;
      case Epilogue::AddRelu:
        add_relu_epilogue(acc, cp, mrow(l.out, y, l.out_choff), store_data_[l.out].ch, row(l.aux, y, l.aux_choff),
                          store_data_[l.aux].ch, W);
        return;
      case Epilogue::AddReluImage:
        add_relu_image_epilogue(acc, cp, row(l.aux, y, l.aux_choff), store_data_[l.aux].ch, l.image, l.image2, y, W,
                                fused_epi_, gather_.data());
        return;
      case Epilogue::TanhSubImage:
        tanh_sub_image_epilogue(acc, cp, l.image, l.image2, y, W);
        return;
      case Epilogue::BackwardE: {
        // la from its ring rows, or (aux2 unset) straight from the saved la, whose sign bit carries
        // the final ReLU's mask (so the test is |la| > 0; add_layer checked its rows are dense)
        const bool saved = l.aux2 < 0;
        const T* la = saved ? l.image2.data + y * l.image2.sh : row(l.aux2, y, l.aux2_choff);
        const int64_t psl = saved ? l.image2.sw : store_data_[l.aux2].ch;
        backward_e_epilogue(acc, cp, mrow(l.out, y, l.out_choff), store_data_[l.out].ch, mrow(l.out2, y, l.out2_choff),
                            store_data_[l.out2].ch, row(l.aux, y, l.aux_choff), store_data_[l.aux].ch, la, psl, saved,
                            W);
        return;
      }
      case Epilogue::AddImage:
        add_image_epilogue(acc, cp, row(l.aux, y, l.aux_choff), store_data_[l.aux].ch, l.image, y, W, fused_epi_);
        return;
      case Epilogue::ReluImage:
        relu_image_epilogue(acc, cp, l.image, y, W);
        return;
      case Epilogue::SplitImage:
        split_image_epilogue(acc, cp, l.image, l.image2, l.image2_choff, y, W);
        return;
    }
  }

  // grad * [mask]: mask = image2 > 0 (the output of the final ReLU), or with SIGN the sign bit of
  // image2 clear (the saved la of the training pair, whose sign bit carries that mask).
  template <bool SIGN>
  static bool passes(T m) {
    if constexpr (SIGN)
      return !std::signbit(m);
    else
      return m > T(0);
  }
  template <bool SIGN>
  void load_grad_mask(const Layer<T>& l, int64_t y) {
    const int64_t W = W_;
    const int64_t ch = store_data_[l.out].ch;
    T* o = mrow(l.out, y, l.out_choff);
    const ImageView<T>& g = l.image;
    const ImageView<T>& m = l.image2;
    const T* gs = g.data + y * g.sh;
    const T* ms = m.data + y * m.sh;
    const T zero(0);
    prefetch_image_row(g, y + 1);
    prefetch_image_row(m, y + 1);
    if (g.sc == 1 && m.sc == 1 && g.sw == g.C && m.sw == g.C && ch == g.C) {  // dense rows: one flat loop
      const int64_t n = W * g.C;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const T gv = gs[i];  // read unconditionally: a select, not a merge-masked load
        o[i] = passes<SIGN>(ms[i]) ? gv : zero;
      }
    } else if (g.sc == 1 && m.sc == 1) {
      for (int64_t x = 0; x < W; ++x) {
        const T* gx = gs + x * g.sw;
        const T* mx = ms + x * m.sw;
        T* ox = o + x * ch;
#pragma omp simd
        for (int64_t c = 0; c < g.C; ++c) ox[c] = passes<SIGN>(mx[c]) ? gx[c] : zero;
      }
    } else if (g.sc == 0 && g.sw == 0 && m.sc == 1 && m.sw == g.C && ch == g.C) {  // constant row, dense mask
      const T gv = gs[0];
      const int64_t n = W * g.C;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = passes<SIGN>(ms[i]) ? gv : zero;
    } else if (g.sc == 0 && g.sw == 0 && m.sc == 1) {  // a constant row (the gradient of .sum())
      const T gv = gs[0];
      for (int64_t x = 0; x < W; ++x) {
        const T* mx = ms + x * m.sw;
        T* ox = o + x * ch;
#pragma omp simd
        for (int64_t c = 0; c < g.C; ++c) ox[c] = passes<SIGN>(mx[c]) ? gv : zero;
      }
    } else {
      // any strides: gather gradient and mask into pixel-major rows (plain copies), then
      // select branch-free (a branch on a random ReLU mask mispredicts half the time)
      T* mrow_buf = gather_.data();
      for (int64_t c = 0; c < g.C; ++c) {
        const T* gc = gs + c * g.sc;
        const T* mc = ms + c * m.sc;
        for (int64_t x = 0; x < W; ++x) {
          o[x * ch + c] = gc[x * g.sw];
          mrow_buf[x * g.C + c] = mc[x * m.sw];
        }
      }
      for (int64_t x = 0; x < W; ++x) {
        T* ox = o + x * ch;
        const T* mx = mrow_buf + x * g.C;
#pragma omp simd
        for (int64_t c = 0; c < g.C; ++c) ox[c] = passes<SIGN>(mx[c]) ? ox[c] : zero;
      }
    }
  }

  // Row y of a tensor (its first C channels) into a store row of ch channels per pixel.
  void load_image_row(const ImageView<T>& im, int64_t y, T* o, int64_t ch) const {
    const T* src = im.data + y * im.sh;
    prefetch_image_row(im, y + 1);
    if (im.sc == 1 && im.sw == im.C && ch == im.C) {  // dense channels-last row: one copy
      std::copy(src, src + W_ * im.C, o);
    } else if (im.sc == 1) {  // channels-last: pixel by pixel, channels contiguous
      for (int64_t x = 0; x < W_; ++x) {
        const T* sx = src + x * im.sw;
        T* ox = o + x * ch;
#pragma omp simd
        for (int64_t c = 0; c < im.C; ++c) ox[c] = sx[c];
      }
    } else {
      for (int64_t c = 0; c < im.C; ++c) {
        const T* sc = src + c * im.sc;
        for (int64_t x = 0; x < W_; ++x) o[x * ch + c] = sc[x * im.sw];
      }
    }
  }

 private:
  int64_t H_, W_, pad_, rpad_;
  bool fused_epi_ = true;
  bool winograd_ok_ = true;
  int64_t max_coutp_ = 16;
  int64_t zero_chmax_ = 1;
  std::vector<StoreSpec> stores_;
  std::vector<Store> store_data_;
  std::vector<int64_t> caps_;
  std::vector<Layer<T>> layers_;
  std::vector<std::vector<std::pair<int, int64_t>>> consumers_;
  std::vector<T> zero_;
  std::vector<T> gather_;  // one pixel-major row of a strided tensor (LoadGradMask)
  std::vector<T> wino_scratch_;  // transformed gradient row Z of the Winograd weight gradient
};

}  // namespace conv3x3
}  // namespace derain
