// Test-only ops `derain::_emulate_cuda_<op>`: the implementation that the
// CUDA kernel of `derain::<op>` runs (csrc/ops/common/*_impl.h), with its
// per-element functions called in a plain CPU loop (EmulateLaunch) instead of
// a CUDA grid. Same schema as the op. They exist so that the logic of the
// CUDA kernels (selection order, padding, NaN policy, SSIM terms, epilogues)
// is tested on machines without a GPU (tests/test_cuda_logic.py); they are
// not part of the public API.
#include <torch/library.h>

#include "common/block_impl.h"
#include "common/composite_impl.h"
#include "common/launch.h"
#include "common/median_impl.h"
#include "common/related_impl.h"
#include "common/ssim_impl.h"

namespace derain {

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("_emulate_cuda_min_composite(Tensor x, Tensor y) -> Tensor");
  m.def("_emulate_cuda_min_composite_backward(Tensor grad, Tensor x, Tensor y) -> (Tensor, Tensor)");
  m.def("_emulate_cuda_rain_composite(Tensor clean, Tensor rain, bool clamp=True) -> Tensor");
  m.def("_emulate_cuda_rain_composite_backward(Tensor grad, Tensor clean, Tensor rain, bool clamp=True) -> Tensor");
  m.def("_emulate_cuda_median_filter(Tensor x, int[2] kernel_size, str padding=\"reflect\") -> Tensor");
  m.def("_emulate_cuda_median_filter_backward(Tensor grad, Tensor x, int[2] kernel_size, str padding=\"reflect\") "
        "-> Tensor");
  m.def("_emulate_cuda_median_filter_with_index(Tensor x, int[2] kernel_size, str padding=\"reflect\") "
        "-> (Tensor, Tensor)");
  m.def("_emulate_cuda_dark_channel(Tensor x, int patch) -> (Tensor, Tensor)");
  m.def("_emulate_cuda_dark_channel_backward(Tensor grad, Tensor index, int channels) -> Tensor");
  m.def("_emulate_cuda_tv_sums(Tensor x, int p, str padding=\"valid\") -> Tensor");
  m.def("_emulate_cuda_tv_sums_backward(Tensor grad, Tensor x, int p, str padding=\"valid\") -> Tensor");
  m.def("_emulate_cuda_rain_direction_sums(Tensor z, Tensor z_gt, Tensor kernels) -> Tensor");
  m.def("_emulate_cuda_rain_direction_sums_backward(Tensor grad, Tensor z, Tensor z_gt, Tensor kernels) -> Tensor");
  m.def("_emulate_cuda_ssim(Tensor x, Tensor y, int window_size, float sigma, float data_range, str padding, "
        "str reduction, float k1, float k2) -> Tensor");
  m.def("_emulate_cuda_ssim_backward(Tensor grad, Tensor x, Tensor y, int window_size, float sigma, "
        "float data_range, str padding, str reduction, float k1, float k2) -> (Tensor, Tensor)");
  m.def("_emulate_cuda_ssim_backward_x(Tensor grad, Tensor x, Tensor y, int window_size, float sigma, "
        "float data_range, str padding, str reduction, float k1, float k2) -> Tensor");
  m.def("_emulate_cuda_ssim_with_grad(Tensor x, Tensor y, int window_size, float sigma, float data_range, "
        "str padding, str reduction, float k1, float k2, bool need_y) -> (Tensor, Tensor, Tensor)");
  m.def("_emulate_cuda_self_correcting_block(Tensor x, Tensor w1, Tensor b1, Tensor w3, Tensor b3, "
        "int dilation=3) -> Tensor");
  m.def("_emulate_cuda_self_correcting_block_backward(Tensor grad, Tensor x, Tensor out, Tensor w1, Tensor b1, "
        "Tensor w3, Tensor b3, int dilation=3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("_emulate_cuda_self_correcting_block_train(Tensor x, Tensor w1, Tensor b1, Tensor w3, Tensor b3, "
        "int dilation=3) -> (Tensor, Tensor)");
  m.def("_emulate_cuda_self_correcting_block_backward_la(Tensor grad, Tensor x, Tensor la, Tensor w1, Tensor w3, "
        "int dilation=3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("_emulate_cuda_rain_oer_me_derain(Tensor x, Tensor[] params, int dilation=3) -> Tensor");
}

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  using L = EmulateLaunch;
  m.impl("_emulate_cuda_min_composite", &composite_impl::min_composite<L>);
  m.impl("_emulate_cuda_min_composite_backward", &composite_impl::min_composite_backward<L>);
  m.impl("_emulate_cuda_rain_composite", &composite_impl::rain_composite<L>);
  m.impl("_emulate_cuda_rain_composite_backward", &composite_impl::rain_composite_backward<L>);
  m.impl("_emulate_cuda_median_filter", &median_impl::median_filter<L>);
  m.impl("_emulate_cuda_median_filter_backward", &median_impl::median_filter_backward<L>);
  m.impl("_emulate_cuda_median_filter_with_index", &median_impl::median_filter_with_index<L>);
  m.impl("_emulate_cuda_dark_channel", &related_impl::dark_channel<L>);
  m.impl("_emulate_cuda_dark_channel_backward", &related_impl::dark_channel_backward<L>);
  m.impl("_emulate_cuda_tv_sums", &related_impl::tv_sums<L>);
  m.impl("_emulate_cuda_tv_sums_backward", &related_impl::tv_sums_backward<L>);
  m.impl("_emulate_cuda_rain_direction_sums", &related_impl::rain_direction_sums<L>);
  m.impl("_emulate_cuda_rain_direction_sums_backward", &related_impl::rain_direction_sums_backward<L>);
  m.impl("_emulate_cuda_ssim", &ssim_impl::ssim<L>);
  m.impl("_emulate_cuda_ssim_backward", &ssim_impl::ssim_backward<L>);
  m.impl("_emulate_cuda_ssim_backward_x", &ssim_impl::ssim_backward_x<L>);
  m.impl("_emulate_cuda_ssim_with_grad", &ssim_impl::ssim_with_grad<L>);
  m.impl("_emulate_cuda_self_correcting_block", &block_impl::self_correcting_block<block_impl::AtenConv>);
  m.impl("_emulate_cuda_self_correcting_block_backward", &block_impl::self_correcting_block_backward);
  m.impl("_emulate_cuda_self_correcting_block_train", &block_impl::self_correcting_block_train<block_impl::AtenConv>);
  m.impl("_emulate_cuda_self_correcting_block_backward_la", &block_impl::self_correcting_block_backward_la);
  m.impl("_emulate_cuda_rain_oer_me_derain", &block_impl::rain_oer_me_derain<block_impl::AtenConv>);
}

}  // namespace derain
