// The epilogues of the 3x3 convolution engine: what a convolution layer does with the accumulators
// of one output row (acc: W pixels x cp channels, bias included) before the row is stored. Each
// epilogue is a loop over the row's pixels in plain C++ (every dtype, layout and build) and, for the
// epilogues that end in tensors, one AVX-512 pass over dense rows of float.
// Rows: o, o2 (written) and aux rows (read) hold ps, ps2, psa, ... channels per pixel (a store's
// channel count); "flat" loops run over W * cp values at once where every row is dense.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../common/plane.h"
#include "../common/simd.h"

namespace derain {
namespace conv3x3 {

enum class Epilogue {
  Relu,         // out = relu(acc)
  ReluSplit,    // out = la = relu(acc); out2 = aux - la
  AddRelu,      // out = relu(acc + aux)
  AddReluImage, // image = relu(acc + aux); when image2 is set, image2 = aux with its sign bit set
                //   where image is not > 0 (the training pair's la, carrying the final ReLU's mask)
  TanhSubImage, // image = image2 - tanh(acc)
  BackwardE,    // out = ge = acc; out2 = gp = (aux - ge) * [aux2 > 0], or with aux2 unset * [|image2| > 0]
  AddImage,     // image = acc + aux
  ReluImage,    // image = relu(acc)
  SplitImage,   // image = acc (its first image.C channels); image2 = acc from channel image2_choff on
};

#if defined(__AVX512F__)
// One pass over dense rows of n floats (n % 16 == 0) for the epilogues that end in tensors; S, S2:
// non-temporal stores to out / out2 (64-byte aligned rows). Each computes exactly what its scalar
// epilogue below computes (that loop serves other dtypes, layouts and builds, and runs
// with config fused_epilogues=False); the training pair's final epilogue took four passes over the
// row: with the input gradient's add (and a one-pass split of the saved la, since replaced by
// reading it in place) the training step at 8x16x128^2 became 2.4-3.4 % faster.
// f(std::true_type()) or f(std::false_type()): whether a row is streamed, as a template argument
template <class F>
inline void stream_dispatch(bool s, F&& f) {
  if (s)
    f(std::true_type());
  else
    f(std::false_type());
}
template <bool S>
inline void store16(float* p, __m512 v) {
  if constexpr (S)
    _mm512_stream_ps(p, v);
  else
    _mm512_storeu_ps(p, v);
}
// out = relu(acc + aux) (v < 0 ? 0 : v, so NaN stays NaN); out2 = aux with its sign bit set where
// out is not > 0, else cleared (the training pair's la carrying the final ReLU's mask).
template <bool S, bool S2>
inline void add_relu_mask_row_avx512(const float* acc, const float* aux, float* out, float* out2, int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i sign = _mm512_set1_epi32(INT32_MIN);
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 a = _mm512_loadu_ps(aux + i);
    __m512 v = _mm512_add_ps(_mm512_loadu_ps(acc + i), a);
    v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
    const __m512i mag = _mm512_andnot_si512(sign, _mm512_castps_si512(a));
    const __m512i neg = _mm512_or_si512(mag, sign);
    store16<S>(out + i, v);
    store16<S2>(out2 + i, _mm512_castsi512_ps(_mm512_mask_mov_epi32(neg, _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), mag)));
  }
}
// out = relu(acc + aux) (the plain forward's last epilogue)
template <bool S>
inline void add_relu_row_avx512(const float* acc, const float* aux, float* out, int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(aux + i));
    store16<S>(out + i, _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero));
  }
}
// out = acc + aux
template <bool S>
inline void add_row_avx512(const float* acc, const float* aux, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) store16<S>(out + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(aux + i)));
}
#endif  // __AVX512F__

// A dense channels-last row of cp channels per pixel in whole vectors (the fused epilogues' rows).
template <typename T>
inline bool dense_row(const ImageView<T>& im, int64_t cp, int64_t W) {
  return im.sc == 1 && im.sw == im.C && cp == im.C && (W * cp) % 16 == 0;
}
template <typename T>
inline bool streams(const ImageView<T>& im, const T* row) {
  return im.stream && reinterpret_cast<uintptr_t>(row) % 64 == 0;
}

