// SIMD helpers shared by the CPU kernels: the intrinsics header where the build targets an x86
// vector extension, `omp simd` in macro form, forced inlining and 64-byte alignment.
#pragma once

#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX512BW__) || defined(__AVX2__) || defined(__BMI2__)
#include <immintrin.h>
#endif

// `#pragma omp simd` usable inside macro arguments (AT_DISPATCH_* bodies); the same definition as
// elementwise.h's, so either header may come first.
#ifndef DERAIN_SIMD
#define DERAIN_SIMD _Pragma("omp simd")
#endif

// Inlined whatever the compiler's size heuristics say: for helpers split out of one hot loop or
// function, so that the split does not change the code the loop compiles to.
#define DERAIN_ALWAYS_INLINE __attribute__((always_inline)) inline

namespace derain {

// First 64-byte aligned address at or after p (p from a buffer with 16 floats of slack).
inline float* align_floats64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~static_cast<uintptr_t>(63));
}

}  // namespace derain
