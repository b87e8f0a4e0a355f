// Python entry point of derain_kernels._C.
//
// The operators themselves are registered with the dispatcher by static
// initialisers (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) in csrc/ops;
// importing this module is what runs them. The module only exposes
// build_info(): how the kernels were compiled, and empty_output_cache().
#include <Python.h>

#include "ops/cpu/output_cache.h"

#include <string>

namespace {

std::string build_flags() {
  std::string s;
#if defined(_OPENMP)
  s += "openmp ";
#endif
#if defined(__AVX512F__)
  s += "avx512f ";
#endif
#if defined(__AVX2__)
  s += "avx2 ";
#endif
#if defined(__FMA__)
  s += "fma ";
#endif
#if defined(__ARM_NEON)
  s += "neon ";
#endif
  if (!s.empty()) s.pop_back();
  return s;
}

PyObject* build_info(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s,s:i}", "flags", build_flags().c_str(),
                       "compiler", __VERSION__, "cplusplus",
                       static_cast<int>(__cplusplus));
}

PyObject* empty_output_cache(PyObject*, PyObject*) {
  return PyLong_FromLongLong(derain::output_cache::clear());
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS,
     "build_info() -> dict: compiler and instruction-set flags of the C++ kernels."},
    {"empty_output_cache", empty_output_cache, METH_NOARGS,
     "empty_output_cache() -> int: frees the kept buffers of freed outputs (csrc/ops/cpu/output_cache.h); "
     "returns the bytes freed."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "C++ kernels of derain_kernels (registered as torch.ops.derain.*).",
                          -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
