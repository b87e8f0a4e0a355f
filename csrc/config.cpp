// Storage of the kernel settings (config.h) and their Python accessors, used by
// derain_kernels/config.py through derain_kernels._C.
#include "config.h"

#include <Python.h>

#include <cstring>

namespace derain {
namespace config {

Settings& settings() {
  static Settings s;
  return s;
}

}  // namespace config
}  // namespace derain

namespace {

struct BoolField {
  const char* name;
  std::atomic<bool> derain::config::Settings::*member;
};

const BoolField kBoolFields[] = {
    {"conv_winograd", &derain::config::Settings::conv_winograd},
    {"conv_pairs", &derain::config::Settings::conv_pairs},
    {"wgrad_winograd", &derain::config::Settings::wgrad_winograd},
    {"wgrad_pairs", &derain::config::Settings::wgrad_pairs},
    {"fused_epilogues", &derain::config::Settings::fused_epilogues},
    {"median_tracking", &derain::config::Settings::median_tracking},
    {"gpu_tiles", &derain::config::Settings::gpu_tiles},
};

}  // namespace

// get_config() -> dict of every setting
extern "C" PyObject* derain_get_config(PyObject*, PyObject*) {
  auto& s = derain::config::settings();
  PyObject* d = PyDict_New();
  if (!d) return nullptr;
  for (const auto& f : kBoolFields) {
    PyObject* v = PyBool_FromLong((s.*(f.member)).load());
    if (!v || PyDict_SetItemString(d, f.name, v) < 0) {
      Py_XDECREF(v);
      Py_DECREF(d);
      return nullptr;
    }
    Py_DECREF(v);
  }
  PyObject* mb = PyLong_FromLongLong(s.output_cache_mb.load());
  if (!mb || PyDict_SetItemString(d, "output_cache_mb", mb) < 0) {
    Py_XDECREF(mb);
    Py_DECREF(d);
    return nullptr;
  }
  Py_DECREF(mb);
  return d;
}

// set_config(name, value): value checked by derain_kernels/config.py; an unknown name is a KeyError
extern "C" PyObject* derain_set_config(PyObject*, PyObject* args) {
  const char* name = nullptr;
  PyObject* value = nullptr;
  if (!PyArg_ParseTuple(args, "sO", &name, &value)) return nullptr;
  auto& s = derain::config::settings();
  for (const auto& f : kBoolFields) {
    if (std::strcmp(name, f.name) == 0) {
      const int on = PyObject_IsTrue(value);
      if (on < 0) return nullptr;
      (s.*(f.member)).store(on != 0);
      Py_RETURN_NONE;
    }
  }
  if (std::strcmp(name, "output_cache_mb") == 0) {
    const long long mb = PyLong_AsLongLong(value);
    if (mb == -1 && PyErr_Occurred()) return nullptr;
    s.output_cache_mb.store(mb);
    Py_RETURN_NONE;
  }
  PyErr_Format(PyExc_KeyError, "derain: unknown kernel setting '%s'", name);
  return nullptr;
}
