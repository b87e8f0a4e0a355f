// Weights and biases of the 3x3 convolution engine's layers: channel padding, the [tap][cin][coutp]
// layout of the kernels and the Winograd transform of the weights, prepared once per op.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "winograd_transforms.h"

namespace derain {
namespace conv3x3 {

// Channel count of internal rows and accumulators: a multiple of 16, so that
// every kernel works on blocks of 16 output channels (one AVX-512 register of
// float; the padding channels carry zero weights and stay zero).
template <typename T>
inline int64_t padded_channels(int64_t c) {
  return (c + 15) / 16 * 16;
}

// Where input channel i of a convolution over cat(a, b) (a's c1 channels first) sits in a store row
// that holds b's channels from xoff on (a's count rounded up to 16): the network's and
// conv3x3_relu's aggregations read both maps from one row without a concatenated tensor. The
// default is no split.
struct CatChannels {
  int64_t c1 = INT64_MAX, xoff = 0;
  int64_t operator()(int64_t i) const { return i < c1 ? i : xoff + i - c1; }
};

// Weights of a conv (cout, cin, 3, 3) laid out as [tap][cin][coutp] (zero
// padded in both channel counts up to cin_p, coutp; input channels placed by `cat`).
// `transposed` gives the weights of the adjoint (input-gradient) convolution:
// taps flipped, roles of cin and cout swapped (the result maps cout channels to cin channels).
template <typename T>
std::vector<T> relayout_weight(const at::Tensor& w, int64_t cin_p, int64_t coutp, bool transposed = false,
                               CatChannels cat = {}) {
  at::Tensor wc = w.contiguous();
  const T* src = wc.data_ptr<T>();
  const int64_t co_n = w.size(0), ci_n = w.size(1);
  std::vector<T> out(9 * cin_p * coutp, T(0));
  for (int64_t co = 0; co < co_n; ++co)
    for (int64_t ci = 0; ci < ci_n; ++ci)
      for (int t = 0; t < 9; ++t) {
        T v = src[(co * ci_n + ci) * 9 + t];
        if (!transposed) {
          out[(t * cin_p + cat(ci)) * coutp + co] = v;
        } else {  // input channel co of the adjoint, output channel ci, tap flipped
          out[((8 - t) * cin_p + co) * coutp + cat(ci)] = v;
        }
      }
  return out;
}

template <typename T>
std::vector<T> relayout_bias(const at::Tensor& b, int64_t coutp) {
  std::vector<T> out(coutp, T(0));
  if (b.defined()) {
    at::Tensor bc = b.contiguous();
    for (int64_t i = 0; i < b.numel(); ++i) out[i] = bc.data_ptr<T>()[i];
  }
  return out;
}

// Winograd weights of direct weights w ([9][cin][coutp], relayout_weight), computed once per op and
// shared by the pipelines of all tasks through Layer::wg_shared; empty where no Winograd kernel
// exists (double, other channel counts, non-AVX-512 builds, config conv_winograd=False). They do not
// depend on the dilation (add_layer still checks it).
template <typename T>
std::vector<T> winograd_weights_for(const std::vector<T>& w, int64_t cin, int64_t coutp) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (!w.empty() && conv_winograd_applies<T>(cin, 1)) return winograd_weights(w.data(), cin, coutp);
  }
#endif
  return {};
}

}  // namespace conv3x3
}  // namespace derain
