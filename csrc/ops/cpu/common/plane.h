// Addressing images, planes and rows of tensors of any strides, and splitting images into bands of
// rows for the threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace derain {

// Offsets (in elements) of every (H, W) plane of t (the last two dimensions), for any strides.
inline std::vector<int64_t> plane_offsets(const at::Tensor& t) {
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

// Whether the output of a 4-D op is channels-last: exactly when x is channels-last and not also
// contiguous (mirrored by the fake-tensor rules in derain_kernels/ops/block.py).
inline bool channels_last_output(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

// Tensors of at least this many bytes are written with non-temporal stores: they do not fit the
// caches anyway, and a plain store first reads every line it writes (the pages are fresh, zeroed
// by the kernel). Measured on the block at 8x16x128^2 (8 MiB out): forward 4-5 % faster, the
// backward (8 MiB gradient) 1-3 %, one thread.
constexpr int64_t kStreamBytes = int64_t(4) << 20;

// A strided 3-D view (C, H, W) of one image of a tensor.
template <typename T>
struct ImageView {
  T* data = nullptr;
  int64_t C = 0, sc = 0, sh = 0, sw = 0;
  bool stream = false;  // rows written with non-temporal stores (see kStreamBytes)
  T& at(int64_t c, int64_t y, int64_t x) const { return data[c * sc + y * sh + x * sw]; }
};

// Image n of a 4-D tensor (N, C, H, W).
template <typename T>
ImageView<T> image_view(const at::Tensor& t, int64_t n) {
  ImageView<T> v;
  v.data = const_cast<T*>(t.const_data_ptr<T>()) + n * t.stride(0);
  v.C = t.size(1);
  v.sc = t.stride(1);
  v.sh = t.stride(2);
  v.sw = t.stride(3);
  v.stream = static_cast<int64_t>(t.nbytes()) >= kStreamBytes;
  return v;
}

// Bands per image so that (images x bands) keeps every thread busy, each of at least min_rows rows
// (where the image has them).
inline int64_t bands_per_image(int64_t N, int64_t H, int64_t min_rows) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  if (N >= threads) return 1;
  const int64_t nb = (threads + N - 1) / N;
  return std::max<int64_t>(1, std::min<int64_t>(nb, H / min_rows));
}

}  // namespace derain