// Row y of image im (its first im.C channels) from acc (cp channels per pixel).
template <typename T>
inline void write_image(const ImageView<T>& im, int64_t y, const T* acc, int64_t cp, int64_t W) {
  if (im.sc == 1 && im.sw == im.C && cp == im.C) {  // dense channels-last row: one copy
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value) {
      T* dst = im.data + y * im.sh;
      const int64_t n = W * cp;
      if (im.stream && reinterpret_cast<uintptr_t>(dst) % 64 == 0 && n % 16 == 0) {
        for (int64_t i = 0; i < n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(acc + i));
        return;
      }
    }
#endif
    std::copy(acc, acc + W * cp, im.data + y * im.sh);
  } else if (im.sc == 1) {
    T* base = im.data + y * im.sh;
    for (int64_t x = 0; x < W; ++x) {
      T* o = base + x * im.sw;
      const T* a = acc + x * cp;
#pragma omp simd
      for (int64_t c = 0; c < im.C; ++c) o[c] = a[c];
    }
  } else {
    for (int64_t c = 0; c < im.C; ++c) {
      T* o = im.data + c * im.sc + y * im.sh;
      const T* a = acc + c;
      for (int64_t x = 0; x < W; ++x) o[x * im.sw] = a[x * cp];
    }
  }
}

// Epilogue::Relu
template <typename T>
DERAIN_ALWAYS_INLINE void relu_epilogue(const T* acc, int64_t cp, T* o, int64_t ps, int64_t W) {
  const T zero(0);
  for (int64_t x = 0; x < W; ++x) {
    const T* a = acc + x * cp;
    T* ox = o + x * ps;
#pragma omp simd
    for (int64_t c = 0; c < cp; ++c) ox[c] = a[c] < zero ? zero : a[c];
  }
}

// Epilogue::ReluSplit (xs: the aux row)
template <typename T>
DERAIN_ALWAYS_INLINE void relu_split_epilogue(const T* acc, int64_t cp, T* o, int64_t ps, T* o2, int64_t ps2,
                                              const T* xs, int64_t psx, int64_t W) {
  const T zero(0);
  const bool flat = ps == cp && ps2 == cp && psx == cp;  // every row dense: one loop over W * cp values
  const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
  for (int64_t x = 0; x < npx; ++x) {
    const T* a = acc + x * cp;
    T* ox = o + x * ps;
    T* o2x = o2 + x * ps2;
    const T* xx = xs + x * psx;
#pragma omp simd
    for (int64_t c = 0; c < len; ++c) {
      const T la = a[c] < zero ? zero : a[c];
      ox[c] = la;
      o2x[c] = xx[c] - la;
    }
  }
}

// Epilogue::AddRelu (as: the aux row)
template <typename T>
DERAIN_ALWAYS_INLINE void add_relu_epilogue(const T* acc, int64_t cp, T* o, int64_t ps, const T* as, int64_t psa,
                                            int64_t W) {
  const T zero(0);
  const bool flat = ps == cp && psa == cp;  // every row dense: one loop over W * cp values
  const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
  for (int64_t x = 0; x < npx; ++x) {
    const T* a = acc + x * cp;
    T* ox = o + x * ps;
    const T* ax = as + x * psa;
#pragma omp simd
    for (int64_t c = 0; c < len; ++c) {
      const T v = a[c] + ax[c];
      ox[c] = v < zero ? zero : v;
    }
  }
}

// Epilogue::AddReluImage into row y of im (and im2 where set); as: the aux row; fused: the AVX-512
// passes may run (config fused_epilogues); acc is overwritten; packed: scratch of W * cp values.
template <typename T>
DERAIN_ALWAYS_INLINE void add_relu_image_epilogue(T* acc, int64_t cp, const T* as, int64_t psa, const ImageView<T>& im,
                                                  const ImageView<T>& im2, int64_t y, int64_t W, bool fused,
                                                  T* packed) {
  const T zero(0);
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (fused && !im2.data && dense_row(im, cp, W) && psa == cp) {
      float* o = im.data + y * im.sh;
      const bool s = streams(im, o);
      stream_dispatch(s, [&](auto S) { add_relu_row_avx512<decltype(S)::value>(acc, as, o, W * cp); });
      return;
    }
    if (fused && im2.data && dense_row(im, cp, W) && dense_row(im2, cp, W) && psa == cp) {
      float* o = im.data + y * im.sh;
      float* o2 = im2.data + y * im2.sh;
      const bool s = streams(im, o), s2 = streams(im2, o2);
      stream_dispatch(s, [&](auto S) {
        stream_dispatch(s2, [&](auto S2) {
          add_relu_mask_row_avx512<decltype(S)::value, decltype(S2)::value>(acc, as, o, o2, W * cp);
        });
      });
      return;
    }
  }
