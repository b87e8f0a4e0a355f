// How the shared op implementations (csrc/ops/common/*_impl.h) run their
// per-element functors. Each implementation is a template on a launch policy:
//   CudaLaunch    (csrc/ops/cuda/launch.cuh): a grid-stride CUDA kernel / ATen's gpu_kernel;
//   EmulateLaunch (this file): a plain CPU loop over the same elements, calling the same functor.
// A policy provides
//   grid(n, f)            f(i) for every i in [0, n)
//   elementwise(iter, f)  out = f(in0, in1, ...) over a configured TensorIterator
//   blocks(n, threads, smem, f)  for each of n thread blocks with `smem` bytes of shared memory:
//                         f(phase, block, thread, smem) for phase = 0 .. f.phases() - 1, all the
//                         block's threads finishing a phase before any starts the next
//                         (__syncthreads() between phases on CUDA; in turn, in thread order, here)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

#include <tuple>
#include <utility>
#include <vector>

namespace derain {

struct EmulateLaunch {
  static constexpr bool is_cuda = false;

  template <typename F>
  static void grid(int64_t n, const F& f) {
    at::parallel_for(0, n, 1024, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) f(i);
    });
  }

  template <typename F>
  static void blocks(int64_t n, int threads, int64_t smem_bytes, const F& f) {
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      std::vector<uint64_t> smem((smem_bytes + 7) / 8);
      unsigned char* mem = reinterpret_cast<unsigned char*>(smem.data());
      for (int64_t b = b0; b < b1; ++b)
        for (int phase = 0, phases = f.phases(); phase < phases; ++phase)
          for (int t = 0; t < threads; ++t) f(phase, b, t, mem);
    });
  }

  // F::arity inputs of type scalar_t, one output of type F::result_type.
  template <typename scalar_t, typename F>
  static void elementwise(at::TensorIteratorBase& iter, const F& f) {
    using out_t = typename F::result_type;
    iter.for_each([&](char** data, const int64_t* strides, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        auto in = [&](int k) { return *reinterpret_cast<const scalar_t*>(data[k] + i * strides[k]); };
        out_t* o = reinterpret_cast<out_t*>(data[0] + i * strides[0]);
        if constexpr (F::arity == 2) {
          *o = f(in(1), in(2));
        } else {
          *o = f(in(1), in(2), in(3));
        }
      }
    });
  }
};

}  // namespace derain
