// Python entry point of derain_kernels._C.
//
// The operators themselves are registered with the dispatcher by static
// initialisers (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) in csrc/ops;
// importing this module is what runs them. The module only exposes
// build_info(): how the kernels were compiled, empty_output_cache(), and the kernel
// settings behind derain_kernels.config (get_config / set_config).
#include <Python.h>

#include "ops/cpu/output_cache.h"

extern "C" PyObject* derain_get_config(PyObject*, PyObject*);  // config.cpp
extern "C" PyObject* derain_set_config(PyObject*, PyObject*);

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
    {"get_config", derain_get_config, METH_NOARGS,
     "get_config() -> dict: the kernel settings (csrc/config.h); use derain_kernels.config."},
    {"set_config", derain_set_config, METH_VARARGS,
     "set_config(name, value): set one kernel setting (csrc/config.h); use derain_kernels.config."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "C++ kernels of derain_kernels (registered as torch.ops.derain.*).",
                          -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
