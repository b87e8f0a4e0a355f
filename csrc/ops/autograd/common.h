// Helpers of the autograd kernels registered from C++ (docs/design/call-cost.md).
//
// An autograd kernel is registered for the Autograd alias key, so one kernel serves every device:
// it calls the op's device kernel through the dispatcher below the autograd keys
// (AutoDispatchBelowADInplaceOrView) and records a torch::autograd::Function node whose backward
// calls the op's backward op through the dispatcher (so that op's own autograd, registered from
// Python, still gives double backward where it exists).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

namespace derain {
namespace autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The typed handle of derain::<name>, looked up once per call site.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// True when the call must record a graph: grad mode on and some input requires grad.
inline bool needs_graph(std::initializer_list<const at::Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : inputs)
    if (t->requires_grad()) return true;
  return false;
}

// A gradient at the broadcast shape, summed back to an input's shape.
inline at::Tensor sum_to_shape(const at::Tensor& g, const at::Tensor& input) {
  return g.sizes().equals(input.sizes()) ? g : at::sum_to(g, input.sizes());
}

}  // namespace autograd
}  // namespace derain