#endif
  const bool flat = psa == cp;  // every row dense: one loop over W * cp values
  const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
  for (int64_t x = 0; x < npx; ++x) {
    T* a = acc + x * cp;
    const T* ax = as + x * psa;
#pragma omp simd
    for (int64_t c = 0; c < len; ++c) {
      const T v = a[c] + ax[c];
      a[c] = v < zero ? zero : v;
    }
  }
  write_image(im, y, acc, cp, W);
  if (im2.data) {  // la with the mask [out > 0] in its sign bit (la >= 0 or NaN)
    for (int64_t x = 0; x < npx; ++x) {
      const T* a = acc + x * cp;
      const T* ax = as + x * psa;
      T* px = packed + x * cp;
#pragma omp simd
      for (int64_t c = 0; c < len; ++c) px[c] = a[c] > zero ? std::fabs(ax[c]) : -std::fabs(ax[c]);
    }
    write_image(im2, y, packed, cp, W);
  }
}

// Epilogue::TanhSubImage: row y of dst = src - tanh(acc)
template <typename T>
DERAIN_ALWAYS_INLINE void tanh_sub_image_epilogue(const T* acc, int64_t cp, const ImageView<T>& dst,
                                                  const ImageView<T>& src, int64_t y, int64_t W) {
  for (int64_t c = 0; c < dst.C; ++c)
    for (int64_t x = 0; x < W; ++x) dst.at(c, y, x) = src.at(c, y, x) - std::tanh(acc[x * cp + c]);
}

// Epilogue::BackwardE (gq: the aux row; la: the aux2 row, or with abs_la the saved la, whose sign bit
// carries the final ReLU's mask, so the test is |la| > 0)
template <typename T>
DERAIN_ALWAYS_INLINE void backward_e_epilogue(const T* acc, int64_t cp, T* o, int64_t ps, T* o2, int64_t ps2,
                                              const T* gq, int64_t psq, const T* la, int64_t psl, bool abs_la,
                                              int64_t W) {
  const T zero(0);
  const bool flat = ps == cp && ps2 == cp && psq == cp && psl == cp;  // every row dense: one loop over W * cp values
  const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
  auto rows = [&](auto abs_la) {
    for (int64_t x = 0; x < npx; ++x) {
      const T* a = acc + x * cp;
      T* ox = o + x * ps;
      T* o2x = o2 + x * ps2;
      const T* qx = gq + x * psq;
      const T* lx = la + x * psl;
#pragma omp simd
      for (int64_t c = 0; c < len; ++c) {
        // both values read unconditionally: a select on lx > 0 then compiles to a
        // zero-masking subtract (with the read inside the select, GCC emits a merge-masked
        // load whose merge value goes through the stack: a store-forwarding chain per vector)
        const T av = a[c], gv = qx[c] - av;
        const T lv = decltype(abs_la)::value ? std::fabs(lx[c]) : lx[c];
        ox[c] = av;
        o2x[c] = lv > zero ? gv : zero;
      }
    }
  };
  if (abs_la)
    rows(std::true_type());
  else
    rows(std::false_type());
}

// Epilogue::AddImage into row y of im (as: the aux row; fused as for add_relu_image_epilogue; acc
// is overwritten)
template <typename T>
DERAIN_ALWAYS_INLINE void add_image_epilogue(T* acc, int64_t cp, const T* as, int64_t psa, const ImageView<T>& im,
                                             int64_t y, int64_t W, bool fused) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (fused && dense_row(im, cp, W) && psa == cp) {
      float* o = im.data + y * im.sh;
      const bool s = streams(im, o);
      stream_dispatch(s, [&](auto S) { add_row_avx512<decltype(S)::value>(acc, as, o, W * cp); });
      return;
    }
  }
#endif
  const bool flat = psa == cp;  // every row dense: one loop over W * cp values
  const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
  for (int64_t x = 0; x < npx; ++x) {
    T* a = acc + x * cp;
    const T* ax = as + x * psa;
#pragma omp simd
    for (int64_t c = 0; c < len; ++c) a[c] += ax[c];
  }
  write_image(im, y, acc, cp, W);
}

// Epilogue::ReluImage into row y of im (acc is overwritten)
template <typename T>
DERAIN_ALWAYS_INLINE void relu_image_epilogue(T* acc, int64_t cp, const ImageView<T>& im, int64_t y, int64_t W) {
  const T zero(0);
#pragma omp simd
  for (int64_t i = 0; i < W * cp; ++i) acc[i] = acc[i] < zero ? zero : acc[i];  // NaN stays NaN, as torch.relu
  write_image(im, y, acc, cp, W);
}

// Epilogue::SplitImage: the accumulators of one convolution into two tensors (the gradients of the
// two halves of a concatenation)
template <typename T>
DERAIN_ALWAYS_INLINE void split_image_epilogue(const T* acc, int64_t cp, const ImageView<T>& im,
                                               const ImageView<T>& im2, int64_t choff2, int64_t y, int64_t W) {
  write_image(im, y, acc, cp, W);
  if (im2.data) write_image(im2, y, acc + choff2, cp, W);
}

}  // namespace conv3x3
}  // namespace derain
